package api

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// TLSOptions say how the client trusts the service's admin listener.
// Either may be empty; with both, the certificate must chain to the CA and
// match the pin.
type TLSOptions struct {
	// Fingerprint pins the service's certificate: the SHA-256 of its DER
	// encoding, in hex (colons and case do not matter). The certificate's
	// names and issuer are then not checked: the pin is the trust.
	Fingerprint string
	// CAFile is a PEM bundle of the CAs the service's certificate must
	// chain to, instead of the system's.
	CAFile string
}

// PinMismatch is a service whose certificate is not the pinned one.
type PinMismatch struct {
	Want, Got string
}

func (e *PinMismatch) Error() string {
	return fmt.Sprintf("the service's TLS certificate has SHA-256 fingerprint %s, not the pinned %s: it is another service, or its certificate was replaced", e.Got, e.Want)
}

// ParseFingerprint normalises a SHA-256 certificate fingerprint: 64 hex
// digits, optionally separated by colons, optionally prefixed "sha256:".
func ParseFingerprint(s string) (string, error) {
	f := strings.ToLower(strings.TrimSpace(s))
	f = strings.TrimPrefix(f, "sha256:")
	f = strings.ReplaceAll(f, ":", "")
	if b, err := hex.DecodeString(f); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("TLS fingerprint %q is not a SHA-256 fingerprint (64 hex digits, colons allowed)", s)
	}
	return f, nil
}

// UseTLS makes the client trust the service as o says.
func (c *Client) UseTLS(o TLSOptions) error {
	tr, ok := c.HTTP.Transport.(*http.Transport)
	if !ok {
		return errors.New("client transport is not an *http.Transport")
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("CA file %s holds no PEM certificate", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if o.Fingerprint != "" {
		want, err := ParseFingerprint(o.Fingerprint)
		if err != nil {
			return err
		}
		// The pin replaces name and chain checks unless a CA was given too.
		cfg.InsecureSkipVerify = o.CAFile == ""
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &PinMismatch{Want: want, Got: "(none)"}
			}
			sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
			if got := hex.EncodeToString(sum[:]); got != want {
				return &PinMismatch{Want: want, Got: got}
			}
			return nil
		}
	}
	tr.TLSClientConfig = cfg
	return nil
}
