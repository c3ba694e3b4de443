package bmc

import (
	"context"
	"sync"
	"time"
)

// StatusSink is where SyncPower gets its machines and records what it
// read. The service implements it over its inventory.
type StatusSink interface {
	// BMCTargets lists the machines whose power should be read.
	BMCTargets(ctx context.Context) ([]Target, error)
	// RecordBMCStatus stores what was read for one machine.
	RecordBMCStatus(ctx context.Context, machine string, st Status) error
}

// SyncPower reads the power state of every target of src every interval
// and records it, until ctx is done. It runs one round at once, then one
// per interval; a round that takes longer than interval delays the next
// instead of overlapping it. Concurrency is the Controller's (MaxConcurrent,
// one operation per BMC), and each read gets OpTimeout with no retries: the
// next round is the retry.
func (c *Controller) SyncPower(ctx context.Context, src StatusSink, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		c.syncRound(ctx, src)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (c *Controller) syncRound(ctx context.Context, src StatusSink) {
	start := time.Now()
	targets, err := src.BMCTargets(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Error("bmc power sync: listing targets", "err", err)
		}
		return
	}
	// Spawn at most MaxConcurrent readers: the Controller would bound the
	// BMC work anyway, but not the goroutines waiting for it.
	work := make(chan Target)
	var wg sync.WaitGroup
	var failed, ok int
	var mu sync.Mutex
	workers := min(cap(c.sem), len(targets))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tg := range work {
				st := c.readStatus(ctx, tg.Endpoint)
				if ctx.Err() != nil {
					return // shutting down: do not record a cancellation as a BMC failure
				}
				if err := src.RecordBMCStatus(ctx, tg.Machine, st); err != nil && ctx.Err() == nil {
					c.log.Error("bmc power sync: recording status", "machine", tg.Machine, "err", err)
				}
				mu.Lock()
				if st.Reachable {
					ok++
				} else {
					failed++
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, tg := range targets {
		select {
		case work <- tg:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if ctx.Err() == nil {
		c.log.Info("bmc power sync round", "machines", len(targets), "ok", ok, "failed", failed, "took", time.Since(start))
	}
}

// readStatus reads one BMC's power once, without retries.
func (c *Controller) readStatus(ctx context.Context, ep Endpoint) Status {
	var st PowerState
	var sensors Sensors
	err := c.runOnce(ctx, ep, "power-sync", func(ctx context.Context, s *session) error {
		if ep.Protocol == Redfish && c.cfg.registry == nil {
			// One gofish session reads the power state, the draw and
			// the sensors, instead of a bmclib login and a gofish one.
			var err error
			st, sensors, err = s.redfishPowerAndSensors(ctx)
			return err
		}
		var err error
		st, err = s.powerState(ctx)
		if err == nil && ep.Protocol == IPMI && c.cfg.registry == nil {
			// The power state is what the sync is for: sensors that
			// cannot be read leave it standing.
			var serr error
			if sensors, serr = c.ipmiSensors(ctx, ep); serr != nil {
				c.log.Debug("bmc power sync: IPMI sensors", "bmc", ep, "err", serr)
			}
		}
		return err
	})
	out := StatusOf(st, err, time.Now())
	if err == nil {
		out.Sensors = sensors
		out.ConsumedWatts, out.WattsMeasured = sensors.ConsumedWatts, sensors.PowerMeasured
	}
	return out
}

// runOnce is run without retries.
func (c *Controller) runOnce(ctx context.Context, ep Endpoint, op string, body func(context.Context, *session) error) error {
	return c.runRetries(ctx, ep, op, c.cfg.OpTimeout, 0, body)
}
