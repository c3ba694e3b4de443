package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/metalhall/metalhall/bmc"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// Console attaches operators to machines' serial consoles. The
// provisioner's BMC adapter implements it; a BMC given to the API without
// it makes the console route answer 503.
type Console interface {
	AttachConsole(ctx context.Context, m *inventory.Machine, holder string, force bool) (io.ReadWriteCloser, error)
}

// DefaultConsoleIdle ends a console session when nothing went either way
// for this long, so a forgotten terminal does not hold the machine's only
// console.
const DefaultConsoleIdle = 15 * time.Minute

// ConsoleLog is a job's serial console output, as the service captured it
// over the machine's BMC while the job ran.
type ConsoleLog struct {
	Machine string `json:"machine"`
	Job     string `json:"job"`
	Kind    string `json:"kind"`
	// Output is the last bytes of the console (at most 256 KiB), as text.
	Output string `json:"output"`
	// Captured counts every byte read; Truncated says the start was cut.
	Captured  int64     `json:"captured"`
	Truncated bool      `json:"truncated"`
	UpdatedAt time.Time `json:"updated_at"`
}

func (s *Server) consoleRoutes() []route {
	return []route{
		{method: "POST", pattern: "/api/v1/machines/{name}/console", action: "machine.console",
			summary: "Attach to a machine's serial console (IPMI Serial-over-LAN): the request body is the keyboard, the response body the screen, both streamed (force=true: staff take over a session open elsewhere)",
			roles:   everyone, scope: scopeMachine, body: "console", raw: true, audited: true, handle: s.machineConsole},
		{method: "GET", pattern: "/api/v1/machines/{name}/console-log", action: "machine.console-log",
			summary: "What a machine printed on its serial console during a job (job=ID; default its newest job with a log)",
			roles:   everyone, scope: scopeMachine, audited: true, reply: ConsoleLog{}, handle: s.machineConsoleLog},
	}
}

var errNoConsoleService = &httpError{http.StatusServiceUnavailable, "unavailable",
	"this service cannot open serial consoles: its BMC control is not running"}

// noConsole says plainly that a machine has no console metalhall can use.
func noConsole(m *inventory.Machine) error {
	return &httpError{http.StatusConflict, "no_console", fmt.Sprintf(
		"machine %q has a %s BMC: metalhall reaches serial consoles through IPMI Serial-over-LAN only (Redfish has no standard serial stream); use the BMC's own console",
		m.Name, m.BMC.Protocol)}
}

func (s *Server) machineConsole(c *call) (int, any, error) {
	con, ok := s.bmc.(Console)
	if !ok {
		return 0, nil, errNoConsoleService
	}
	force := false
	if v := c.r.URL.Query().Get("force"); v != "" {
		var err error
		if force, err = strconv.ParseBool(v); err != nil {
			return 0, nil, &inventory.ValidationError{Field: "force", Msg: fmt.Sprintf("%q is not true or false", v)}
		}
	}
	if force && c.p.Role == inventory.RoleTenant {
		return 0, nil, forbidden("only staff may take over a console session open elsewhere")
	}
	m, err := s.inv.Machine(c.ctx(), c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	if m.BMC.Protocol != inventory.ProtocolIPMI {
		return 0, nil, noConsole(m)
	}
	sess, err := con.AttachConsole(c.ctx(), m, c.p.TokenID, force)
	if err != nil {
		return 0, nil, consoleError(m, err)
	}
	defer sess.Close()

	// The start is in the audit trail at once; the end (the wrapper's
	// record, with this detail) when the session is over.
	start := time.Now()
	startDetail := "session started"
	if force {
		startDetail += " (taking over any other session)"
	}
	s.auditEvent(c, "machine.console", "started", startDetail)

	rc := http.NewResponseController(c.w)
	// Read the keyboard while writing the screen: net/http's HTTP/1
	// server otherwise drains the request body before the first write.
	if err := rc.EnableFullDuplex(); err != nil {
		s.log.Debug("console: full duplex", "err", err)
	}
	// A client that waits for "100 Continue" before sending the keyboard
	// (Expect: 100-continue) would drop it on seeing the 200 first: say
	// 100 now (on the unwrapped writer: the wrapper records the final
	// status).
	if strings.EqualFold(c.r.Header.Get("Expect"), "100-continue") {
		if u, ok := c.w.(interface{ Unwrap() http.ResponseWriter }); ok {
			u.Unwrap().WriteHeader(http.StatusContinue)
		}
	}
	c.w.Header().Set("Content-Type", "application/octet-stream")
	c.w.Header().Set("Cache-Control", "no-store")
	c.w.WriteHeader(http.StatusOK)
	_ = rc.Flush()

	ctx, cancel := context.WithCancelCause(c.ctx())
	defer cancel(nil)
	var in, out atomic.Int64
	activity := make(chan struct{}, 1)
	poke := func() {
		select {
		case activity <- struct{}{}:
		default:
		}
	}
	errLeft := errors.New("the operator left")
	inDone, outDone := make(chan struct{}), make(chan struct{})
	go func() { // the keyboard
		defer close(inDone)
		buf := make([]byte, 4096)
		for {
			n, err := c.r.Body.Read(buf)
			if n > 0 {
				if _, werr := sess.Write(buf[:n]); werr != nil {
					cancel(werr)
					return
				}
				in.Add(int64(n))
				poke()
			}
			if err != nil {
				cancel(errLeft)
				return
			}
		}
	}()
	go func() { // the screen
		defer close(outDone)
		buf := make([]byte, 32<<10)
		for {
			n, err := sess.Read(buf)
			if n > 0 {
				if _, werr := c.w.Write(buf[:n]); werr != nil {
					cancel(errLeft)
					return
				}
				_ = rc.Flush()
				out.Add(int64(n))
				poke()
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = errLeft
				}
				cancel(err)
				return
			}
		}
	}()
	idle := s.consoleIdle
	timer := time.NewTimer(idle)
	defer timer.Stop()
wait:
	for {
		select {
		case <-ctx.Done():
			break wait
		case <-activity:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(idle)
		case <-timer.C:
			cancel(fmt.Errorf("idle for %s", idle))
		}
	}
	reason := context.Cause(ctx)
	// Let go of the session and of both directions before returning: the
	// handler may not touch the request or the response afterwards. The
	// screen first, so the operator can be told why; then the keyboard (a
	// read deadline, which also ends the request's context).
	sess.Close()
	_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	<-outDone
	if !errors.Is(reason, errLeft) && c.r.Context().Err() == nil {
		fmt.Fprintf(c.w, "\r\n[metalhall: console session ended: %v]\r\n", reason)
		_ = rc.Flush()
	}
	_ = rc.SetReadDeadline(time.Now())
	<-inDone
	c.detail = fmt.Sprintf("session ended after %s (%v): %d bytes from the machine, %d typed",
		time.Since(start).Round(time.Second), reason, out.Load(), in.Load())
	return http.StatusOK, nil, nil
}

// consoleError turns what attaching said into an answer.
func consoleError(m *inventory.Machine, err error) error {
	var busy *provisioner.ConsoleBusyError
	var be *bmc.Error
	switch {
	case errors.As(err, &busy):
		return &httpError{http.StatusConflict, "console_busy",
			err.Error() + ": wait until it ends, or (staff) take it over with 'metalhall machine console --force " + m.Name + "'"}
	case errors.Is(err, provisioner.ErrNoConsole):
		return noConsole(m)
	case errors.Is(err, provisioner.ErrTooManyConsoles):
		return &httpError{http.StatusServiceUnavailable, "busy", err.Error()}
	case errors.As(err, &be):
		return &httpError{http.StatusBadGateway, "bmc_error", err.Error()}
	}
	return err
}

// auditEvent records an event about the call's subject outside the
// wrapper's one record per request.
func (s *Server) auditEvent(c *call, action, outcome, detail string) {
	ev := inventory.Event{Actor: c.p.TokenID, Role: string(c.p.Role), Tenant: c.p.Tenant, Subject: safeSubject(c.subject),
		Action: action, Outcome: outcome, Detail: detail}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.ctx()), 5*time.Second)
	defer cancel()
	if _, err := s.inv.AppendEvent(ctx, ev); err != nil {
		s.log.Error("audit event lost", "action", action, "subject", ev.Subject, "err", err)
	}
}

func (s *Server) machineConsoleLog(c *call) (int, any, error) {
	name := c.r.PathValue("name")
	m, err := s.inv.Machine(c.ctx(), name)
	if err != nil {
		return 0, nil, err
	}
	visible := func(id string) bool {
		j, err := s.inv.Job(c.ctx(), id)
		return err == nil && j.Machine == m.Name && c.jobVisible(j, m)
	}
	id := c.r.URL.Query().Get("job")
	if id != "" {
		// Another tenancy's job is as absent as one that never was.
		if !visible(id) {
			return 0, nil, &inventory.NotFoundError{Kind: "job of machine " + m.Name, Name: id}
		}
	} else {
		ids, err := s.inv.ConsoleLogJobs(c.ctx(), m.Name)
		if err != nil {
			return 0, nil, err
		}
		for i := len(ids) - 1; i >= 0 && id == ""; i-- {
			if visible(ids[i]) {
				id = ids[i]
			}
		}
		if id == "" {
			if m.BMC.Protocol != inventory.ProtocolIPMI {
				return 0, nil, noConsole(m)
			}
			return 0, nil, &inventory.NotFoundError{Kind: "console log of machine", Name: m.Name}
		}
	}
	l, err := s.inv.ConsoleLog(c.ctx(), m.Name, id)
	if errors.Is(err, inventory.ErrNotFound) && m.BMC.Protocol != inventory.ProtocolIPMI {
		return 0, nil, noConsole(m)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, ConsoleLog{Machine: l.Machine, Job: l.Job, Kind: string(l.Kind), Output: string(l.Data),
		Captured: l.Captured, Truncated: l.Truncated, UpdatedAt: l.UpdatedAt}, nil
}
