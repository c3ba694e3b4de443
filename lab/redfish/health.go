package redfish

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// The emulator's health resources beyond the readings in server.go: SEL
// entries of any severity, their ClearLog action, and a power cap that is
// kept and read back.

// AddSEL appends an entry to the SEL, as the BMC would log a hardware
// event. severity is Redfish's: OK, Warning or Critical.
func (s *Server) AddSEL(severity, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addSELLocked(severity, message)
}

// SEL returns the messages of the entries in the SEL.
func (s *Server) SEL() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.sel))
	for _, e := range s.sel {
		out = append(out, e.Message)
	}
	return out
}

func (s *Server) addSELLocked(severity, message string) {
	s.selNext++ // IDs are never reused, also after a clear
	s.sel = append(s.sel, selEntry{ID: fmt.Sprint(s.selNext), Created: time.Now().UTC().Format(time.RFC3339),
		Message: message, Severity: severity})
}

// clearSEL is LogService.ClearLog: the log is emptied, and says so in
// its one new entry, as BMCs do.
func (s *Server) clearSEL(w http.ResponseWriter) {
	s.mu.Lock()
	s.sel = nil
	s.addSELLocked("OK", "Log cleared")
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// PowerLimitW is the power cap last set, 0 when none.
func (s *Server) PowerLimitW() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limitW
}

func (s *Server) powerLimitJSON() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.PowerLimit == "none" {
		return nil
	}
	var limit any // null: no cap set
	if s.limitW > 0 {
		limit = s.limitW
	}
	return map[string]any{"LimitInWatts": limit, "LimitException": "LogEventOnly"}
}

// patchPower sets PowerControl[0].PowerLimit.LimitInWatts.
func (s *Server) patchPower(w http.ResponseWriter, r *http.Request) {
	if s.cfg.PowerLimit == "none" {
		writeError(w, http.StatusMethodNotAllowed, "Base.1.8.OperationNotAllowed", "the power limit cannot be set on this chassis")
		return
	}
	var req struct {
		PowerControl []struct {
			PowerLimit *struct {
				LimitInWatts *float64
			}
		}
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil ||
		len(req.PowerControl) == 0 || req.PowerControl[0].PowerLimit == nil || req.PowerControl[0].PowerLimit.LimitInWatts == nil {
		writeError(w, http.StatusBadRequest, "Base.1.8.PropertyMissing", "want PowerControl[0].PowerLimit.LimitInWatts")
		return
	}
	s.setLimit(w, *req.PowerControl[0].PowerLimit.LimitInWatts)
}

// powerControl serves the Power Control resource of the "controls" mode
// (Redfish Control schema): GET and a PATCH of SetPoint.
func (s *Server) powerControl(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPatch {
		var req struct{ SetPoint *float64 }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.SetPoint == nil {
			writeError(w, http.StatusBadRequest, "Base.1.8.PropertyMissing", "want SetPoint")
			return
		}
		s.setLimit(w, *req.SetPoint)
		return
	}
	s.mu.Lock()
	var sp any
	if s.limitW > 0 {
		sp = s.limitW
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"@odata.id": chPath + "/Controls/PowerLimit", "@odata.type": "#Control.v1_3_0.Control", "Id": "PowerLimit",
		"Name": "System Power Limit", "ControlType": "Power", "SetPoint": sp, "SetPointUnits": "W",
		"ControlMode": "Automatic", "AllowableMin": 500, "AllowableMax": 6000,
	})
}

func (s *Server) setLimit(w http.ResponseWriter, watts float64) {
	if watts < 500 || watts > 6000 {
		writeError(w, http.StatusBadRequest, "Base.1.8.PropertyValueOutOfRange", fmt.Sprintf("power limit %.0f W out of range 500-6000", watts))
		return
	}
	s.mu.Lock()
	s.limitW = watts
	s.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}
