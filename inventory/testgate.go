package inventory

import (
	"io"
	"os"
	"path/filepath"
)

// fifoGate holds the calling goroutine at a named point so that a crash test
// can kill the process exactly there. It acts only when
// $METALHALL_TEST_GATE_DIR holds the FIFO POINT.reached: it writes one line
// to that FIFO (the open blocks until the test reads), then waits until the
// test writes to POINT.release and closes it. The service uses it only when
// built with the metalhall_testgates tag (testgate_on.go), as the crash tests
// build it; the package's own tests pass it in Options.
func fifoGate(point string) {
	dir := os.Getenv("METALHALL_TEST_GATE_DIR")
	if dir == "" {
		return
	}
	reached := filepath.Join(dir, point+".reached")
	if _, err := os.Stat(reached); err != nil {
		return
	}
	if f, err := os.OpenFile(reached, os.O_WRONLY, 0); err == nil {
		io.WriteString(f, point+"\n")
		f.Close()
	}
	if f, err := os.Open(filepath.Join(dir, point+".release")); err == nil {
		io.Copy(io.Discard, f)
		f.Close()
	}
}
