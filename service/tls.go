package service

import (
	"github.com/metalhall/metalhall/internal/atomicfile"

	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// TLSConfig says how the admin listener is secured.
//
// The rule: the admin listener serves TLS unless it is bound to a loopback
// address — where only this machine can reach it, and tests and the demo
// stay simple — or Insecure is set. Force (or an operator's certificate)
// turns TLS on for loopback too. Without CertFile the service generates a
// self-signed certificate at first start into the data dir and keeps it;
// its SHA-256 fingerprint is logged and written to FingerprintFile for the
// CLI to pin.
type TLSConfig struct {
	CertFile, KeyFile string
	Force             bool
	Insecure          bool
}

// Files of the generated certificate, in the data dir.
const (
	GeneratedCertFile = "tls.crt"
	GeneratedKeyFile  = "tls.key"
	// FingerprintFile holds the SHA-256 fingerprint of the admin
	// listener's certificate (hex), next to admin.token.
	FingerprintFile = "tls.fingerprint"
)

// TLSInfo describes the certificate the admin listener serves.
type TLSInfo struct {
	// Fingerprint is the SHA-256 of the leaf certificate (DER), lowercase
	// hex: what `--tls-fingerprint` pins.
	Fingerprint string
	CertFile    string
	Generated   bool
}

// Fingerprint is the SHA-256 fingerprint of a DER certificate as the CLI
// pins it.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// isLoopback reports whether addr is a loopback address (127.0.0.0/8, ::1).
func isLoopback(addr net.Addr) bool {
	if a, ok := addr.(*net.TCPAddr); ok {
		return a.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// adminTLS decides whether the admin listener serves TLS and returns its
// configuration (nil: plain HTTP).
func adminTLS(c TLSConfig, dataDir string, addr net.Addr, log *slog.Logger) (*tls.Config, *TLSInfo, error) {
	useTLS := c.CertFile != "" || c.Force || (!isLoopback(addr) && !c.Insecure)
	if !useTLS {
		if !isLoopback(addr) {
			log.Warn("the admin API is served over plain HTTP on a non-loopback address: tokens cross the network in the clear", "listen", addr.String())
		}
		// No stale fingerprint for a CLI to pin against a plain listener.
		if err := os.Remove(filepath.Join(dataDir, FingerprintFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("removing the old TLS fingerprint: %w", err)
		}
		return nil, nil, nil
	}
	info := &TLSInfo{CertFile: c.CertFile}
	certFile, keyFile := c.CertFile, c.KeyFile
	if certFile == "" {
		certFile, keyFile = filepath.Join(dataDir, GeneratedCertFile), filepath.Join(dataDir, GeneratedKeyFile)
		info.CertFile = certFile
		if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
			if err := generateCert(certFile, keyFile); err != nil {
				return nil, nil, fmt.Errorf("generating the admin TLS certificate: %w", err)
			}
			info.Generated = true
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("admin TLS certificate %s with key %s: %w", certFile, keyFile, err)
	}
	info.Fingerprint = Fingerprint(cert.Certificate[0])
	fpPath := filepath.Join(dataDir, FingerprintFile)
	if err := atomicfile.WriteFile(fpPath, []byte(info.Fingerprint+"\n"), atomicfile.Options{Perm: 0o644}); err != nil {
		return nil, nil, fmt.Errorf("writing the TLS fingerprint: %w", err)
	}
	if info.Generated {
		log.Info("generated a self-signed admin TLS certificate: pin it with METALHALL_TLS_FINGERPRINT=$(cat "+fpPath+")",
			"cert", certFile, "sha256", info.Fingerprint)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, info, nil
}

// generateCert writes a self-signed ECDSA P-256 certificate for the admin
// listener, valid ten years. Clients pin its fingerprint, so its names
// matter only to clients that trust it as a CA (--ca-file): it names
// localhost, the loopback addresses and this host's name.
func generateCert(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	names := []string{"localhost"}
	if hostname != "" && hostname != "localhost" {
		names = append(names, hostname)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "metalhall admin API", Organization: []string{"metalhall"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	// The key first: a certificate without its key would be loaded next
	// time and fail.
	if err := atomicfile.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), atomicfile.Options{Perm: 0o600}); err != nil {
		return err
	}
	return atomicfile.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), atomicfile.Options{Perm: 0o644})
}
