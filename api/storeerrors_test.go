package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/inventory/kv"
)

// A write the store's engine could not commit (etcd without quorum) is a
// 503 that says so and what to do, without the cluster's addresses.
func TestAStoreThatCannotCommitIsUnavailableNotInternal(t *testing.T) {
	err := fmt.Errorf("etcd engine: commit: the etcd cluster at http://10.0.0.1:2379 cannot commit: %w", kv.ErrUnavailable)
	status, code, msg := classify(fmt.Errorf("site %q: %w", "s1", err))
	if status != http.StatusServiceUnavailable || code != "unavailable" {
		t.Fatalf("classify: %d %s, want 503 unavailable", status, code)
	}
	if !strings.Contains(msg, "not committed") || !strings.Contains(msg, "quorum") || strings.Contains(msg, "10.0.0.1") {
		t.Errorf("message %q: want it to say not committed and why, without the cluster's address", msg)
	}
	if status, _, _ := classify(fmt.Errorf("x: %w", kv.ErrConflict)); status != http.StatusServiceUnavailable {
		t.Errorf("a conflict past the retries: %d, want 503", status)
	}
}
