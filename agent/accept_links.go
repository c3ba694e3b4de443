package agent

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// linkWait bounds how long ports are given to come up: copper and
// optics negotiate in a few seconds; one that has no carrier by then
// has no cable, or a dead one, which the cabling check reports.
const linkWait = 10 * time.Second

// bringLinksUp sets every Ethernet port up and waits (at most wait) for
// each to have carrier. The agent's network setup raises only the port
// it boots from; a fabric port left down reads "no link" and never hears
// its switch, whatever its cable.
func bringLinksUp(ctx context.Context, sysNet string, wait time.Duration, log *slog.Logger) {
	ents, err := os.ReadDir(sysNet)
	if err != nil {
		return
	}
	var ports []string
	for _, e := range ents {
		d := filepath.Join(sysNet, e.Name())
		if _, err := os.Lstat(filepath.Join(d, "device")); err != nil {
			continue // not a physical port
		}
		if len(readAttr(filepath.Join(d, "address"))) != len("00:00:00:00:00:00") {
			continue // InfiniBand
		}
		if err := setLinkUp(e.Name()); err != nil {
			log.Warn("link up", "interface", e.Name(), "err", err)
			continue
		}
		ports = append(ports, e.Name())
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		var down []string
		for _, p := range ports {
			if readAttr(filepath.Join(sysNet, p, "carrier")) != "1" {
				down = append(down, p)
			}
		}
		if len(down) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			log.Info("ports without carrier", "interfaces", strings.Join(down, ","))
			return
		case <-t.C:
		}
	}
}
