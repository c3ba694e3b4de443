package ipmisim

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The simulated BMC's health, as a real one reports it: a SEL, and
// sensors with SDRs so that `ipmitool sdr` lists them by name. ipmi_sim
// answers no DCMI command ("Invalid command"), so it measures no power.
//
//	sensor 1 "Inlet Temp"  temperature, entity 55 (air inlet), 24 °C, upper critical 45 °C
//	sensor 2 "Fan 1"       fan, 9600 RPM (raw 96 × 100), lower critical 1000 RPM
//	sensor 3 "Fan 2"       fan, 9600 RPM
//	sensor 4 "PSU 1"       power supply (sensor-specific), presence detected
//	sensor 5 "PSU 2"       power supply, presence detected
//
// Config.Emu adds lines before the MC is enabled, e.g. a failed PSU:
// "sensor_set_bit 0x20 0 5 1 1 0".

type emuSensor struct {
	num, typ, evType, entity, units, m, nominal byte
	name                                        string
}

var emuSensors = []emuSensor{
	{1, 0x01, 0x01, 0x37, 0x01, 1, 24, "Inlet Temp"},
	{2, 0x04, 0x01, 0x1d, 0x12, 100, 96, "Fan 1"},
	{3, 0x04, 0x01, 0x1d, 0x12, 100, 96, "Fan 2"},
	{4, 0x08, 0x6f, 0x0a, 0x00, 1, 0, "PSU 1"},
	{5, 0x08, 0x6f, 0x0a, 0x00, 1, 0, "PSU 2"},
}

// thresholds are each sensor type's, raw (fans: × 100 RPM).
var thresholds = map[byte][6]byte{0x01: {50, 45, 40, 0, 5, 10}, 0x04: {0, 0, 0, 0, 10, 0}}

// emuFile is the .emu file: one BMC with a SEL, its SDRs and sensors.
func emuFile(extra string) string {
	var b strings.Builder
	b.WriteString("mc_setbmc 0x20\n")
	b.WriteString("mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n")
	b.WriteString("sel_enable 0x20 1000 0x0a\n")
	for _, s := range emuSensors {
		b.WriteString(fullSDR(s))
	}
	for _, s := range emuSensors {
		fmt.Fprintf(&b, "sensor_add 0x20 0 %d 0x%02x 0x%02x\n", s.num, s.typ, s.evType)
		switch s.typ {
		case 0x01: // thresholds value5..value0: UNR UC UNC LNR LC LNC; UC and LC enabled
			fmt.Fprintf(&b, "sensor_set_threshold 0x20 0 %d settable 010010 50 45 40 0 5 10\n", s.num)
			fmt.Fprintf(&b, "sensor_set_value 0x20 0 %d %d 0\n", s.num, s.nominal)
		case 0x04: // lower critical only (raw 10: 1000 RPM)
			fmt.Fprintf(&b, "sensor_set_threshold 0x20 0 %d settable 000010 0 0 0 0 10 0\n", s.num)
			fmt.Fprintf(&b, "sensor_set_value 0x20 0 %d %d 0\n", s.num, s.nominal)
		case 0x08: // presence detected
			fmt.Fprintf(&b, "sensor_set_bit 0x20 0 %d 0 1 0\n", s.num)
		}
	}
	if extra != "" {
		b.WriteString(strings.TrimSpace(extra) + "\n")
	}
	b.WriteString("mc_enable 0x20\n")
	return b.String()
}

// fullSDR is a Full Sensor Record (IPMI v2.0 table 43-1) for s: linear,
// unsigned, reading × M, thresholds matching the simulator's.
func fullSDR(s emuSensor) string {
	body := []byte{
		0x20, 0x00, s.num, // owner, LUN, number
		s.entity, 0x01, 0x7f, 0x68, s.typ, s.evType,
		0xff, 0x7f, 0xff, 0x7f, 0x3f, 0x3f, // assertion, deassertion, reading masks
		0x00, s.units, 0x00, 0x00, // units 1-3, linear
		s.m, 0x00, 0x00, 0x00, 0x00, 0x00, // M, tolerance, B, accuracy, exponents
		0x00, s.nominal, 0xff, 0x00, 0xff, 0x00, // flags, nominal, normal max/min, sensor max/min
	}
	th := thresholds[s.typ]
	body = append(body, th[:]...) // UNR UC UNC LNR LC LNC, as the simulator's
	body = append(body,
		0x00, 0x00, 0x00, 0x00, 0x00, // hysteresis, reserved, OEM
		0xc0|byte(len(s.name)))
	body = append(body, s.name...)
	var b strings.Builder
	fmt.Fprintf(&b, "main_sdr_add 0x20 0x%02x 0x00 0x51 0x01 0x%02x", s.num, len(body))
	for _, x := range body {
		fmt.Fprintf(&b, " 0x%02x", x)
	}
	b.WriteString("\n")
	return b.String()
}

// AddSEL adds a system event record to the simulator's SEL through its
// LAN interface, as a BMC's own sensors would: `ipmitool sel add` with
// the event's seven bytes (EvM revision, sensor type, sensor number,
// event dir|type, event data 1-3), e.g. {0x04, 0x0c, 0x01, 0x6f, 0x01,
// 0xff, 0xff} for an uncorrectable ECC error on memory sensor 1.
func (s *Sim) AddSEL(ctx context.Context, event [7]byte) error {
	var line strings.Builder
	for i, x := range event {
		if i > 0 {
			line.WriteByte(' ')
		}
		fmt.Fprintf(&line, "0x%02x", x)
	}
	path := filepath.Join(s.dir, "sel-add.txt")
	if err := os.WriteFile(path, []byte(line.String()+"\n"), 0o600); err != nil {
		return fmt.Errorf("ipmisim: %w", err)
	}
	out, err := s.ipmitool(ctx, "sel", "add", path)
	if err != nil {
		return fmt.Errorf("ipmisim: sel add: %v: %s", err, out)
	}
	return nil
}

// ipmitool runs ipmitool against the simulator as its admin.
func (s *Sim) ipmitool(ctx context.Context, args ...string) (string, error) {
	a := append([]string{"-I", "lanplus", "-H", s.Host(), "-p", fmt.Sprint(s.Port()), "-U", s.cfg.User, "-E", "-C", "3"}, args...)
	cmd := exec.CommandContext(ctx, "ipmitool", a...)
	cmd.Env = []string{"IPMITOOL_PASSWORD=" + s.cfg.Password}
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
