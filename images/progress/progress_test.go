package progress

import (
	"io"
	"strings"
	"testing"
	"time"
)

func TestReaderStats(t *testing.T) {
	now := time.Unix(0, 0)
	clock := func() time.Time { return now }
	r := newReader(strings.NewReader(strings.Repeat("x", 3000)), 3000, clock)
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	st := r.Stats()
	if st.Bytes != 1000 || st.Rate != 1000 || st.ETA != 2*time.Second {
		t.Fatalf("stats = %+v, want 1000 B at 1000 B/s, ETA 2s", st)
	}
	if got, want := st.String(), "1000 B / 2.9 KiB (33%)  0.0 MB/s  ETA 2s"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := Bytes(3 << 30); got != "3.0 GiB" {
		t.Errorf("Bytes = %q", got)
	}
}
