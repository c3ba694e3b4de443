//go:build metalhall_testgates

package inventory

// defaultGate is the FIFO gate in binaries built for crash tests.
func defaultGate(point string) { fifoGate(point) }
