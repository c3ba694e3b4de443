package api

import (
	"errors"

	"gopkg.in/yaml.v3"

	"github.com/metalhall/metalhall/inventory"
)

// cableLines returns where each entry of a machine's `cabling:` list
// starts, from the machine's YAML mapping node.
func cableLines(machine *yaml.Node) []int {
	if machine.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(machine.Content); i += 2 {
		if machine.Content[i].Value != "cabling" {
			continue
		}
		var lines []int
		for _, c := range machine.Content[i+1].Content {
			lines = append(lines, c.Line)
		}
		return lines
	}
	return nil
}

// cableLine is the manifest line an error about the machine points at:
// the cable's own line when the error names one of its cables, else the
// machine's.
func (mm ManifestMachine) cableLine(err error) int {
	var ce *inventory.CableError
	if errors.As(err, &ce) && ce.Index < len(mm.cableLines) {
		return mm.cableLines[ce.Index]
	}
	return mm.line
}
