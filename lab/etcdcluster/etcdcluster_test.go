package etcdcluster

import (
	"context"
	"testing"
)

// A three-member cluster survives one member's death (the others stay
// healthy) and the member rejoins on restart.
func TestClusterSurvivesOneMemberAndRejoins(t *testing.T) {
	if err := Available(); err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	c, err := Start(ctx, Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Kill(0)
	if c.Running(0) {
		t.Fatal("member 1 still running after Kill")
	}
	if err := c.WaitHealthy(ctx, 1); err != nil {
		t.Fatalf("after losing one member of three: %v", err)
	}
	if err := c.Restart(0); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(ctx, 0); err != nil {
		t.Fatalf("restarted member: %v", err)
	}
}
