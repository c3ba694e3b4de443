package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeTellsSystemdItIsReadyOnceItListens plays systemd's side of
// Type=notify: a unix datagram socket in NOTIFY_SOCKET. serve must send
// READY=1 with the addresses, and the admin listener must answer as soon
// as it has; with --log-format json every log line is one JSON object, as
// journald wants them.
func TestServeTellsSystemdItIsReadyOnceItListens(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Read only once serve has returned.
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"metalhall", "serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0",
			"--provision-listen", "127.0.0.1:0", "--power-sync-interval", "0", "--log-format", "json"}, &bytes.Buffer{}, &stderr)
	}()

	// A guard against a hang, not a timing: the message comes or the
	// test fails with what serve said.
	ln.SetReadDeadline(time.Now().Add(2 * time.Minute))
	buf := make([]byte, 4096)
	n, err := ln.Read(buf)
	if err != nil {
		cancel()
		t.Fatalf("no notification from serve: %v (exit %v)\n%s", err, <-done, stderr.String())
	}
	state := map[string]string{}
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		k, v, _ := strings.Cut(l, "=")
		state[k] = v
	}
	if state["READY"] != "1" || state["MAINPID"] == "" {
		t.Fatalf("notification %q: want READY=1 and MAINPID", buf[:n])
	}
	admin, _, ok := strings.Cut(strings.TrimPrefix(state["STATUS"], "serving: admin "), ",")
	if !ok || !strings.HasPrefix(admin, "http://127.0.0.1:") {
		t.Fatalf("STATUS=%q names no admin URL", state["STATUS"])
	}
	resp, err := http.Get(admin + "/healthz")
	if err != nil {
		t.Fatalf("ready, but the admin listener does not answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz after READY=1: %s", resp.Status)
	}

	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve exited %d on cancel:\n%s", code, stderr.String())
	}
	lines := 0
	sc := bufio.NewScanner(strings.NewReader(stderr.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec["msg"] == nil || rec["level"] == nil {
			t.Errorf("--log-format json: not a JSON log record: %q", sc.Text())
		}
		lines++
	}
	if lines == 0 {
		t.Error("serve logged nothing")
	}
}
