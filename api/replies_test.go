package api

import (
	"encoding/json"
	"testing"
)

// TestOpenAPINamesEveryReplyOfARoute: machine.power answers a Job, or a
// PowerStatus to the action "status"; the document says both (oneOf), and
// the typed client accepts both and nothing else.
func TestOpenAPINamesEveryReplyOfARoute(t *testing.T) {
	f := newFixture(t)
	status, data := f.do("", "GET", "/api/v1/openapi.json", nil)
	if status != 200 {
		t.Fatal(status)
	}
	var doc struct {
		Paths map[string]map[string]struct {
			Responses map[string]struct {
				Content map[string]struct {
					Schema struct {
						Ref   string              `json:"$ref"`
						OneOf []map[string]string `json:"oneOf"`
					} `json:"schema"`
				} `json:"content"`
			} `json:"responses"`
		} `json:"paths"`
		Components struct {
			Schemas map[string]json.RawMessage `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	schema := doc.Paths["/api/v1/machines/{name}/power"]["post"].Responses["200"].Content["application/json"].Schema
	var refs []string
	for _, s := range schema.OneOf {
		refs = append(refs, s["$ref"])
	}
	want := []string{"#/components/schemas/Job", "#/components/schemas/PowerStatus"}
	if len(refs) != 2 || refs[0] != want[0] || refs[1] != want[1] {
		t.Fatalf("machine.power's reply: oneOf %v (ref %q), want %v", refs, schema.Ref, want)
	}
	if doc.Components.Schemas["PowerStatus"] == nil {
		t.Error("PowerStatus has no schema in components")
	}
	// A route with one reply keeps its plain reference.
	if ref := doc.Paths["/api/v1/events"]["get"].Responses["200"].Content["application/json"].Schema.Ref; ref != "#/components/schemas/EventPage" {
		t.Errorf("event.list's reply: %q", ref)
	}
	if err := op[PowerRequest, PowerStatus]("machine.power").check(); err != nil {
		t.Errorf("the typed client refuses machine.power's PowerStatus: %v", err)
	}
	if err := op[PowerRequest, Machine]("machine.power").check(); err == nil {
		t.Error("the typed client accepts a reply machine.power never gives")
	}
}
