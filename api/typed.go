package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"reflect"
	"slices"
	"strings"
)

// The typed client: callers name an operation (Ops), the client takes its
// method and pattern from the route table that serves it, fills the
// pattern's {name}s, encodes the body and decodes the reply into the
// route's reply type. No caller spells a path, so a route that moves moves
// for its clients too.

// NoBody is the body of an operation that takes none.
type NoBody struct{}

// NoReply is the reply of an operation that answers with no body.
type NoReply struct{}

// Upload is a body that is not JSON: an image, a rack manifest.
type Upload struct {
	ContentType string
	Body        io.Reader // a SizedReader is sent with its length
	// Stream marks a body written while the answer is read (a console's
	// keyboard). It is sent with "Expect: 100-continue", so that a
	// refusal comes at once instead of after the service waited to drain
	// a body that is still being typed.
	Stream bool
}

// Download is the reply of an operation that streams its own body (a
// backup): the caller reads and closes it.
type Download = io.ReadCloser

// Op is one route of the table, by its action, with the Go types of its
// body and reply. Get one from Ops.
type Op[In, Out any] struct {
	action string
	query  url.Values
}

func op[In, Out any](action string) Op[In, Out] { return Op[In, Out]{action: action} }

// Action is the route's action, as the audit trail and OpenAPI name it.
func (o Op[In, Out]) Action() string { return o.action }

// Query returns the operation with query values (filters, wait=), which
// the route table does not type.
func (o Op[In, Out]) Query(q url.Values) Op[In, Out] {
	o.query = q
	return o
}

// Call sends op. path fills the pattern's {name}s in their order (a
// machine's name, a hall's name and a phase number); in is the body
// (NoBody for none). Errors are those of Do: *APIError for an answer of
// the service, *Unreachable when nothing answers.
func Call[In, Out any](ctx context.Context, c *Client, op Op[In, Out], in In, path ...string) (Out, error) {
	var out Out
	rt, err := op.route()
	if err != nil {
		return out, err
	}
	p, err := fillPattern(rt, path)
	if err != nil {
		return out, err
	}
	if len(op.query) > 0 {
		p += "?" + op.query.Encode()
	}
	if d, ok := any(&out).(*Download); ok {
		// A streamed answer may have a streamed body too (a console), or
		// a JSON one (a backup's options).
		var body io.Reader
		ct := ""
		switch u := any(in).(type) {
		case NoBody:
		case Upload:
			body, ct = u.Body, u.ContentType
			if u.Stream {
				body = streamBody{u.Body}
			}
		default:
			b, err := json.Marshal(in)
			if err != nil {
				return out, err
			}
			body, ct = bytes.NewReader(b), "application/json"
		}
		resp, err := c.send(ctx, rt.method, p, ct, body)
		if err != nil {
			return out, err
		}
		*d = resp.Body
		return out, nil
	}
	var dst any = &out
	if _, ok := dst.(*NoReply); ok {
		dst = nil
	}
	switch b := any(in).(type) {
	case NoBody:
		err = c.DoRaw(ctx, rt.method, p, "", nil, dst)
	case Upload:
		err = c.DoRaw(ctx, rt.method, p, b.ContentType, b.Body, dst)
	default:
		err = c.Do(ctx, rt.method, p, in, dst)
	}
	return out, err
}

// route finds op's route and checks its types against it. A mismatch is a
// programming error that TestOperationsMatchTheRouteTable catches; it is
// still refused here rather than sent.
func (o Op[In, Out]) route() (route, error) {
	rts := clientRoutes()
	i := slices.IndexFunc(rts, func(rt route) bool { return rt.action == o.action })
	if i < 0 {
		return route{}, fmt.Errorf("api client: no route has the action %q", o.action)
	}
	rt := rts[i]
	in, out := reflect.TypeFor[In](), reflect.TypeFor[Out]()
	if want := bodyType(rt); in != want {
		return route{}, fmt.Errorf("api client: %s takes a %v body, not %v", o.action, want, in)
	}
	if want := replyType(rt); out != want && !slices.ContainsFunc(rt.replies, func(r any) bool { return reflect.TypeOf(r) == out }) {
		return route{}, fmt.Errorf("api client: %s answers %v, not %v", o.action, want, out)
	}
	return rt, nil
}

// check is route() for the test, which holds operations of any type.
func (o Op[In, Out]) check() error {
	_, err := o.route()
	return err
}

// bodyType is the Go type a client sends for rt's body.
func bodyType(rt route) reflect.Type {
	switch b := rt.body.(type) {
	case nil:
		return reflect.TypeFor[NoBody]()
	case string: // "image", "manifest": not JSON
		return reflect.TypeFor[Upload]()
	default:
		return reflect.TypeOf(b)
	}
}

// replyType is the Go type a client decodes rt's answer into.
func replyType(rt route) reflect.Type {
	switch {
	case rt.raw:
		return reflect.TypeFor[Download]()
	case rt.reply == nil:
		return reflect.TypeFor[NoReply]()
	}
	return reflect.TypeOf(rt.reply)
}

// fillPattern puts the path values into rt's pattern, each escaped as one
// segment (names are validated, but a user may type anything).
func fillPattern(rt route, values []string) (string, error) {
	names := pathParam.FindAllStringSubmatch(rt.pattern, -1)
	if len(names) != len(values) {
		want := make([]string, len(names))
		for i, n := range names {
			want[i] = n[1]
		}
		return "", fmt.Errorf("api client: %s %s takes %d path values (%s), not %d",
			rt.action, rt.pattern, len(names), strings.Join(want, ", "), len(values))
	}
	i := 0
	return pathParam.ReplaceAllStringFunc(rt.pattern, func(string) string {
		v := url.PathEscape(values[i])
		i++
		return v
	}), nil
}

// table is every route the server serves, in the order it registers them.
func (s *Server) table() []route {
	return slices.Concat(s.routeTable(), s.jobRoutes(), s.imageRoutes(), s.eraseRoutes(),
		s.acceptanceRoutes(), s.firmwareRoutes(), s.cablingRoutes(), s.healthRoutes(), s.operatorRoutes(), s.objectRoutes(), s.profileRoutes(),
		s.whoamiRoutes(), s.backupRoutes(), s.eventRoutes(), s.consoleRoutes())
}

// clientRoutes is the route table without a server: the client reads only
// methods, patterns, actions and types from it, never the handlers, so a
// nil *Server will do (method values of a nil pointer are not called).
func clientRoutes() []route {
	var s *Server
	return s.table()
}
