package netns

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// maxForwarded bounds the connections Forward carries at once.
const maxForwarded = 64

// Forward carries every connection accepted on ln (a listener of the
// calling process's namespace, e.g. the host's loopback) to addr inside
// n, until ctx ends or ln is closed; then it closes ln and waits for the
// connections in flight. The sockets to addr are opened inside n, one
// short-lived thread each (Run), so nothing else leaves the host's
// namespace. Beyond maxForwarded connections at once, new ones wait.
func (n *Namespace) Forward(ctx context.Context, ln net.Listener, addr string) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, maxForwarded)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			ln.Close()
			return nil
		}
		in, err := ln.Accept()
		if err != nil {
			<-slots
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			defer in.Close()
			var out net.Conn
			if err := n.Run(func() (err error) {
				d := net.Dialer{Timeout: 10 * time.Second}
				out, err = d.DialContext(ctx, "tcp", addr)
				return err
			}); err != nil {
				return
			}
			defer out.Close()
			// Closing both ends when ctx ends unblocks the copies.
			stopConn := context.AfterFunc(ctx, func() { in.Close(); out.Close() })
			defer stopConn()
			done := make(chan struct{})
			go func() {
				io.Copy(out, in)
				if tc, ok := out.(*net.TCPConn); ok {
					tc.CloseWrite()
				}
				close(done)
			}()
			io.Copy(in, out)
			if tc, ok := in.(*net.TCPConn); ok {
				tc.CloseWrite()
			}
			<-done
		}()
	}
}
