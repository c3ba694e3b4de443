package bmc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/ipmisim"
)

func startSOLSim(t *testing.T, cfg ipmisim.Config) (*ipmisim.Sim, Endpoint, *serialPort) {
	t.Helper()
	sp := &serialPort{ipmisim.NewSerialPort(t)}
	cfg.SOL = sp.Device()
	s, ep := startSim(t, cfg)
	return s, ep, sp
}

type serialPort struct{ *ipmisim.SerialPort }

// conn waits for ipmi_sim to connect to the machine's serial port.
func (sp *serialPort) conn(t *testing.T, ctx context.Context) net.Conn {
	t.Helper()
	c, err := sp.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readUntil reads r until what it read contains want.
func readUntil(t *testing.T, ctx context.Context, r io.Reader, want string) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		buf := make([]byte, 4096)
		for !strings.Contains(b.String(), want) {
			n, err := r.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				break
			}
		}
		got <- b.String()
	}()
	select {
	case s := <-got:
		if !strings.Contains(s, want) {
			t.Fatalf("read %q, never %q", s, want)
		}
		return s
	case <-ctx.Done():
		t.Fatalf("%q never came: %v", want, ctx.Err())
		return ""
	}
}

func TestSOLCarriesTheSerialPortBothWays(t *testing.T) {
	_, ep, sp := startSOLSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)

	sol, err := c.OpenSOL(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer sol.Close()
	machine := sp.conn(t, ctx)

	// The machine prints; the session reads it.
	if _, err := machine.Write([]byte("metalhall-agent: hello from the serial port\r\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ctx, sol, "hello from the serial port")

	// The operator types, escape characters included: ipmitool's "~." at
	// the start of a line reaches the machine instead of ending ipmitool.
	typed := "~.\r\nls /\r\n~?"
	if _, err := sol.Write([]byte(typed)); err != nil {
		t.Fatal(err)
	}
	got := readUntil(t, ctx, machine, "~?")
	if got != typed {
		t.Fatalf("the machine read %q, want exactly %q", got, typed)
	}
	select {
	case <-sol.Done():
		t.Fatalf("the session ended on the operator's ~.: %v", sol.Err())
	default:
	}
}

func TestSOLTakesOverAStaleSession(t *testing.T) {
	_, ep, sp := startSOLSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 90*time.Second)

	// The first session is never closed, like one a crashed service left.
	first, err := c.OpenSOL(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	machine := sp.conn(t, ctx)

	second, err := c.OpenSOL(ctx, ep)
	if err != nil {
		t.Fatalf("a second session with the first still active: %v", err)
	}
	defer second.Close()
	if _, err := machine.Write([]byte("after the takeover\r\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ctx, second, "after the takeover")

	// Closed, the payload is free again at once.
	second.Close()
	third, err := c.OpenSOL(ctx, ep)
	if err != nil {
		t.Fatalf("a session after Close: %v", err)
	}
	defer third.Close()
	if _, err := machine.Write([]byte("third\r\n")); err != nil {
		t.Fatal(err)
	}
	readUntil(t, ctx, third, "third")
}

func TestSOLWithAWrongPasswordIsACredentialsError(t *testing.T) {
	_, ep, _ := startSOLSim(t, ipmisim.Config{})
	c := testController(t, Config{})
	ctx := ctxT(t, 60*time.Second)
	ep.Password = "not-the-password"
	_, err := c.OpenSOL(ctx, ep)
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindAuth {
		t.Fatalf("OpenSOL with a wrong password = %v; want a KindAuth *Error", err)
	}
}

func TestSOLOnRedfishSaysThereIsNoConsole(t *testing.T) {
	c := testController(t, Config{})
	_, err := c.OpenSOL(context.Background(), Endpoint{Address: "http://127.0.0.1:1", Protocol: Redfish, Username: "u", Password: "p"})
	var e *Error
	if !errors.As(err, &e) || e.Kind != KindUnsupported || !errors.Is(err, ErrNoConsole) {
		t.Fatalf("OpenSOL on Redfish = %v; want KindUnsupported wrapping ErrNoConsole", err)
	}
}
