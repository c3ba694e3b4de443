package netboot

import (
	"bytes"
	"fmt"
	"net/url"
	"path"
	"strings"
	"text/template"
)

// Templates are the iPXE script templates, one per purpose. Each gets a
// ScriptData. Nil fields take the defaults.
type Templates struct {
	Discovery *template.Template
	Provision *template.Template
	Local     *template.Template
}

// ScriptData is what a script template sees.
type ScriptData struct {
	MAC         string
	Kind        string
	Kernel      string   // URL
	Initrds     []string // URLs
	InitrdNames []string // the names iPXE gives the initrds (last path element)
	// Cmdline is the Booter's command line prefixed with initrd=NAME for
	// each initrd. Debian's iPXE under UEFI does not hand initrds to the
	// kernel's EFI stub by itself: the stub loads them by name, so without
	// initrd= the kernel panics ("Unable to mount root fs"). Under BIOS
	// the kernel ignores initrd= (it is the boot loader's parameter).
	Cmdline string
}

// The default scripts. On failure they exit to the firmware, which moves
// on to its next boot device or retries the network.
const (
	kernelScript = `#!ipxe
echo metalhall: {{.Kind}} boot of {{.MAC}}
kernel {{.Kernel}} {{.Cmdline}} || goto failed
{{range .Initrds}}initrd {{.}} || goto failed
{{end}}boot || goto failed
:failed
echo metalhall: {{.Kind}} boot of {{.MAC}} failed
exit 1
`
	localScript = `#!ipxe
echo metalhall: {{.MAC}} boots from its local disk
iseq ${platform} efi && goto efi || goto bios
:efi
exit 0
:bios
sanboot --no-describe --drive 0x80 || exit 1
`
)

var (
	defaultKernelTmpl = template.Must(template.New("kernel").Parse(kernelScript))
	defaultLocalTmpl  = template.Must(template.New("local").Parse(localScript))
)

func (t Templates) withDefaults() Templates {
	if t.Discovery == nil {
		t.Discovery = defaultKernelTmpl
	}
	if t.Provision == nil {
		t.Provision = defaultKernelTmpl
	}
	if t.Local == nil {
		t.Local = defaultLocalTmpl
	}
	return t
}

// safeScriptText refuses anything that could break out of one iPXE
// script line: control bytes (newlines would inject commands).
func safeScriptText(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// safeURL accepts absolute http(s) URLs without whitespace.
func safeURL(s string) (*url.URL, bool) {
	if s == "" || !safeScriptText(s) || strings.ContainsAny(s, " \t") {
		return nil, false
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, false
	}
	return u, true
}

// RenderScript renders the iPXE script of b for mac.
func (t Templates) RenderScript(mac string, b Boot) ([]byte, error) {
	t = t.withDefaults()
	if b.Script != "" {
		return []byte(b.Script), nil
	}
	data := ScriptData{MAC: mac, Kind: b.Kind.String()}
	var tmpl *template.Template
	switch b.Kind {
	case BootLocal:
		tmpl = t.Local
	case BootDiscovery, BootProvision:
		tmpl = t.Discovery
		if b.Kind == BootProvision {
			tmpl = t.Provision
		}
		if _, ok := safeURL(b.Kernel); !ok {
			return nil, fmt.Errorf("script for %s: kernel URL %q is not an absolute http(s) URL", mac, b.Kernel)
		}
		if !safeScriptText(b.Cmdline) {
			return nil, fmt.Errorf("script for %s: kernel command line holds control characters", mac)
		}
		data.Kernel = b.Kernel
		var cmd []string
		for _, ird := range b.Initrds {
			u, ok := safeURL(ird)
			if !ok {
				return nil, fmt.Errorf("script for %s: initrd URL %q is not an absolute http(s) URL", mac, ird)
			}
			name := path.Base(u.Path)
			data.Initrds = append(data.Initrds, ird)
			data.InitrdNames = append(data.InitrdNames, name)
			cmd = append(cmd, "initrd="+name)
		}
		if b.Cmdline != "" {
			cmd = append(cmd, b.Cmdline)
		}
		data.Cmdline = strings.Join(cmd, " ")
	default:
		return nil, fmt.Errorf("script for %s: nothing to boot (%s)", mac, b.Kind)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, data); err != nil {
		return nil, fmt.Errorf("script for %s: rendering %s template: %w", mac, b.Kind, err)
	}
	return buf.Bytes(), nil
}
