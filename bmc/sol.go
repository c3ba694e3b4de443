package bmc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Serial-over-LAN through `ipmitool sol activate`. bmclib has no SOL, and
// writing an RMCP+ SOL client of our own would mean re-implementing the
// session setup, keep-alives and retransmits ipmitool already does right
// against every BMC it has met. ipmitool runs without a terminal too, but
// then its stdout is block-buffered: the console would arrive in 4 KiB
// lumps, or at exit. So it gets a pseudo-terminal in raw mode (no echo, no
// line editing, no CR/LF translation) as stdin and stdout, the serial
// port's two directions; its stderr stays apart, for errors.

// ErrNoConsole means the BMC offers no serial console metalhall can use:
// Redfish has no standard serial stream (vendors expose SSH or web
// consoles of their own), so only IPMI Serial-over-LAN is spoken.
var ErrNoConsole = errors.New("this BMC offers no serial console metalhall can use: Serial-over-LAN needs IPMI, and Redfish has no standard serial stream")

// solBanner is what ipmitool prints on stdout once the payload is active.
const solBanner = "[SOL Session operational"

// SOL is one active Serial-over-LAN session: Read returns what the
// machine writes on its serial port, Write sends keystrokes to it. It is
// safe to Read and Write from two goroutines; Close ends the session and
// may be called more than once, from any goroutine.
type SOL struct {
	cmd    *exec.Cmd
	pty    *os.File // the terminal's master side: ipmitool's stdin and stdout
	out    *bufio.Reader
	stderr *capBuffer
	done   chan struct{} // closed when ipmitool has exited
	waited error

	wmu       sync.Mutex
	lineStart bool // the next byte written starts a line (ipmitool's escape position)

	closeOnce sync.Once
	clear     func() // deactivates the payload on the BMC after Close
}

// OpenSOL activates Serial-over-LAN on an IPMI BMC. A payload left active
// by an earlier session (a crashed service, another tool) is deactivated
// first: the service is the one owner of its machines' consoles. The setup
// is bounded by ctx and the controller's OpTimeout; the session then lives
// until Close, or until the BMC or ipmitool ends it (Read returns io.EOF).
// A Redfish endpoint gets a *Error of kind KindUnsupported wrapping
// ErrNoConsole.
func (c *Controller) OpenSOL(ctx context.Context, ep Endpoint) (*SOL, error) {
	fail := func(kind ErrorKind, err error) (*SOL, error) {
		return nil, &Error{Kind: kind, Address: ep.Address, Protocol: ep.Protocol, Op: "sol", Err: err}
	}
	if ep.Protocol != IPMI {
		return fail(KindUnsupported, ErrNoConsole)
	}
	if c.ipmiErr != nil {
		return fail(KindUnsupported, c.ipmiErr)
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.OpTimeout)
	defer cancel()
	// Setting up is a BMC operation like any other: one at a time per BMC.
	// The session itself does not hold the lock (SOL is its own RMCP+
	// session; power and boot commands go on beside it).
	unlock, err := c.locks.lock(ctx, ep.lockKey())
	if err != nil {
		return fail(KindTimeout, fmt.Errorf("waiting for the BMC's other operations: %w", err))
	}
	defer unlock()
	if err := c.ipmiReachable(ctx, ep); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Op = "sol"
		}
		return nil, err
	}
	c.solDeactivate(ctx, ep)
	var last error
	for _, suite := range []string{"3", "17"} {
		s, err := c.solActivate(ctx, ep, suite)
		if err == nil {
			return s, nil
		}
		last = err
		if ctx.Err() != nil {
			break
		}
	}
	if ctx.Err() != nil {
		return fail(KindTimeout, last)
	}
	kind := kindOf(IPMI, last, nil)
	if kind == KindProtocol {
		kind = c.probeIPMI(ctx, ep, KindProtocol)
	}
	return fail(kind, last)
}

// solDeactivate clears a payload another session left active. ipmitool
// exits 1 with "already de-activated" when there is none: not an error.
func (c *Controller) solDeactivate(ctx context.Context, ep Endpoint) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, _ = c.ipmitoolRun(dctx, ep, nil, "sol", "deactivate")
}

func (c *Controller) solActivate(ctx context.Context, ep Endpoint, suite string) (*SOL, error) {
	_, host, port, err := ep.hostPort()
	if err != nil {
		return nil, err
	}
	// Not CommandContext: the session outlives the setup's context.
	cmd := exec.Command(c.ipmitool, "-I", "lanplus", "-H", host, "-p", port, "-U", ep.Username, "-E",
		"-C", suite, "-N", "2", "-R", "2", "sol", "activate")
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + ep.Password}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	master, slave, err := openRawPTY()
	if err != nil {
		return nil, fmt.Errorf("a terminal for ipmitool: %w", err)
	}
	s := &SOL{cmd: cmd, pty: master, out: bufio.NewReaderSize(master, 32<<10), stderr: &capBuffer{max: 8 << 10},
		done: make(chan struct{}), lineStart: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, s.stderr
	err = cmd.Start()
	slave.Close() // ipmitool has its own copy; the master reads EIO once it exits
	if err != nil {
		master.Close()
		return nil, fmt.Errorf("starting ipmitool: %w", err)
	}
	go func() {
		s.waited = cmd.Wait()
		close(s.done)
	}()
	// Wait for the banner; what comes before it ("Info: ...") is kept for
	// the error.
	type result struct {
		pre string
		err error
	}
	ready := make(chan result, 1)
	go func() {
		var pre strings.Builder
		for {
			line, err := s.out.ReadString('\n')
			if strings.Contains(line, solBanner) {
				ready <- result{}
				return
			}
			if pre.Len() < 4<<10 {
				pre.WriteString(line)
			}
			if err != nil {
				ready <- result{pre: pre.String(), err: err}
				return
			}
		}
	}()
	select {
	case r := <-ready:
		if r.err == nil {
			s.clear = func() {
				cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				c.solDeactivate(cctx, ep)
			}
			return s, nil
		}
		s.kill()
		<-s.done
		master.Close()
		msg := strings.TrimSpace(r.pre + " " + s.stderrText())
		return nil, fmt.Errorf("ipmitool sol activate (cipher suite %s): %v: %s", suite, s.waited, msg)
	case <-ctx.Done():
		s.kill()
		<-s.done
		master.Close()
		return nil, fmt.Errorf("ipmitool sol activate: no session within the deadline: %w (%s)", ctx.Err(), s.stderrText())
	}
}

// stderrText is what ipmitool said on stderr, without complaints about
// the terminal.
func (s *SOL) stderrText() string {
	var keep []string
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "tcgetattr") && !strings.HasPrefix(l, "tcsetattr") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "; ")
}

// Read reads what the machine wrote on its serial port. It returns io.EOF
// when the session has ended.
func (s *SOL) Read(p []byte) (int, error) {
	n, err := s.out.Read(p)
	if err != nil && n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// Write sends bytes to the machine's serial port, exactly as given:
// ipmitool's escape character (~ at the start of a line) is doubled so
// that it reaches the machine instead of ending or suspending ipmitool.
func (s *SOL) Write(p []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	buf := make([]byte, 0, len(p)+4)
	for _, b := range p {
		if b == '~' && s.lineStart {
			buf = append(buf, '~')
		}
		buf = append(buf, b)
		s.lineStart = b == '\r' || b == '\n'
	}
	if _, err := s.pty.Write(buf); err != nil {
		return 0, fmt.Errorf("serial console: %w", err)
	}
	return len(p), nil
}

// Done is closed when the session has ended.
func (s *SOL) Done() <-chan struct{} { return s.done }

// Err says why the session ended, once Done is closed: nil after Close.
func (s *SOL) Err() error {
	select {
	case <-s.done:
	default:
		return nil
	}
	if s.waited == nil {
		return nil
	}
	if t := s.stderrText(); t != "" {
		return fmt.Errorf("ipmitool: %v: %s", s.waited, t)
	}
	return fmt.Errorf("ipmitool: %v", s.waited)
}

// Close ends the session: ipmitool is stopped and the payload deactivated
// on the BMC, so that the next session finds it free.
func (s *SOL) Close() error {
	s.closeOnce.Do(func() {
		s.kill()
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
		}
		s.pty.Close()
		if s.clear != nil {
			s.clear()
		}
	})
	return nil
}

func (s *SOL) kill() {
	if s.cmd.Process != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	}
}

// openRawPTY opens a pseudo-terminal and puts it in raw mode before
// ipmitool starts, so that nothing written early is echoed or translated.
func openRawPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	var ierr error
	rc, err := m.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			if ierr = unix.IoctlSetPointerInt(int(fd), unix.TIOCSPTLCK, 0); ierr != nil {
				return
			}
			n, ierr = unix.IoctlGetInt(int(fd), unix.TIOCGPTN)
		})
	}
	if err = errors.Join(err, ierr); err != nil {
		m.Close()
		return nil, nil, err
	}
	sl, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	rc, err = sl.SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			var t *unix.Termios
			if t, ierr = unix.IoctlGetTermios(int(fd), unix.TCGETS); ierr != nil {
				return
			}
			// cfmakeraw(3)
			t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
			t.Oflag &^= unix.OPOST
			t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
			t.Cflag &^= unix.CSIZE | unix.PARENB
			t.Cflag |= unix.CS8
			t.Cc[unix.VMIN], t.Cc[unix.VTIME] = 1, 0
			ierr = unix.IoctlSetTermios(int(fd), unix.TCSETS, t)
		})
	}
	if err = errors.Join(err, ierr); err != nil {
		m.Close()
		sl.Close()
		return nil, nil, err
	}
	return m, sl, nil
}

// capBuffer keeps the first max bytes written to it.
type capBuffer struct {
	mu  sync.Mutex
	max int
	b   bytes.Buffer
}

func (c *capBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}
