package backup

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/metalhall/metalhall/inventory/seal"
)

// MinPassphrase is the shortest passphrase accepted for a backup.
const MinPassphrase = 12

// kdf are argon2id's costs. The defaults are RFC 9106's second
// recommendation (t=3, 64 MiB, p=4): a guess costs 64 MiB and a few
// hundred milliseconds, for whoever holds a copy of the archive.
type kdf struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

var defaultKDF = kdf{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// What a restore accepts: an archive cannot make it spend more than
// this (a crafted one could otherwise ask for terabytes).
const (
	maxKDFTime   = 16
	maxKDFMemory = 1 << 20 // KiB: 1 GiB
)

// sealedKey is the member SealedKeyName: the sealing key under AES-256-GCM
// with a key derived from the passphrase by argon2id.
type sealedKey struct {
	KDF        string `json:"kdf"` // "argon2id"
	Params     kdf    `json:"params"`
	Salt       []byte `json:"salt"`
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// keyAAD binds the ciphertext to its use.
var keyAAD = []byte("metalhall backup: seal.key v1")

// CheckPassphrase refuses a passphrase too short to protect the key.
func CheckPassphrase(p []byte) error {
	if n := utf8.RuneCount(p); n < MinPassphrase {
		return fmt.Errorf("the passphrase has %d characters: use at least %d", n, MinPassphrase)
	}
	return nil
}

func passphraseAEAD(pass, salt []byte, p kdf) (cipher.AEAD, error) {
	k := argon2.IDKey(pass, salt, p.Time, p.MemoryKiB, p.Threads, 32)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// encryptKey seals key under pass.
func encryptKey(key, pass []byte, p kdf) ([]byte, error) {
	if err := CheckPassphrase(pass); err != nil {
		return nil, err
	}
	if len(key) != seal.KeySize {
		return nil, fmt.Errorf("sealing key has %d bytes, want %d", len(key), seal.KeySize)
	}
	sk := sealedKey{KDF: "argon2id", Params: p, Salt: make([]byte, 16)}
	if _, err := rand.Read(sk.Salt); err != nil {
		return nil, err
	}
	aead, err := passphraseAEAD(pass, sk.Salt, p)
	if err != nil {
		return nil, err
	}
	sk.Nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(sk.Nonce); err != nil {
		return nil, err
	}
	sk.Ciphertext = aead.Seal(nil, sk.Nonce, key, keyAAD)
	return json.Marshal(sk)
}

// decryptKey opens a sealed key member with pass.
func decryptKey(data, pass []byte) ([]byte, error) {
	var sk sealedKey
	if err := json.Unmarshal(data, &sk); err != nil {
		return nil, &FormatError{Msg: fmt.Sprintf("%s: %v", SealedKeyName, err)}
	}
	p := sk.Params
	if sk.KDF != "argon2id" || p.Time == 0 || p.Time > maxKDFTime || p.MemoryKiB < 8 || p.MemoryKiB > maxKDFMemory || p.Threads == 0 || len(sk.Salt) < 16 {
		return nil, &FormatError{Msg: fmt.Sprintf("%s: key derivation %q with %+v is not one this metalhall uses", SealedKeyName, sk.KDF, p)}
	}
	aead, err := passphraseAEAD(pass, sk.Salt, p)
	if err != nil {
		return nil, err
	}
	if len(sk.Nonce) != aead.NonceSize() {
		return nil, &FormatError{Msg: SealedKeyName + ": bad nonce"}
	}
	key, err := aead.Open(nil, sk.Nonce, sk.Ciphertext, keyAAD)
	if err != nil {
		return nil, ErrWrongPassphrase
	}
	if len(key) != seal.KeySize {
		return nil, &FormatError{Msg: fmt.Sprintf("%s holds a %d-byte key, want %d", SealedKeyName, len(key), seal.KeySize)}
	}
	return key, nil
}
