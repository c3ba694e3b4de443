package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
)

// LinePrefix starts every console line, so the agent's lines stand out
// among kernel messages on a serial console.
const LinePrefix = "metalhall-agent: "

// ConsoleHandler is a slog handler for the serial console: one short
// line per record, "metalhall-agent: msg k=v ...", no timestamps (the
// console and the kernel log have their own).
type ConsoleHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	level slog.Level
	attrs string
}

// NewConsoleHandler writes records at or above level to w.
func NewConsoleHandler(w io.Writer, level slog.Level) *ConsoleHandler {
	return &ConsoleHandler{mu: &sync.Mutex{}, w: w, level: level}
}

func (h *ConsoleHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h *ConsoleHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(LinePrefix)
	if r.Level != slog.LevelInfo {
		b.WriteString(r.Level.String())
		b.WriteString(": ")
	}
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, a)
		return true
	})
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func appendAttr(b *strings.Builder, a slog.Attr) {
	v := a.Value.Resolve().String()
	if strings.ContainsAny(v, " \"=") || v == "" {
		v = fmt.Sprintf("%q", v)
	}
	fmt.Fprintf(b, " %s=%s", a.Key, v)
}

func (h *ConsoleHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, a)
	}
	n := *h
	n.attrs = b.String()
	return &n
}

// WithGroup is not needed by the agent; groups are flattened.
func (h *ConsoleHandler) WithGroup(string) slog.Handler { return h }
