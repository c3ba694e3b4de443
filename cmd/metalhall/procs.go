package main

import (
	"log/slog"
	"os"
	"runtime"
)

// minProcs is the fewest Ps (threads running Go code at once) serve runs
// with on a node that has fewer CPUs.
//
// A DHCP answer comes from memory in a fraction of a millisecond, but its
// packet waits until the Go scheduler runs the goroutine reading the
// socket. While every P is busy (the service answering agents, BMCs and
// the API in a boot storm), Go looks for ready sockets only when a P runs
// out of work or when its monitor thread polls, at most every 10 ms: on a
// two-CPU node the DHCP answers of a 1,000-machine storm waited up to
// 14–16 ms at the 99th percentile (bench/storm/README.md, Round 10). With
// more Ps than CPUs a P is free more often, its thread waits in epoll
// and runs the DHCP goroutine as soon as the packet arrives, and the
// kernel, which preempts in far less than 10 ms, shares the CPUs between
// the threads. The price is a few percent more CPU for the switching.
const minProcs = 4

// procsFor is the GOMAXPROCS serve raises the runtime to, or 0 to leave it:
// never when the operator set GOMAXPROCS, never under a CPU quota (the
// runtime then runs fewer Ps than the node has CPUs, and more threads
// would only be throttled by the quota), never above minProcs.
func procsFor(env string, procs, cpus int) int {
	if env != "" || procs < cpus || procs >= minProcs {
		return 0
	}
	return minProcs
}

// raiseProcs applies procsFor to the running process.
func raiseProcs(log *slog.Logger) {
	was := runtime.GOMAXPROCS(0)
	n := procsFor(os.Getenv("GOMAXPROCS"), was, runtime.NumCPU())
	if n == 0 {
		return
	}
	runtime.GOMAXPROCS(n)
	if log != nil {
		log.Info("running more Go threads than CPUs, so that DHCP answers do not wait for a busy scheduler (set GOMAXPROCS to choose)",
			"cpus", runtime.NumCPU(), "gomaxprocs", n, "was", was)
	}
}
