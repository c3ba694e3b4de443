package inventory

// Sealer encrypts secrets at rest; *seal.Sealer is one. associated is
// authenticated but not stored: a sealed value opens only with the same.
type Sealer interface {
	Seal(plaintext, associated []byte) ([]byte, error)
	Open(sealed, associated []byte) ([]byte, error)
}

// Credential is a secret sealed at rest: Ref is where the store keeps it,
// and also the AEAD associated data it is sealed with, so a sealed value
// copied into another record does not open there. This is the one place
// that chooses both; callers ask for a credential, never build a ref.
type Credential struct {
	Ref string
}

// BMCCredential is the credential of a machine's BMC password.
func BMCCredential(machine string) Credential { return Credential{Ref: "bmc/" + machine} }

// Credential is the machine's BMC password as recorded (the zero
// Credential when it has none).
func (b BMC) Credential() Credential { return Credential{Ref: b.SecretRef} }

// Seal seals plaintext for this credential.
func (c Credential) Seal(s Sealer, plaintext []byte) ([]byte, error) {
	return s.Seal(plaintext, []byte(c.Ref))
}

// Open opens what Seal sealed for this same credential.
func (c Credential) Open(s Sealer, sealed []byte) ([]byte, error) {
	return s.Open(sealed, []byte(c.Ref))
}
