// Package seal keeps secrets (BMC passwords) sealed at rest with the
// service's 256-bit key, using AES-256-GCM. The key lives in a file of its
// own (mode 0600) in the data dir, never in the database, so a copy of the
// database alone reveals no password.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/metalhall/metalhall/internal/atomicfile"
)

// KeySize is the key length in bytes (AES-256).
const KeySize = 32

// version prefixes every sealed value so the format can change later.
const version byte = 1

// Sealer seals and opens secrets with one key.
type Sealer struct{ aead cipher.AEAD }

// New returns a Sealer for a 32-byte key.
func New(key []byte) (*Sealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("sealing key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: aead}, nil
}

// LoadOrCreateKey reads the key at path, or creates a new random one there
// (mode 0600) when the file does not exist yet.
func LoadOrCreateKey(path string) ([]byte, bool, error) {
	key, err := os.ReadFile(path)
	if err == nil {
		if len(key) != KeySize {
			return nil, false, fmt.Errorf("sealing key %s: expected %d bytes, found %d: restore it from backup", path, KeySize, len(key))
		}
		return key, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("sealing key: %w", err)
	}
	key = make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, false, err
	}
	// Whole or not at all, and never over an existing key: a crash while
	// creating it must not leave a short key file behind.
	err = atomicfile.WriteFile(path, key, atomicfile.Options{Perm: 0o600, Exclusive: true})
	if atomicfile.IsExist(err) {
		return LoadOrCreateKey(path) // another process created it first
	}
	if err != nil {
		return nil, false, fmt.Errorf("sealing key: %w", err)
	}
	return key, true, nil
}

// Seal encrypts plaintext; associated binds the ciphertext to its use (for
// example "bmc/gpu-a01-07"), so a sealed value cannot be moved to another
// record and opened there.
func (s *Sealer) Seal(plaintext, associated []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	out := append([]byte{version}, nonce...)
	return s.aead.Seal(out, nonce, plaintext, associated), nil
}

// ErrOpen is returned for a sealed value that does not open with this key.
var ErrOpen = errors.New("sealed secret does not open with this key (wrong key or tampered data)")

// Open decrypts a value made by Seal with the same associated data.
func (s *Sealer) Open(sealed, associated []byte) ([]byte, error) {
	ns := s.aead.NonceSize()
	if len(sealed) < 1+ns+s.aead.Overhead() || sealed[0] != version {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], associated)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
