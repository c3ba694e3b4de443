package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/metalhall/metalhall/agent/wire"
)

// Params are the agent's settings from the kernel command line.
type Params struct {
	URL   string // metalhall.url
	Token string // metalhall.token
	MAC   string // metalhall.mac, lower case; may be empty
	// Timeout is metalhall.timeout: the wait for the network and for a
	// task; 0 means the defaults.
	Timeout time.Duration
}

// ParseCmdline reads the metalhall.* parameters from a kernel command
// line (the contents of /proc/cmdline). iPXE passes ${net0/mac} with
// colons; BOOTIF-style "01-aa-bb-..." is accepted too.
func ParseCmdline(cmdline string) Params {
	var p Params
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		v = strings.Trim(v, `"`)
		switch k {
		case wire.ParamURL:
			p.URL = strings.TrimRight(v, "/")
		case wire.ParamToken:
			p.Token = v
		case wire.ParamMAC:
			p.MAC = normaliseMAC(v)
		case wire.ParamTimeout:
			if n, err := strconv.Atoi(v); err == nil && n > 0 {
				p.Timeout = time.Duration(n) * time.Second
			}
		}
	}
	return p
}

func normaliseMAC(s string) string {
	s = strings.ToLower(s)
	if strings.HasPrefix(s, "01-") && len(s) == 20 { // pxelinux BOOTIF
		s = s[3:]
	}
	return strings.ReplaceAll(s, "-", ":")
}

// Client talks to the service's agent endpoints. It is safe for
// concurrent use (progress is posted from its own goroutine).
type Client struct {
	BaseURL string // metalhall.url
	Token   string
	HTTP    *http.Client // default: 30 s timeout per request

	once sync.Once
	def  *http.Client
}

// ErrUnauthorized means the service refused the token: retrying is
// pointless (the job was cancelled or the token expired).
var ErrUnauthorized = errors.New("the service refused the agent token")

func (c *Client) httpClient() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	// One client for the agent's life, so connections are reused rather
	// than a new idle one left open per request.
	c.once.Do(func() {
		c.def = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			Proxy: nil, IdleConnTimeout: 30 * time.Second, MaxIdleConnsPerHost: 1,
		}}
	})
	return c.def
}

func (c *Client) endpoint(name string) string {
	return strings.TrimRight(c.BaseURL, "/") + wire.PathPrefix + name
}

func (c *Client) do(ctx context.Context, method, name string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint(name), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, name, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		var e wire.Error
		msg := strings.TrimSpace(string(b))
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		err := fmt.Errorf("%s %s: HTTP %d: %s", method, c.endpoint(name), resp.StatusCode, msg)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			err = fmt.Errorf("%w: %w", ErrUnauthorized, err)
		}
		return err
	}
	if out != nil {
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			return fmt.Errorf("%s %s: bad answer: %w", method, name, err)
		}
	}
	return nil
}

// Task fetches the agent's task.
func (c *Client) Task(ctx context.Context) (wire.Task, error) {
	var t wire.Task
	err := c.do(ctx, http.MethodGet, wire.EndpointTask, nil, &t)
	return t, err
}

// Inspection posts the inventory.
func (c *Client) Inspection(ctx context.Context, inv wire.Inventory) error {
	return c.do(ctx, http.MethodPost, wire.EndpointInspection, inv, nil)
}

// Progress posts a progress report.
func (c *Client) Progress(ctx context.Context, p wire.Progress) error {
	return c.do(ctx, http.MethodPost, wire.EndpointProgress, p, nil)
}

// Done posts the final result.
func (c *Client) Done(ctx context.Context, d wire.Done) error {
	return c.do(ctx, http.MethodPost, wire.EndpointDone, d, nil)
}

// retry calls fn until it succeeds, ctx ends, or it fails with
// ErrUnauthorized. The wait doubles from 1 s up to 30 s: after a power
// restoration thousands of agents call home at once.
func retry(ctx context.Context, what string, log func(string, ...any), fn func(context.Context) error) error {
	wait := time.Second
	for {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := fn(cctx)
		cancel()
		if err == nil || errors.Is(err, ErrUnauthorized) {
			return err
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: giving up: %w", what, err)
		}
		log("retrying", "what", what, "err", err, "wait", wait)
		// Up to 50% jitter spreads a crowd of agents out.
		t := time.NewTimer(wait + rand.N(wait/2))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: giving up: %w", what, err)
		case <-t.C:
		}
		wait = min(2*wait, 30*time.Second)
	}
}
