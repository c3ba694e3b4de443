package main

import "testing"

func TestServeRaisesProcsOnlyOnASmallNodeWithoutAQuotaOrAChoice(t *testing.T) {
	for _, c := range []struct {
		name        string
		env         string
		procs, cpus int
		want        int
	}{
		{"two CPUs", "", 2, 2, minProcs},
		{"one CPU", "", 1, 1, minProcs},
		{"enough CPUs", "", 16, 16, 0},
		{"exactly enough", "", minProcs, minProcs, 0},
		{"operator's choice", "2", 2, 2, 0},
		{"a CPU quota below the CPUs", "", 2, 16, 0},
		{"a quota on a small node", "", 1, 2, 0},
	} {
		if got := procsFor(c.env, c.procs, c.cpus); got != c.want {
			t.Errorf("%s: procsFor(%q, %d, %d) = %d, want %d", c.name, c.env, c.procs, c.cpus, got, c.want)
		}
	}
}
