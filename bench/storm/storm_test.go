package main

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/metalhall/metalhall/lab/netns"
)

// TestMain lets the test binary be the storm's DHCP probe process too.
func TestMain(m *testing.M) {
	if iface := os.Getenv(probeEnv); iface != "" {
		os.Exit(probeMain(iface))
	}
	os.Exit(m.Run())
}

// TestBootStormOfSimulatedMachines is the boot storm in the end-to-end
// suite (issue 18): the bench's simulated machines — each one a DHCP DORA
// from its own MAC, the boot script, the agent's call home, inspection,
// an image streamed and hashed, progress and done — against the real
// `metalhall serve` in a network namespace, every job submitted through
// the API as rack commissions and provisions. QEMU guests cost ~30 s each
// here; two hundred simulated machines cost seconds, so the storm is wider than
// any VM rack the suite could afford.
func TestBootStormOfSimulatedMachines(t *testing.T) {
	if testing.Short() {
		t.Skip("builds metalhall and runs a storm; skipped in -short")
	}
	if err := netns.Available(); err != nil {
		t.Skip("skipping: ", err)
	}
	t.Chdir("../..") // the storm builds ./cmd/metalhall
	cfg := config{
		N: 200, PerRack: 8, ImageMiB: 1, BootFileKiB: 64, MaxActive: 200, Streams: 8,
		ProgressEvery: 500 * time.Millisecond, RequestTimeout: 2 * time.Minute,
		ResultsDir: t.TempDir(), Probe: true,
	}
	if err := cfg.check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Minute)
	defer cancel()
	rep, err := run(ctx, cfg)
	if err != nil {
		t.Fatalf("storm of %d machines: %v", cfg.N, err)
	}
	if len(rep.phases) != 2 {
		t.Fatalf("%d phases, want commission and provision", len(rep.phases))
	}
	for _, ph := range rep.phases {
		if ph.Machines != cfg.N || ph.OK != cfg.N || len(ph.Failures) != 0 {
			t.Errorf("%s: %d of %d machines finished, failures %q", ph.Name, ph.OK, ph.Machines, ph.Failures)
		}
		// Every machine did a full DORA (its reservation checked by the
		// machine itself), fetched its script and boot files, called home
		// and ran its task.
		for _, st := range []string{stDHCP, stScript, stBootFiles, stCallHome, stTask} {
			n := len(ph.Samples[st])
			if st == stTask {
				// A commission's power-off can land while the agent's
				// inspection is still being answered (the inspection is
				// in: the step ends at once): that agent is cut off with
				// no task sample.
				n += ph.CutOff
			}
			if n < cfg.N {
				t.Errorf("%s: %d %s samples, want at least one per machine (%d)", ph.Name, n, st, cfg.N)
			}
		}
		// A commission powers the machine off once its inspection is in,
		// so some agents are cut off before their done is answered.
		if n := len(ph.Samples[stDone]) + ph.CutOff; n != cfg.N {
			t.Errorf("%s: %d dones answered + %d agents cut off = %d, want one per machine (%d)", ph.Name, len(ph.Samples[stDone]), ph.CutOff, n, cfg.N)
		}
		// The probe machine was answered all along, from its reservation.
		if len(ph.Probe) == 0 || ph.ProbeErrors != 0 {
			t.Errorf("%s: %d DHCP probe exchanges, %d failed DORAs; want some and none failed", ph.Name, len(ph.Probe), ph.ProbeErrors)
		}
		if ph.TxnsAfter <= ph.TxnsBefore {
			t.Errorf("%s: write transactions %d → %d: the store counter did not move", ph.Name, ph.TxnsBefore, ph.TxnsAfter)
		}
		// The breakdown by call site names the engine's step ends, one
		// write per step end of every machine at least.
		ends := writeSite{Op: "RecordJobUpdate", Caller: "provisioner.(*Engine).endStep"}
		if got := ph.CausesAfter[ends].Writes - ph.CausesBefore[ends].Writes; got < float64(cfg.N) {
			t.Errorf("%s: %v step-end writes counted by call site, want at least one per machine (%d)", ph.Name, got, cfg.N)
		}
	}
	prov := rep.phases[1]
	if want := int64(cfg.N) * int64(cfg.ImageMiB) << 20; prov.Bytes != want {
		t.Errorf("provision streamed %d image bytes, want exactly %d (%d machines × %d MiB, each hashed)", prov.Bytes, want, cfg.N, cfg.ImageMiB)
	}
	if n := len(prov.Samples[stImage]); n != cfg.N {
		t.Errorf("%d image streams, want one per machine (%d)", n, cfg.N)
	}
}
