package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// Client calls the API. The CLI is built on it; scripts in Go may use it
// too.
type Client struct {
	BaseURL string // e.g. http://127.0.0.1:8280
	Token   string
	HTTP    *http.Client
}

// NewClient returns a client with sane timeouts.
func NewClient(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimRight(baseURL, "/"), Token: token,
		HTTP: &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{
			Proxy:               nil, // never send inventory traffic through a proxy
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 64,
		}}}
}

// APIError is an error answer of the service.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Message }

// Unreachable means nothing answered at the client's URL.
type Unreachable struct {
	URL string
	Err error
}

func (e *Unreachable) Error() string {
	return fmt.Sprintf("no metalhall service answers at %s (%v): start one with 'metalhall serve', or point --server / METALHALL_SERVER at it", e.URL, rootCause(e.Err))
}
func (e *Unreachable) Unwrap() error { return e.Err }

func rootCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		return op.Err
	}
	return err
}

// Do sends a JSON request (in may be nil) and decodes a JSON answer into out
// (which may be nil). Call (typed.go) is the typed way: it takes the method,
// path and types from the route table. Do stays for callers that build
// their own paths (/metrics, tests of the routes themselves).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(data), "application/json"
	}
	return c.DoRaw(ctx, method, path, ct, body, out)
}

// DoRaw sends a body of any content type.
func (c *Client) DoRaw(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	resp, err := c.send(ctx, method, path, contentType, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	return nil
}

// Stream sends a request and returns the answer's body for the caller to
// read and close (backups, downloads).
func (c *Client) Stream(ctx context.Context, method, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, method, path, "", nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

func (c *Client) send(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return nil, err
	}
	if s, ok := body.(interface{ Size() int64 }); ok {
		req.ContentLength = s.Size() // an upload of known size is not chunked
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if _, ok := body.(streamBody); ok {
		req.Header.Set("Expect", "100-continue")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.Is(err, syscall.ECONNREFUSED) || (errors.As(err, &ue) && isDialError(ue.Err)) {
			return nil, &Unreachable{URL: c.BaseURL, Err: err}
		}
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var e Error
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e = Error{Message: fmt.Sprintf("%s %s: %s", method, path, resp.Status), Code: "http"}
		}
		return nil, &APIError{Status: resp.StatusCode, Code: e.Code, Message: e.Message}
	}
	return resp, nil
}

func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// streamBody is a request body sent while the answer is read (see
// Upload.Stream).
type streamBody struct{ io.Reader }

// SizedReader is an upload body whose length is known in advance.
type SizedReader struct {
	io.Reader
	N int64
}

// Size is the body's length.
func (r SizedReader) Size() int64 { return r.N }

// PathEscape escapes one path segment (names are validated, but a user may
// type anything).
func PathEscape(s string) string { return url.PathEscape(s) }
