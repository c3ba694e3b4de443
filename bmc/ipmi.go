package bmc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// What bmclib's ipmitool provider does not offer (boot override read-back,
// BMC identity, telling a wrong password from a dead BMC) we ask ipmitool
// directly, with the same conventions: lanplus, password through the
// environment (never on the command line, where ps shows it).

// ipmitoolRun runs ipmitool against ep with args, trying cipher suite 3
// then 17 like bmclib does. extra goes before the command (e.g. "-v").
func (c *Controller) ipmitoolRun(ctx context.Context, ep Endpoint, extra []string, args ...string) (string, error) {
	if c.ipmiErr != nil {
		return "", c.ipmiErr
	}
	_, host, port, err := ep.hostPort()
	if err != nil {
		return "", err
	}
	var out []byte
	for _, suite := range []string{"3", "17"} {
		a := []string{"-I", "lanplus", "-H", host, "-p", port, "-U", ep.Username, "-E", "-C", suite, "-N", "2", "-R", "2"}
		a = append(a, extra...)
		a = append(a, args...)
		cmd := exec.CommandContext(ctx, c.ipmitool, a...)
		cmd.Env = []string{"IPMITOOL_PASSWORD=" + ep.Password}
		cmd.WaitDelay = time.Second
		out, err = cmd.CombinedOutput()
		// Suite 17 is for BMCs that refuse suite 3's session; a command
		// the BMC answered (e.g. "Invalid command" to DCMI) must keep
		// that answer, not the other suite's session error.
		if err == nil || ctx.Err() != nil || !strings.Contains(strings.ToLower(string(out)), "unable to establish") {
			break
		}
	}
	if ctx.Err() != nil {
		return string(out), fmt.Errorf("ipmitool %s: %w", strings.Join(args, " "), ctx.Err())
	}
	if err != nil {
		return string(out), fmt.Errorf("ipmitool %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// ipmiReachable fails fast, with kind Unreachable, when nothing answers
// an RMCP ping at ep.
func (c *Controller) ipmiReachable(ctx context.Context, ep Endpoint) error {
	_, host, port, err := ep.hostPort()
	if err != nil {
		return err
	}
	if err := rmcpPing(ctx, net.JoinHostPort(host, port), 3, time.Second); err != nil {
		kind := KindUnreachable
		// The pings ran into the operation's deadline: that is a
		// timeout, as for any other slow answer.
		if dl, ok := ctx.Deadline(); ctx.Err() != nil || ok && time.Until(dl) < 20*time.Millisecond {
			kind = KindTimeout
		}
		return &Error{Kind: kind, Address: ep.Address, Protocol: ep.Protocol, Err: err}
	}
	return nil
}

// probeIPMI tells a wrong password from a dead BMC: without -v, ipmitool
// prints "Unable to establish IPMI v2 / RMCP+ session" for both. With -v it
// says "RAKP 2 HMAC is invalid" (password) or "unauthorized name" (user),
// and "Get KindAuth Capabilities error" when nothing answered.
func (c *Controller) probeIPMI(ctx context.Context, ep Endpoint, fallback ErrorKind) ErrorKind {
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, host, port, err := ep.hostPort()
	if err != nil {
		return fallback
	}
	a := []string{"-I", "lanplus", "-H", host, "-p", port, "-U", ep.Username, "-E", "-C", "3", "-N", "1", "-R", "1", "-v", "chassis", "power", "status"}
	cmd := exec.CommandContext(pctx, c.ipmitool, a...)
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + ep.Password}
	cmd.WaitDelay = time.Second
	out, _ := cmd.CombinedOutput()
	msg := strings.ToLower(string(out))
	for _, t := range ipmiAuthTexts {
		if strings.Contains(msg, t) {
			return KindAuth
		}
	}
	for _, t := range ipmiUnreachableTexts {
		if strings.Contains(msg, t) {
			return KindUnreachable
		}
	}
	return fallback
}

// ipmiBootOverride reads boot parameter 5 (boot flags).
func (c *Controller) ipmiBootOverride(ctx context.Context, ep Endpoint) (BootOverride, error) {
	out, err := c.ipmitoolRun(ctx, ep, nil, "chassis", "bootparam", "get", "5")
	if err != nil {
		return BootOverride{}, err
	}
	return parseBootParam5(out)
}

// parseBootParam5 parses `ipmitool chassis bootparam get 5`, e.g.
//
//   - Options apply to only next boot
//   - BIOS PC Compatible (legacy) boot
//   - Boot Device Selector : Force PXE
func parseBootParam5(out string) (BootOverride, error) {
	var bo BootOverride
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(sc.Text()), "-"))
		l := strings.ToLower(line)
		switch {
		case strings.HasPrefix(l, "boot device selector"):
			_, v, _ := strings.Cut(line, ":")
			v = strings.TrimSpace(v)
			bo.Raw = v
			found = true
			lv := strings.ToLower(v)
			switch {
			case strings.Contains(lv, "pxe"):
				bo.Device = BootPXE
			case strings.Contains(lv, "bios setup"):
				bo.Device = BootBIOS
			case strings.Contains(lv, "cd/dvd"), strings.Contains(lv, "cdrom"):
				bo.Device = BootCDROM
			case strings.Contains(lv, "hard-drive"), strings.Contains(lv, "hard drive"), strings.Contains(lv, "disk"):
				bo.Device = BootDisk
			default:
				bo.Device = BootNone
			}
		case strings.Contains(l, "options apply to all future boots"):
			bo.Persistent = true
		case strings.Contains(l, "bios efi boot"):
			bo.UEFI = true
		}
	}
	if !found {
		return bo, fmt.Errorf("no boot device selector in ipmitool output: %q", strings.TrimSpace(out))
	}
	return bo, nil
}

// ipmiInventory reads what `mc info` knows: BMC firmware and manufacturer.
// IPMI has no standard way to list GPUs.
func (c *Controller) ipmiInventory(ctx context.Context, ep Endpoint) (Inventory, error) {
	out, err := c.ipmitoolRun(ctx, ep, nil, "mc", "info")
	if err != nil {
		return Inventory{}, err
	}
	var inv Inventory
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "Firmware Revision":
			inv.BMCFirmware = v
		case "Manufacturer Name":
			if v != "Unknown" {
				inv.Vendor = v
			}
		case "Manufacturer ID":
			if inv.Vendor == "" {
				inv.Vendor = "IANA " + v
			}
		case "Product Name":
			if v != "Unknown" {
				inv.Model = v
			}
		}
	}
	if inv.BMCFirmware == "" {
		return inv, errors.New("no firmware revision in `ipmitool mc info` output")
	}
	return inv, nil
}

// rmcpPing checks that something answers IPMI at ep before bmclib starts
// ipmitool, which waits about 25 s per cipher suite on a dead address. The
// ASF presence ping (RMCP class 6) is mandatory for IPMI over LAN and needs
// no credentials. It tries `tries` times, waiting `wait` for each pong.
func rmcpPing(ctx context.Context, addr string, tries int, wait time.Duration) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "udp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	ping := []byte{
		0x06, 0x00, 0xff, 0x06, // RMCP v1.0, sequence 0xff (no ack), class ASF
		0x00, 0x00, 0x11, 0xbe, // ASF IANA enterprise number 4542
		0x80, 0x00, 0x00, 0x00, // presence ping, tag, reserved, data length 0
	}
	buf := make([]byte, 128)
	for i := 0; i < tries; i++ {
		ping[9] = byte(i)
		if _, err = conn.Write(ping); err != nil {
			return err // e.g. ICMP port unreachable from an earlier try
		}
		dl := time.Now().Add(wait)
		if cd, ok := ctx.Deadline(); ok && cd.Before(dl) {
			dl = cd
		}
		_ = conn.SetReadDeadline(dl)
		for {
			n, rerr := conn.Read(buf)
			if rerr != nil {
				err = rerr
				break
			}
			// A pong (type 0x40); anything else RMCP-shaped also proves
			// that an IPMI stack is listening.
			if n >= 9 && buf[0] == 0x06 {
				return nil
			}
		}
		if errors.Is(err, syscall.ECONNREFUSED) || ctx.Err() != nil {
			break
		}
	}
	return fmt.Errorf("no answer to RMCP presence ping on %s (%d tries): %w", addr, tries, err)
}
