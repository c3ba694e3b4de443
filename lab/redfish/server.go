// Package redfish is a small Redfish BMC emulator. It follows the DMTF
// schema closely enough that bmclib's gofish provider and gofish itself
// work against it unmodified: service root, sessions, one ComputerSystem
// with power and boot override, one Manager with a SEL, one Chassis.
//
// It exists so that the bmc package, the benchmark and the lab can talk to
// a real HTTP peer instead of a mock. Fault knobs (refuse, hang, boot
// override revert, latency) reproduce the failures seen on real BMCs.
package redfish

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one emulated BMC.
type Config struct {
	// Username and Password are the only accepted credentials (basic auth
	// or session login).
	Username, Password string
	// Latency is added to every request before it is answered, to model
	// a slow BMC web server.
	Latency time.Duration
	// PowerOn is the initial power state.
	PowerOn bool
	// CycleOffTime is how long the system stays off during ForceRestart or
	// PowerCycle before it comes back on. Zero means the restart is
	// complete when the action returns.
	CycleOffTime time.Duration

	// Identity reported by the system and manager. Empty fields get
	// defaults.
	Vendor, Model, Serial, FirmwareVersion, BIOSVersion string
	// Firmware lists components the UpdateService's FirmwareInventory
	// reports besides the BMC (FirmwareVersion) and the BIOS
	// (BIOSVersion). nil: a CPLD at "1.0.3".
	Firmware []Firmware
	// GPUs is the number of GPU processors the system reports.
	GPUs int
	// MACs of the system's Ethernet interfaces.
	MACs []string

	// InletCelsius is the inlet temperature the chassis reports (default
	// 24). WattsOn is the power drawn while on (default 1000; 5% of it
	// while off, for the BMC and fans on standby).
	InletCelsius float64
	WattsOn      float64

	// NoSessions models BMCs without a SessionService (sushy-tools, some
	// OEM firmware): the service root links no Sessions, logins are 404,
	// and only HTTP basic auth is accepted.
	NoSessions bool
	// Baseboard lists the systems the way NVIDIA HGX/GB200/GB300 BMCs do:
	// the host as System_0 (with ComputerSystem.Reset and Boot) and the
	// GPU baseboard as HGX_Baseboard_0 (with neither).
	Baseboard bool
	// OnceAsContinuous keeps every boot override as Continuous, even when
	// asked for Once, as sushy-tools does.
	OnceAsContinuous bool
	// PowerLimit says how the chassis offers a power cap (health.go):
	// "" the Power resource's PowerControl[0].PowerLimit, "controls" a
	// Controls collection with a Power control (newer BMCs, no Power
	// resource), "none" no cap at all (PATCH refused with 405).
	PowerLimit string

	Hooks Hooks
}

// Hooks let a lab attach a real machine (a QEMU VM) to the emulator. They
// are called with no emulator lock held, in the request's goroutine (or a
// timer's, for the "on" that ends a restart with CycleOffTime), and must
// be safe for concurrent use.
type Hooks struct {
	// OnPower is called when the emulated power changes. An error makes
	// the Reset action fail with HTTP 500 and leaves the state unchanged.
	OnPower func(on bool) error
	// OnBoot is called with the Redfish BootSourceOverrideTarget (Pxe,
	// Hdd, BiosSetup, Cd, None) whenever the override is changed.
	OnBoot func(target string)
}

// BootOverride is the emulated ComputerSystem.Boot state.
type BootOverride struct {
	Target  string // BootSourceOverrideTarget, e.g. "Pxe"
	Enabled string // Disabled, Once, Continuous
	Mode    string // Legacy, UEFI
}

// Server is one emulated BMC. It is an http.Handler; use it with
// httptest.NewServer or any http.Server.
type Server struct {
	cfg     Config
	sysPath string // the host system
	// lastBoot is the override target the last power-on booted with.
	lastBoot string

	mu       sync.Mutex
	on       bool
	boot     BootOverride
	sessions map[string]string // token -> session id
	nextSess int
	resets   []string // ResetType history
	sel      []selEntry
	selNext  int
	limitW   float64       // the power cap; 0: none
	revertIn time.Duration // <0: no revert
	revertT  *time.Timer

	latency  atomic.Int64 // time.Duration
	refuse   atomic.Bool
	hang     atomic.Bool
	hangC    chan struct{}
	requests atomic.Int64
}

type selEntry struct {
	ID, Created, Message, Severity string
}

// NewServer returns an emulated BMC with its power and boot state set from
// cfg.
// Firmware is one member of the emulator's FirmwareInventory.
type Firmware struct {
	ID, Name, Version string
}

func NewServer(cfg Config) *Server {
	if cfg.Vendor == "" {
		cfg.Vendor = "Metalhall"
	}
	if cfg.Model == "" {
		cfg.Model = "Emulated GPU Server"
	}
	if cfg.Serial == "" {
		cfg.Serial = "EMU-" + randHex(4)
	}
	if cfg.FirmwareVersion == "" {
		cfg.FirmwareVersion = "1.0.0-emu"
	}
	if cfg.BIOSVersion == "" {
		cfg.BIOSVersion = "2.1.0-emu"
	}
	if cfg.Firmware == nil {
		cfg.Firmware = []Firmware{{ID: "CPLD_0", Name: "CPLD", Version: "1.0.3"}}
	}
	s := &Server{
		cfg:      cfg,
		on:       cfg.PowerOn,
		boot:     BootOverride{Target: "None", Enabled: "Disabled", Mode: "UEFI"},
		sessions: make(map[string]string),
		revertIn: -1,
		hangC:    make(chan struct{}),
		sysPath:  root + "/Systems/1",
	}
	if cfg.Baseboard {
		s.sysPath = root + "/Systems/" + hostSystemID
	}
	s.latency.Store(int64(cfg.Latency))
	s.addSELLocked("OK", "BMC emulator started")
	return s
}

// --- knobs and state, safe for concurrent use ---

// SetLatency changes the per-request latency.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)) }

// SetRefuse makes every request fail with 503 Service Unavailable, as a
// BMC does while its web server restarts. (To refuse connections outright,
// close the listener: that is a dead BMC.)
func (s *Server) SetRefuse(on bool) { s.refuse.Store(on) }

// SetHang makes every request block until SetHang(false) or until the
// client goes away: a wedged BMC.
func (s *Server) SetHang(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on == s.hang.Load() {
		return
	}
	s.hang.Store(on)
	if !on {
		close(s.hangC)
		s.hangC = make(chan struct{})
	}
}

// SetRevertBoot makes the BMC accept a boot override and silently revert it
// to None after d (d == 0: the PATCH succeeds but is never applied). A
// negative d turns the fault off.
func (s *Server) SetRevertBoot(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revertIn = d
}

// Power reports whether the emulated system is on.
func (s *Server) Power() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.on
}

// SetPower sets the emulated power without calling hooks (a machine that
// was switched on by hand).
func (s *Server) SetPower(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.on = on
}

// Boot returns the current boot override.
func (s *Server) Boot() BootOverride {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.boot
}

// LastBoot is the boot override target ("Pxe", "Hdd", "None", ...) that
// the last power-on booted with: a one-time override is gone from Boot
// once it was used.
func (s *Server) LastBoot() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastBoot
}

// Resets returns the ResetTypes received so far, oldest first.
func (s *Server) Resets() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.resets...)
}

// Sessions returns the number of open sessions (a BMC that runs out of
// sessions is a classic field failure: tests check that clients log out).
func (s *Server) Sessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Requests returns the number of HTTP requests served.
func (s *Server) Requests() int64 { return s.requests.Load() }

// --- HTTP ---

const (
	// hostSystemID and baseboardID are the Ids of a GB300 capture's host
	// and GPU baseboard systems (Config.Baseboard).
	hostSystemID = "System_0"
	baseboardID  = "HGX_Baseboard_0"
)

const (
	root     = "/redfish/v1"
	mgrPath  = root + "/Managers/1"
	chPath   = root + "/Chassis/1"
	sessPath = root + "/SessionService/Sessions"
)

var resetTypes = []string{"On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart", "PowerCycle", "Nmi", "PushPowerButton"}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	if d := time.Duration(s.latency.Load()); d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if s.hang.Load() {
		s.mu.Lock()
		c := s.hangC
		s.mu.Unlock()
		select {
		case <-c:
		case <-r.Context().Done():
			return
		}
	}
	if s.refuse.Load() {
		writeError(w, http.StatusServiceUnavailable, "Base.1.8.ServiceTemporarilyUnavailable", "the service is temporarily unavailable")
		return
	}

	p := strings.TrimSuffix(r.URL.Path, "/")
	// The service root and the login are the only anonymous resources.
	switch {
	case p == root || p == "/redfish":
		if p == "/redfish" {
			writeJSON(w, http.StatusOK, map[string]any{"v1": root + "/"})
			return
		}
		s.serviceRoot(w)
		return
	case p == sessPath && r.Method == http.MethodPost && !s.cfg.NoSessions:
		s.login(w, r)
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="redfish"`)
		writeError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "no valid session or credentials")
		return
	}

	switch {
	case s.cfg.NoSessions && (p == root+"/SessionService" || strings.HasPrefix(p, root+"/SessionService/")):
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
	case p == root+"/SessionService":
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": root + "/SessionService", "@odata.type": "#SessionService.v1_1_8.SessionService",
			"Id": "SessionService", "Name": "Session Service", "ServiceEnabled": true, "SessionTimeout": 600,
			"Sessions": link(sessPath),
		})
	case p == sessPath && r.Method == http.MethodGet:
		s.mu.Lock()
		var ids []string
		for _, id := range s.sessions {
			ids = append(ids, sessPath+"/"+id)
		}
		s.mu.Unlock()
		writeCollection(w, sessPath, "#SessionCollection.SessionCollection", "Session Collection", ids)
	case strings.HasPrefix(p, sessPath+"/"):
		s.session(w, r, strings.TrimPrefix(p, sessPath+"/"))
	case p == root+"/Systems":
		members := []string{s.sysPath}
		if s.cfg.Baseboard {
			members = append(members, root+"/Systems/"+baseboardID)
		}
		writeCollection(w, p, "#ComputerSystemCollection.ComputerSystemCollection", "Computer System Collection", members)
	case s.cfg.Baseboard && p == root+"/Systems/"+baseboardID && r.Method == http.MethodGet:
		s.baseboard(w)
	case p == s.sysPath && r.Method == http.MethodGet:
		s.system(w)
	case p == s.sysPath && r.Method == http.MethodPatch:
		s.patchSystem(w, r)
	case p == s.sysPath+"/Actions/ComputerSystem.Reset" && r.Method == http.MethodPost:
		s.reset(w, r)
	case p == s.sysPath+"/Processors":
		var ids []string
		ids = append(ids, s.sysPath+"/Processors/CPU0")
		for i := 0; i < s.cfg.GPUs; i++ {
			ids = append(ids, fmt.Sprintf("%s/Processors/GPU%d", s.sysPath, i))
		}
		writeCollection(w, p, "#ProcessorCollection.ProcessorCollection", "Processors", ids)
	case strings.HasPrefix(p, s.sysPath+"/Processors/"):
		s.processor(w, strings.TrimPrefix(p, s.sysPath+"/Processors/"))
	case p == s.sysPath+"/EthernetInterfaces":
		var ids []string
		for i := range s.cfg.MACs {
			ids = append(ids, fmt.Sprintf("%s/EthernetInterfaces/%d", s.sysPath, i))
		}
		writeCollection(w, p, "#EthernetInterfaceCollection.EthernetInterfaceCollection", "Ethernet Interfaces", ids)
	case strings.HasPrefix(p, s.sysPath+"/EthernetInterfaces/"):
		s.ethernet(w, strings.TrimPrefix(p, s.sysPath+"/EthernetInterfaces/"))
	case p == s.sysPath+"/Storage":
		writeCollection(w, p, "#StorageCollection.StorageCollection", "Storage", []string{s.sysPath + "/Storage/1"})
	case p == s.sysPath+"/Storage/1":
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": p, "@odata.type": "#Storage.v1_9_0.Storage", "Id": "1", "Name": "NVMe",
			"Drives": []any{link(chPath + "/Drives/0")}, "Drives@odata.count": 1,
		})
	case p == chPath+"/Drives/0":
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": p, "@odata.type": "#Drive.v1_9_0.Drive", "Id": "0", "Name": "nvme0",
			"Model": "Emulated NVMe", "SerialNumber": s.cfg.Serial + "-D0", "CapacityBytes": int64(3840755982336),
			"MediaType": "SSD", "Protocol": "NVMe",
		})
	case p == fwPath && !s.cfg.NoSessions:
		var ids []string
		for _, f := range s.firmware() {
			ids = append(ids, fwPath+"/"+f.ID)
		}
		writeCollection(w, p, "#SoftwareInventoryCollection.SoftwareInventoryCollection", "Firmware Inventory Collection", ids)
	case strings.HasPrefix(p, fwPath+"/") && !s.cfg.NoSessions:
		s.firmwareItem(w, strings.TrimPrefix(p, fwPath+"/"))
	case p == root+"/UpdateService" && !s.cfg.NoSessions:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": p, "@odata.type": "#UpdateService.v1_8_0.UpdateService", "Id": "UpdateService", "Name": "Update Service",
			"ServiceEnabled": true, "Status": map[string]any{"State": "Enabled", "Health": "OK"},
			"FirmwareInventory": link(fwPath),
		})
	case p == root+"/Managers":
		writeCollection(w, p, "#ManagerCollection.ManagerCollection", "Manager Collection", []string{mgrPath})
	case p == mgrPath:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": mgrPath, "@odata.type": "#Manager.v1_10_0.Manager", "Id": "1", "Name": "Manager",
			"ManagerType": "BMC", "FirmwareVersion": s.cfg.FirmwareVersion, "Model": "EmuBMC",
			"Status":      map[string]any{"State": "Enabled", "Health": "OK"},
			"LogServices": link(mgrPath + "/LogServices"),
			"Links":       map[string]any{"ManagerForServers": []any{link(s.sysPath)}, "ManagerForChassis": []any{link(chPath)}},
		})
	case p == mgrPath+"/LogServices":
		writeCollection(w, p, "#LogServiceCollection.LogServiceCollection", "Log Services", []string{mgrPath + "/LogServices/SEL"})
	case p == mgrPath+"/LogServices/SEL":
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": p, "@odata.type": "#LogService.v1_1_3.LogService", "Id": "SEL", "Name": "System Event Log",
			"Entries": link(p + "/Entries"), "ServiceEnabled": true,
			"Actions": map[string]any{"#LogService.ClearLog": map[string]any{"target": p + "/Actions/LogService.ClearLog"}},
		})
	case p == mgrPath+"/LogServices/SEL/Actions/LogService.ClearLog" && r.Method == http.MethodPost:
		s.clearSEL(w)
	case p == mgrPath+"/LogServices/SEL/Entries":
		s.selEntries(w, p, "")
	case strings.HasPrefix(p, mgrPath+"/LogServices/SEL/Entries/"):
		s.selEntries(w, mgrPath+"/LogServices/SEL/Entries", strings.TrimPrefix(p, mgrPath+"/LogServices/SEL/Entries/"))
	case p == root+"/Chassis":
		writeCollection(w, p, "#ChassisCollection.ChassisCollection", "Chassis Collection", []string{chPath})
	case p == chPath:
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": chPath, "@odata.type": "#Chassis.v1_14_0.Chassis", "Id": "1", "Name": "Chassis",
			"ChassisType": "RackMount", "Manufacturer": s.cfg.Vendor, "Model": s.cfg.Model, "SerialNumber": s.cfg.Serial,
			"PowerState": s.powerString(),
			"Thermal":    link(chPath + "/Thermal"),
			"Power":      link(chPath + "/Power"),
			"Controls":   link(chPath + "/Controls"),
			"Links":      map[string]any{"ComputerSystems": []any{link(s.sysPath)}, "ManagedBy": []any{link(mgrPath)}},
		})
	case p == chPath+"/Thermal":
		s.thermal(w)
	case p == chPath+"/Power" && s.cfg.PowerLimit != "controls" && r.Method == http.MethodPatch:
		s.patchPower(w, r)
	case p == chPath+"/Power" && s.cfg.PowerLimit != "controls":
		s.powerReadings(w)
	case s.cfg.PowerLimit == "controls" && p == chPath+"/Controls":
		writeCollection(w, p, "#ControlCollection.ControlCollection", "Controls", []string{chPath + "/Controls/PowerLimit"})
	case s.cfg.PowerLimit == "controls" && p == chPath+"/Controls/PowerLimit":
		s.powerControl(w, r)
	default:
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no resource at "+r.URL.Path)
	}
}

func (s *Server) serviceRoot(w http.ResponseWriter) {
	if s.cfg.NoSessions {
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": root + "/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
			"Id": "RedvirtService", "Name": "Redvirt Service", "RedfishVersion": "1.5.0",
			"UUID":     "85775665-c110-4b85-8989-e6162170b3ec",
			"Systems":  link(root + "/Systems"),
			"Chassis":  link(root + "/Chassis"),
			"Managers": link(root + "/Managers"),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": root + "/", "@odata.type": "#ServiceRoot.v1_5_0.ServiceRoot",
		"Id": "RootService", "Name": "Root Service", "RedfishVersion": "1.6.0",
		"UUID":           "92384634-2938-2342-8820-489239905423",
		"Systems":        link(root + "/Systems"),
		"Chassis":        link(root + "/Chassis"),
		"Managers":       link(root + "/Managers"),
		"SessionService": link(root + "/SessionService"),
		"UpdateService":  link(root + "/UpdateService"),
		"Links":          map[string]any{"Sessions": link(sessPath)},
	})
}

func (s *Server) credentialsOK(user, pass string) bool {
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password))
	return u&p == 1
}

func (s *Server) authorized(r *http.Request) bool {
	if tok := r.Header.Get("X-Auth-Token"); tok != "" && !s.cfg.NoSessions {
		s.mu.Lock()
		_, ok := s.sessions[tok]
		s.mu.Unlock()
		return ok
	}
	if u, p, ok := r.BasicAuth(); ok {
		return s.credentialsOK(u, p)
	}
	return false
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	var req struct{ UserName, Password string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "malformed login body")
		return
	}
	if !s.credentialsOK(req.UserName, req.Password) {
		writeError(w, http.StatusUnauthorized, "Base.1.8.NoValidSession", "invalid credentials")
		return
	}
	tok := randHex(16)
	s.mu.Lock()
	s.nextSess++
	id := fmt.Sprint(s.nextSess)
	s.sessions[tok] = id
	s.mu.Unlock()
	w.Header().Set("X-Auth-Token", tok)
	w.Header().Set("Location", sessPath+"/"+id)
	writeJSON(w, http.StatusCreated, sessionBody(id, req.UserName))
}

func sessionBody(id, user string) map[string]any {
	return map[string]any{
		"@odata.id": sessPath + "/" + id, "@odata.type": "#Session.v1_3_0.Session",
		"Id": id, "Name": "User Session", "UserName": user,
	}
}

func (s *Server) session(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	var tok string
	for t, sid := range s.sessions {
		if sid == id {
			tok = t
		}
	}
	if tok != "" && r.Method == http.MethodDelete {
		delete(s.sessions, tok)
	}
	s.mu.Unlock()
	switch {
	case tok == "":
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no such session")
	case r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusOK, sessionBody(id, s.cfg.Username))
	}
}

// thermal answers the chassis Thermal resource: the inlet temperature and
// four fans, as the Redfish Thermal schema (still what most shipping BMCs
// serve next to the newer ThermalSubsystem).
func (s *Server) thermal(w http.ResponseWriter) {
	inlet := s.cfg.InletCelsius
	if inlet == 0 {
		inlet = 24
	}
	rpm := 4200
	if s.powerString() == "On" {
		rpm = 9600
	}
	ok := map[string]any{"State": "Enabled", "Health": "OK"}
	var fans []any
	for i := range 4 {
		fans = append(fans, map[string]any{
			"@odata.id": fmt.Sprintf("%s/Thermal#/Fans/%d", chPath, i), "MemberId": fmt.Sprint(i),
			"Name": fmt.Sprintf("Fan %d", i), "PhysicalContext": "Backplane", "Reading": rpm, "ReadingUnits": "RPM", "Status": ok,
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": chPath + "/Thermal", "@odata.type": "#Thermal.v1_7_0.Thermal", "Id": "Thermal", "Name": "Thermal",
		"Temperatures": []any{map[string]any{
			"@odata.id": chPath + "/Thermal#/Temperatures/0", "MemberId": "0", "Name": "Inlet Temp",
			"PhysicalContext": "Intake", "ReadingCelsius": inlet, "UpperThresholdCritical": 45, "Status": ok,
		}},
		"Fans": fans,
	})
}

// powerReadings answers the chassis Power resource: what the chassis
// draws (PowerControl) and its two power supplies.
func (s *Server) powerReadings(w http.ResponseWriter) {
	watts := s.cfg.WattsOn
	if watts == 0 {
		watts = 1000
	}
	if s.powerString() != "On" {
		watts *= 0.05
	}
	var psus []any
	for i := range 2 {
		psus = append(psus, map[string]any{
			"@odata.id": fmt.Sprintf("%s/Power#/PowerSupplies/%d", chPath, i), "MemberId": fmt.Sprint(i),
			"Name": fmt.Sprintf("PSU %d", i), "PowerCapacityWatts": 3000, "LineInputVoltage": 230,
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
		})
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": chPath + "/Power", "@odata.type": "#Power.v1_7_0.Power", "Id": "Power", "Name": "Power",
		"PowerControl": []any{map[string]any{
			"@odata.id": chPath + "/Power#/PowerControl/0", "MemberId": "0", "Name": "Chassis Power Control",
			"PowerConsumedWatts": watts, "PowerCapacityWatts": 6000,
			"PowerLimit": s.powerLimitJSON(),
		}},
		"PowerSupplies": psus,
	})
}

func (s *Server) powerString() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.on {
		return "On"
	}
	return "Off"
}

func (s *Server) systemName() string {
	if s.cfg.Baseboard {
		return hostSystemID
	}
	return "System"
}

// baseboard is the GPU baseboard of a GB300-like BMC: a ComputerSystem
// with no Reset action and no Boot object, which cannot be driven.
func (s *Server) baseboard(w http.ResponseWriter) {
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": root + "/Systems/" + baseboardID, "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
		"Id": baseboardID, "Name": baseboardID, "SystemType": "Physical",
		"Manufacturer": "NVIDIA", "Model": "GB300 NVL72 Baseboard", "PowerState": s.powerString(),
		"Status": map[string]any{"State": "Enabled", "Health": "OK"},
		"Links":  map[string]any{"Chassis": []any{link(chPath)}},
	})
}

func (s *Server) system(w http.ResponseWriter) {
	s.mu.Lock()
	boot := s.boot
	power := "Off"
	if s.on {
		power = "On"
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": s.sysPath, "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
		"Id": s.sysPath[len(root+"/Systems/"):], "Name": s.systemName(), "SystemType": "Physical",
		"Manufacturer": s.cfg.Vendor, "Model": s.cfg.Model, "SerialNumber": s.cfg.Serial,
		"BiosVersion": s.cfg.BIOSVersion, "PowerState": power,
		"Status": map[string]any{"State": "Enabled", "Health": "OK"},
		"Boot": map[string]any{
			"BootSourceOverrideTarget":                          boot.Target,
			"BootSourceOverrideEnabled":                         boot.Enabled,
			"BootSourceOverrideMode":                            boot.Mode,
			"BootSourceOverrideTarget@Redfish.AllowableValues":  []string{"None", "Pxe", "Hdd", "Cd", "BiosSetup", "Usb", "UefiHttp"},
			"BootSourceOverrideEnabled@Redfish.AllowableValues": []string{"Disabled", "Once", "Continuous"},
			"BootSourceOverrideMode@Redfish.AllowableValues":    []string{"Legacy", "UEFI"},
		},
		"Processors":         link(s.sysPath + "/Processors"),
		"EthernetInterfaces": link(s.sysPath + "/EthernetInterfaces"),
		"Storage":            link(s.sysPath + "/Storage"),
		"Actions": map[string]any{
			"#ComputerSystem.Reset": map[string]any{
				"target":                            s.sysPath + "/Actions/ComputerSystem.Reset",
				"ResetType@Redfish.AllowableValues": resetTypes,
			},
		},
		"Links": map[string]any{"Chassis": []any{link(chPath)}, "ManagedBy": []any{link(mgrPath)}},
	})
}

var (
	allowedTargets = map[string]bool{"None": true, "Pxe": true, "Hdd": true, "Cd": true, "BiosSetup": true, "Usb": true, "UefiHttp": true}
	allowedEnabled = map[string]bool{"Disabled": true, "Once": true, "Continuous": true}
	allowedModes   = map[string]bool{"Legacy": true, "UEFI": true}
)

func (s *Server) patchSystem(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Boot *struct {
			BootSourceOverrideTarget  *string
			BootSourceOverrideEnabled *string
			BootSourceOverrideMode    *string
		}
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "malformed PATCH body")
		return
	}
	if req.Boot == nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.PropertyUnknown", "only Boot can be patched")
		return
	}
	s.mu.Lock()
	nb := s.boot
	if v := req.Boot.BootSourceOverrideTarget; v != nil && *v != "" {
		nb.Target = *v
	}
	if v := req.Boot.BootSourceOverrideEnabled; v != nil && *v != "" {
		nb.Enabled = *v
		if nb.Enabled == "Once" && s.cfg.OnceAsContinuous {
			nb.Enabled = "Continuous"
		}
	}
	if v := req.Boot.BootSourceOverrideMode; v != nil && *v != "" {
		nb.Mode = *v
	}
	if !allowedTargets[nb.Target] || !allowedEnabled[nb.Enabled] || !allowedModes[nb.Mode] {
		s.mu.Unlock()
		writeError(w, http.StatusBadRequest, "Base.1.8.PropertyValueNotInList", fmt.Sprintf("unsupported boot override %+v", nb))
		return
	}
	revert := s.revertIn
	switch {
	case revert == 0:
		// Accepted and ignored: the PATCH "succeeds" but nothing changes.
	default:
		s.boot = nb
		if s.revertT != nil {
			s.revertT.Stop()
			s.revertT = nil
		}
		if revert > 0 {
			s.revertT = time.AfterFunc(revert, func() {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.boot = BootOverride{Target: "None", Enabled: "Disabled", Mode: nb.Mode}
			})
		}
	}
	s.mu.Unlock()
	if s.cfg.Hooks.OnBoot != nil && revert != 0 {
		s.cfg.Hooks.OnBoot(nb.Target)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) reset(w http.ResponseWriter, r *http.Request) {
	var req struct{ ResetType string }
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.MalformedJSON", "malformed reset body")
		return
	}
	s.mu.Lock()
	on := s.on
	s.resets = append(s.resets, req.ResetType)
	s.mu.Unlock()

	var steps []bool // power states to pass through, in order
	switch req.ResetType {
	case "On":
		steps = []bool{true}
	case "ForceOff", "GracefulShutdown":
		steps = []bool{false}
	case "PushPowerButton":
		steps = []bool{!on}
	case "ForceRestart", "GracefulRestart", "PowerCycle":
		if !on && req.ResetType != "PowerCycle" {
			writeError(w, http.StatusConflict, "Base.1.8.ActionNotSupported", "system is off: cannot restart")
			return
		}
		steps = []bool{false, true}
	case "Nmi":
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		writeError(w, http.StatusBadRequest, "Base.1.8.ActionParameterValueNotInList", "unknown ResetType "+req.ResetType)
		return
	}
	if err := s.setPower(steps[0]); err != nil {
		writeError(w, http.StatusInternalServerError, "Base.1.8.InternalError", err.Error())
		return
	}
	if len(steps) == 2 {
		if d := s.cfg.CycleOffTime; d > 0 {
			// The machine comes back on its own, like a real power cycle.
			time.AfterFunc(d, func() { _ = s.setPower(true) })
		} else if err := s.setPower(true); err != nil {
			writeError(w, http.StatusInternalServerError, "Base.1.8.InternalError", err.Error())
			return
		}
	}
	s.mu.Lock()
	s.addSELLocked("OK", "ComputerSystem.Reset "+req.ResetType)
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) setPower(on bool) error {
	if h := s.cfg.Hooks.OnPower; h != nil {
		if err := h(on); err != nil {
			return fmt.Errorf("power hook: %w", err)
		}
	}
	s.mu.Lock()
	if on && !s.on {
		s.lastBoot = s.boot.Target
	}
	if on && !s.on && s.boot.Enabled == "Once" {
		// A one-time override is used by the boot it applies to, and the
		// BMC then reports it gone, as real BMCs do.
		s.boot.Target, s.boot.Enabled = "None", "Disabled"
	}
	s.on = on
	s.mu.Unlock()
	return nil
}

func (s *Server) processor(w http.ResponseWriter, id string) {
	p := s.sysPath + "/Processors/" + id
	if id == "CPU0" {
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": p, "@odata.type": "#Processor.v1_7_0.Processor", "Id": id, "Name": id,
			"ProcessorType": "CPU", "Manufacturer": "AMD", "Model": "EPYC 9654", "TotalCores": 96, "TotalThreads": 192,
			"Status": map[string]any{"State": "Enabled", "Health": "OK"},
		})
		return
	}
	var n int
	if _, err := fmt.Sscanf(id, "GPU%d", &n); err != nil || n < 0 || n >= s.cfg.GPUs {
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no processor "+id)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": p, "@odata.type": "#Processor.v1_7_0.Processor", "Id": id, "Name": id,
		"ProcessorType": "GPU", "Manufacturer": "NVIDIA", "Model": "H100 SXM5 80GB",
		"SerialNumber": fmt.Sprintf("%s-G%d", s.cfg.Serial, n),
		"Status":       map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

func (s *Server) ethernet(w http.ResponseWriter, id string) {
	var n int
	if _, err := fmt.Sscanf(id, "%d", &n); err != nil || n < 0 || n >= len(s.cfg.MACs) {
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no interface "+id)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": s.sysPath + "/EthernetInterfaces/" + id, "@odata.type": "#EthernetInterface.v1_6_0.EthernetInterface",
		"Id": id, "Name": "eth" + id, "MACAddress": s.cfg.MACs[n], "SpeedMbps": 100000,
		"Status": map[string]any{"State": "Enabled", "Health": "OK"},
	})
}

// selEntries serves the SEL collection (id == "") or one entry.
func (s *Server) selEntries(w http.ResponseWriter, p, id string) {
	s.mu.Lock()
	var members []any
	for _, e := range s.sel {
		m := map[string]any{
			"@odata.id": p + "/" + e.ID, "@odata.type": "#LogEntry.v1_6_0.LogEntry",
			"Id": e.ID, "Name": "SEL entry " + e.ID, "EntryType": "SEL", "Severity": e.Severity,
			"Created": e.Created, "Message": e.Message, "Description": "System Event Log entry",
		}
		if id == e.ID {
			s.mu.Unlock()
			writeJSON(w, http.StatusOK, m)
			return
		}
		members = append(members, m)
	}
	s.mu.Unlock()
	if id != "" {
		writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no SEL entry "+id)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": p, "@odata.type": "#LogEntryCollection.LogEntryCollection", "Name": "SEL entries",
		"Members": members, "Members@odata.count": len(members),
	})
}

// --- helpers ---

// fwPath is the FirmwareInventory collection. The sessionless flavour
// (modelled on sushy-tools and small OEM firmware) has no UpdateService:
// clients fall back to the manager's and the system's versions.
const fwPath = root + "/UpdateService/FirmwareInventory"

// firmware is every component the FirmwareInventory lists: the BMC and
// the BIOS first, as real BMCs list them, then the configured extras.
func (s *Server) firmware() []Firmware {
	return append([]Firmware{{ID: "BMC", Name: "BMC Firmware", Version: s.cfg.FirmwareVersion},
		{ID: "BIOS", Name: "BIOS", Version: s.cfg.BIOSVersion}}, s.cfg.Firmware...)
}

// firmwareItem is one SoftwareInventory member, shaped like the DMTF
// mockups and real BMCs: Id, Name, Version, Updateable, Status, and a
// RelatedItem link to what it runs on.
func (s *Server) firmwareItem(w http.ResponseWriter, id string) {
	for _, f := range s.firmware() {
		if f.ID != id {
			continue
		}
		related := chPath
		switch f.ID {
		case "BMC":
			related = mgrPath
		case "BIOS":
			related = s.sysPath
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"@odata.id": fwPath + "/" + f.ID, "@odata.type": "#SoftwareInventory.v1_4_0.SoftwareInventory",
			"Id": f.ID, "Name": f.Name, "Version": f.Version, "Updateable": true, "Manufacturer": s.cfg.Vendor,
			"Status":      map[string]any{"State": "Enabled", "Health": "OK"},
			"RelatedItem": []any{link(related)}, "RelatedItem@odata.count": 1,
		})
		return
	}
	writeError(w, http.StatusNotFound, "Base.1.8.ResourceMissingAtURI", "no firmware "+id)
}

func link(id string) map[string]any { return map[string]any{"@odata.id": id} }

func writeCollection(w http.ResponseWriter, id, typ, name string, members []string) {
	m := make([]any, 0, len(members))
	for _, x := range members {
		m = append(m, link(x))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": id, "@odata.type": typ, "Name": name,
		"Members": m, "Members@odata.count": len(m),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("OData-Version", "4.0")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with the Redfish error envelope (DSP0266 §9.6), which
// gofish decodes into common.Error.
func writeError(w http.ResponseWriter, code int, msgID, msg string) {
	writeJSON(w, code, map[string]any{
		"error": map[string]any{
			"code": msgID, "message": msg,
			"@Message.ExtendedInfo": []any{map[string]any{"MessageId": msgID, "Message": msg, "Severity": "Critical"}},
		},
	})
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
