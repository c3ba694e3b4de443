package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/agent/bootenv"
	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/service"
)

// Boot environment file names under DATA_DIR/bootenv, which `serve` hands
// out at /boot/files/.
const (
	bootenvKernel   = service.BootenvKernel
	bootenvInitrd   = service.BootenvInitrd
	bootenvManifest = "manifest.json"
)

func bootenvCommand() *cli.Command {
	return &cli.Command{Name: "bootenv", Usage: "the kernel and initramfs machines boot to run the agent", Subcommands: []*cli.Command{
		{Name: "build", Usage: "build the agent's boot environment from a kernel and its modules",
			UsageText: `metalhall bootenv build --kernel /boot/vmlinuz-X [--modules /lib/modules/X] [--module-set server|qemu]
    [--extra-modules m1,m2] [--overlay DIR]... [--agent bin/metalhall-agent] [--compression gzip|zstd] [--data-dir DIR]

Writes DIR/bootenv/{vmlinuz,initrd.img,manifest.json}; a running service
hands them out at once. The initramfs holds the static agent as /init and
the network and storage modules of GPU servers and QEMU (--module-set
server, the default) or of QEMU machines only (--module-set qemu: a
smaller initramfs for the lab), with their dependencies in load order.
Each --overlay is a directory tree added as it is — e.g. the NVIDIA driver
and DCGM from your own package mirror, so that commissioning can run
dcgmi diag; its kernel modules under lib/modules/RELEASE/ load after the
base set, in its modules.order.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "kernel", Required: true, Usage: "the Linux kernel the agent boots, e.g. /boot/vmlinuz-$(uname -r)"}, &cli.StringFlag{Name: "modules", Usage: "default /lib/modules/<release>"},
				&cli.StringFlag{Name: "module-set", Value: "server", Usage: "server (GPU servers and QEMU) or qemu (QEMU machines only)"},
				&cli.StringFlag{Name: "extra-modules", Usage: "more modules, comma-separated"},
				&cli.StringSliceFlag{Name: "overlay", Usage: "a directory tree to add to the initramfs as it is (repeatable): programs, libraries, kernel modules"},
				&cli.StringFlag{Name: "agent", Usage: "static agent binary (default: metalhall-agent beside this program)"},
				&cli.StringFlag{Name: "compression", Value: "gzip", Usage: "initramfs compression: gzip or zstd"},
				&cli.StringFlag{Name: "data-dir", Value: "./metalhall-data", EnvVars: []string{"METALHALL_DATA_DIR"}, Usage: "the service's data directory, where the boot environment goes"}, outputFlag(),
			},
			Action: bootenvBuild},
	}}
}

func bootenvBuild(c *cli.Context) error {
	if err := noArgs(c); err != nil {
		return err
	}
	modules, err := bootenv.ModuleSet(c.String("module-set"))
	if err != nil {
		return usagef("--module-set %q: want server or qemu", c.String("module-set"))
	}
	agent := c.String("agent")
	if agent == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		agent = filepath.Join(filepath.Dir(exe), "metalhall-agent")
	}
	if _, err := os.Stat(agent); err != nil {
		return usagef("agent binary %s: %v (build it with 'make build', or pass --agent)", agent, err)
	}
	for _, o := range c.StringSlice("overlay") {
		if st, err := os.Stat(o); err != nil || !st.IsDir() {
			return usagef("--overlay %s: not a directory: give the root of a tree to add (e.g. one holding usr/bin/dcgmi)", o)
		}
	}
	out := filepath.Join(c.String("data-dir"), "bootenv")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var extra []string
	if e := c.String("extra-modules"); e != "" {
		extra = strings.Split(e, ",")
	}
	// Each file is replaced whole: a service booting machines meanwhile
	// serves the old environment or the new one, never half of one.
	var m bootenv.Manifest
	err = atomicfile.Write(filepath.Join(out, bootenvInitrd), atomicfile.Options{Perm: 0o644}, func(w io.Writer) error {
		var err error
		m, err = bootenv.Build(c.Context, bootenv.Options{Kernel: c.String("kernel"), ModulesDir: c.String("modules"),
			Modules: modules, ExtraModules: extra, AgentBinary: agent, Compression: bootenv.Compression(c.String("compression")),
			Overlays: c.StringSlice("overlay"), Out: w})
		return err
	})
	if err != nil {
		return fmt.Errorf("bootenv build: %w", err)
	}
	kernel, err := os.Open(c.String("kernel"))
	if err != nil {
		return err
	}
	defer kernel.Close()
	if _, err := atomicfile.Copy(filepath.Join(out, bootenvKernel), kernel, atomicfile.Options{Perm: 0o644}); err != nil {
		return err
	}
	mj, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.WriteFile(filepath.Join(out, bootenvManifest), mj, atomicfile.Options{Perm: 0o644}); err != nil {
		return err
	}
	return show(c, m, func(w io.Writer) {
		fmt.Fprintf(w, "boot environment for kernel %s written to %s: %d modules, initramfs %d bytes\n", m.KernelRelease, out, len(m.Modules), m.Size)
		if len(m.Overlay) > 0 {
			fmt.Fprintf(w, "overlays added %d files\n", len(m.Overlay))
		}
		if len(m.Missing) > 0 {
			fmt.Fprintf(w, "not in this kernel (skipped): %s\n", strings.Join(m.Missing, ", "))
		}
	})
}
