package service

import (
	"log/slog"
	"net"
	"testing"
)

// The rule is decided on the address alone, so it is tested without
// binding anything but loopback.
func TestAdminTLSRule(t *testing.T) {
	lo := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8280}
	lo6 := &net.TCPAddr{IP: net.IPv6loopback, Port: 8280}
	public := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 5), Port: 8280}
	any := &net.TCPAddr{IP: net.IPv4zero, Port: 8280}
	for _, tc := range []struct {
		name string
		addr net.Addr
		cfg  TLSConfig
		tls  bool
	}{
		{"loopback is plain", lo, TLSConfig{}, false},
		{"IPv6 loopback is plain", lo6, TLSConfig{}, false},
		{"loopback with Force", lo, TLSConfig{Force: true}, true},
		{"a routable address needs TLS", public, TLSConfig{}, true},
		{"the wildcard address needs TLS", any, TLSConfig{}, true},
		{"Insecure turns it off", public, TLSConfig{Insecure: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, info, err := adminTLS(tc.cfg, t.TempDir(), tc.addr, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			if (cfg != nil) != tc.tls || (info != nil) != tc.tls {
				t.Fatalf("TLS %v, want %v", cfg != nil, tc.tls)
			}
		})
	}
}
