package rack

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os/signal"
	"strings"
	"syscall"
)

// RunUp is the body of `metalhall-lab up` (wired in cmd/metalhall-lab,
// like `bmc`): it brings a rack up, prints its machines, its manifest and
// how to run the service on it, and keeps it up (this process hosts the
// Redfish emulators and follows ipmi_sim) until ctx ends or SIGINT/SIGTERM
// arrives; then it takes it down.
//
//	-machines 3 -firmware bios|uefi|mixed -bmc redfish|ipmi|mixed -dir ./metalhall-lab
//	-fabric 2 -miscabled lab-m02
func RunUp(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("lab up", flag.ContinueOnError)
	fs.SetOutput(out)
	n := fs.Int("machines", 3, "number of QEMU machines")
	fw := fs.String("firmware", "mixed", "bios, uefi or mixed")
	bmc := fs.String("bmc", "mixed", "redfish, ipmi or mixed")
	dir := fs.String("dir", "./metalhall-lab", "state, manifest, disks and serial logs")
	mem := fs.Int("memory", 512, "MiB of RAM per machine")
	disk := fs.Int("disk", 64, "MiB of disk per machine")
	profile := fs.String("profile", "", "hardware profile of every machine in the manifest")
	fabric := fs.Int("fabric", 0, "fabric NICs per machine, each cabled to its own simulated leaf switch (lldpd)")
	miscabled := fs.String("miscabled", "", "machines (comma-separated) whose first two fabric cables are swapped at the leaves")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var swapped []string
	if *miscabled != "" {
		swapped = strings.Split(*miscabled, ",")
	}
	r, err := Up(ctx, Config{Machines: *n, Firmware: *fw, BMC: *bmc, Dir: *dir, MemoryMiB: *mem, DiskMiB: *disk, Profile: *profile,
		FabricNICs: *fabric, Miscabled: swapped, Log: out})
	if err != nil {
		return err
	}
	defer r.Down()
	fmt.Fprintf(out, "lab rack %s up in network namespace %s (bridge %s, %s):\n", r.Rack, r.NS.Name, r.Bridge, r.Subnet)
	for _, m := range r.Machines {
		fmt.Fprintf(out, "  %-8s %-4s %-7s BMC %-24s MAC %s IP %s\n", m.Name, m.Firmware, m.BMCProtocol, m.BMCAddress, m.MAC, m.IP)
		for k := range m.FabricTaps {
			fmt.Fprintf(out, "           fabric NIC %s (MAC %s) cabled to %s\n", FabricPCIAddress(k), m.FabricMACs[k], r.cableOf(m, k))
		}
	}
	fmt.Fprintf(out, "manifest: %s\n", r.Manifest)
	fmt.Fprintf(out, "run the service on it (another terminal):\n  ip netns exec %s metalhall serve --listen 127.0.0.1:8280 --provision-listen %s:8280 --netboot-interface %s --dhcp-mode reservation --advertise-address %s --data-dir DIR\n", r.NS.Name, r.Server, r.Bridge, r.Server)
	fmt.Fprintf(out, "and its CLI:\n  ip netns exec %s metalhall subnet create --cidr %s --gateway %s lab-net\n", r.NS.Name, r.Subnet, r.Server)
	fmt.Fprintf(out, "Ctrl-C takes the rack down (or `metalhall-lab down --dir %s` after a crash)\n", r.Dir)
	<-ctx.Done()
	return r.Down()
}

// RunDown is the body of `metalhall-lab down`: it removes what a rack in
// -dir left behind (idempotent).
func RunDown(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("lab down", flag.ContinueOnError)
	fs.SetOutput(out)
	dir := fs.String("dir", "./metalhall-lab", "the rack's directory (as given to lab up)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := Down(*dir); err != nil {
		return err
	}
	fmt.Fprintf(out, "lab rack in %s is down\n", *dir)
	return nil
}
