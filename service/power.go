package service

import (
	"context"
	"time"
)

// watchRackPower checks, once per power sync interval, every rack's
// measured draw against the alert share of its budget, until ctx ends.
// The store marks a rack and writes its event only when the draw crosses
// the share (or falls back past the hysteresis), so a rack over the share
// for an hour raises one alert, not sixty.
func (s *Service) watchRackPower(ctx context.Context) {
	t := time.NewTicker(s.cfg.PowerSync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, s.cfg.PowerSync)
		changes, err := s.inv.CheckRackPowerAlerts(cctx, s.cfg.PowerAlertShare)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("rack power alerts", "err", err)
			}
			continue
		}
		for _, c := range changes {
			if c.Over {
				s.log.Warn("rack power over the alert share", "rack", c.Rack, "measured_w", c.MeasuredW, "budget_w", c.BudgetW, "share", s.cfg.PowerAlertShare)
			} else {
				s.log.Info("rack power back under the alert share", "rack", c.Rack, "measured_w", c.MeasuredW, "budget_w", c.BudgetW)
			}
		}
	}
}
