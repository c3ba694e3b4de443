// Package backup is metalhall's backup archive and its offline restore.
//
// An archive is one tar stream holding what a restore needs: the database,
// the image blobs with their block maps (or, with WithoutImages, only the
// list of the blobs the catalogue names), the hardware profiles (version 2
// on), and the sealing key, the latter only encrypted under an operator's
// passphrase (argon2id + AES-256-GCM). The agent's boot environment is not
// in it: it is large and rebuilt from a kernel with 'bootenv build'; the
// manifest records its files' checksums, so a restore can say when the
// data dir lacks it or holds another one.
// Its first member is a manifest that gives every other member's size and
// sha256, so a restore knows what to expect before it reads a byte of it,
// and checks every byte against it before it writes anything into the
// data dir.
//
// The archive is written as a stream, with memory bounded whatever the
// size of the images: the database is copied to a temp file first (its
// checksum must be in the manifest), the blobs are streamed from the store
// and checked against their names on the way.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
)

// Format and Version name the archive layout this code writes and reads.
const (
	Format = "metalhall-backup"
	// Version 2 added the hardware profiles and the boot environment's
	// checksums; a version 1 archive is read as having neither.
	Version = 2
)

// Names of the members, and of the files they become in a data dir.
const (
	ManifestName  = "manifest.json"
	DBName        = "metalhall.db" // DATA_DIR/metalhall.db
	SealedKeyName = "seal.key.enc" // becomes DATA_DIR/seal.key, decrypted
	KeyFile       = "seal.key"
	ImagesDir     = "images"   // image members are named images/blobs/sha256/…
	ProfilesDir   = "profiles" // DATA_DIR/profiles/NAME.yaml, members of the same name
	BootenvDir    = "bootenv"  // DATA_DIR/bootenv: recorded, never archived
)

// maxProfile bounds one profile read into memory at backup and restore:
// a profile is a page of YAML, its acceptance suite included.
const maxProfile = 1 << 20

// maxManifest bounds the manifest a restore reads into memory.
const maxManifest = 64 << 20

// Manifest is the archive's first member.
type Manifest struct {
	Format           string    `json:"format"`
	Version          int       `json:"version"`
	CreatedAt        time.Time `json:"created_at"`
	MetalhallVersion string    `json:"metalhall_version,omitempty"`
	// Members are the archive's other members, in the order they follow.
	Members []Member `json:"members"`
	// Images is the catalogue as the database in the archive holds it,
	// and whether each image's blob is in the archive.
	Images []Image `json:"images"`
	// WithoutImages: the blobs were left out on purpose; a restore finds
	// them in the data dir or reports them missing.
	WithoutImages bool `json:"without_images"`
	// SealKey says whether the sealing key is in the archive (encrypted
	// under the operator's passphrase). Without it, the BMC passwords and
	// the sealed SSH keys and user data of the database do not open after
	// a restore, unless the data dir keeps the original seal.key.
	SealKey bool `json:"seal_key"`
	// Profiles are the hardware profiles in the archive (members
	// profiles/NAME.yaml), each with what was wrong with it at backup
	// time, if anything. Nil in a version 1 archive, which has none.
	Profiles []Profile `json:"profiles"`
	// Bootenv are the boot environment's files as they were in the data
	// dir (names relative to bootenv/). Not members: a restore compares
	// them with the data dir it restores into.
	Bootenv []Member `json:"bootenv"`
}

// Profile is one hardware profile as the manifest records it; its bytes
// and checksum are those of its member.
type Profile struct {
	Name string `json:"name"`
	// Problem: it did not pass provisioner.ParseProfile at backup time
	// (a file dropped in by hand); a restore refuses it unless allowed.
	Problem string `json:"problem,omitempty"`
}

// ProfileMember is the member name of a profile.
func ProfileMember(name string) string { return ProfilesDir + "/" + name + ".yaml" }

// Member is one file of the archive.
type Member struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Image is one catalogue entry as the manifest records it.
type Image struct {
	Ref    string `json:"ref"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// InArchive: its blob (and block map) are members.
	InArchive bool `json:"in_archive"`
	// MissingAtBackup: the catalogue named the blob, but the service's
	// image store did not have it when the backup was taken.
	MissingAtBackup bool `json:"missing_at_backup,omitempty"`
}

// Bytes is the sum of the members' sizes.
func (m *Manifest) Bytes() int64 {
	var n int64
	for _, mb := range m.Members {
		n += mb.Size
	}
	return n
}

// check validates a manifest read from an archive: its format, and that
// every member is one this version writes, named as it would name it,
// exactly once.
func (m *Manifest) check() (map[string]Member, error) {
	if m.Format != Format {
		return nil, &FormatError{Msg: fmt.Sprintf("manifest format %q, want %q: this is not a metalhall backup", m.Format, Format)}
	}
	if m.Version < 1 || m.Version > Version {
		return nil, &FormatError{Msg: fmt.Sprintf("archive version %d: this metalhall reads versions 1 to %d; use the metalhall that wrote it, or a newer one", m.Version, Version)}
	}
	byName := make(map[string]Member, len(m.Members))
	for _, mb := range m.Members {
		if _, dup := byName[mb.Name]; dup {
			return nil, &FormatError{Msg: fmt.Sprintf("manifest lists %s twice", mb.Name)}
		}
		if mb.Size < 0 || len(mb.SHA256) != 64 || !images.ValidSHA256(mb.SHA256) {
			return nil, &FormatError{Msg: fmt.Sprintf("manifest entry %s has no valid size and sha256", mb.Name)}
		}
		kind, sha := memberKind(mb.Name)
		switch kind {
		case "":
			return nil, &FormatError{Msg: fmt.Sprintf("manifest lists %q, which no metalhall backup holds", mb.Name)}
		case kindBlob:
			if mb.SHA256 != sha {
				return nil, &FormatError{Msg: fmt.Sprintf("manifest gives blob %s the checksum %s", sha, mb.SHA256)}
			}
		}
		byName[mb.Name] = mb
	}
	if _, ok := byName[DBName]; !ok {
		return nil, &FormatError{Msg: "manifest lists no database"}
	}
	if _, ok := byName[SealedKeyName]; ok != m.SealKey {
		return nil, &FormatError{Msg: "manifest disagrees with itself about the seal key"}
	}
	if m.Version < 2 && (len(m.Profiles) > 0 || len(m.Bootenv) > 0) {
		return nil, &FormatError{Msg: fmt.Sprintf("a version %d manifest lists profiles or a boot environment, which came with version 2", m.Version)}
	}
	profiles := 0
	for _, p := range m.Profiles {
		if _, ok := byName[ProfileMember(p.Name)]; !ok {
			return nil, &FormatError{Msg: fmt.Sprintf("profile %q is said to be in the archive, but its file is not listed", p.Name)}
		}
		profiles++
	}
	for name := range byName {
		if kind, _ := memberKind(name); kind == kindProfile {
			profiles--
		}
	}
	if profiles != 0 {
		return nil, &FormatError{Msg: "manifest disagrees with itself about the profiles"}
	}
	for _, f := range m.Bootenv {
		if !plainFileName(f.Name) || f.Size < 0 || !images.ValidSHA256(f.SHA256) {
			return nil, &FormatError{Msg: fmt.Sprintf("manifest records a boot environment file %q with no valid name, size and sha256", f.Name)}
		}
	}
	for _, img := range m.Images {
		if !img.InArchive {
			continue
		}
		blob, bmap, err := archiveBlobNames(img.SHA256)
		if err != nil {
			return nil, &FormatError{Msg: fmt.Sprintf("image %s: %v", img.Ref, err)}
		}
		if _, ok := byName[blob]; !ok {
			return nil, &FormatError{Msg: fmt.Sprintf("image %s is said to be in the archive, but its blob is not listed", img.Ref)}
		}
		if _, ok := byName[bmap]; !ok {
			return nil, &FormatError{Msg: fmt.Sprintf("image %s is said to be in the archive, but its block map is not listed", img.Ref)}
		}
	}
	return byName, nil
}

// Kinds of member.
const (
	kindDB       = "db"
	kindKey      = "key"
	kindBlob     = "blob"
	kindBlockMap = "blockmap"
	kindProfile  = "profile"
)

// memberKind says what a member name is, and for image files the sha256
// they belong to; "" for a name this version never writes. Only these
// exact names are ever turned into paths.
func memberKind(name string) (kind, sha string) {
	switch name {
	case DBName:
		return kindDB, ""
	case SealedKeyName:
		return kindKey, ""
	}
	if file, ok := strings.CutPrefix(name, ProfilesDir+"/"); ok {
		// The profiles directory's own rule for names: a plain file name.
		if p, ok := strings.CutSuffix(file, ".yaml"); ok && inventory.ValidateName("profile", p) == nil {
			return kindProfile, ""
		}
		return "", ""
	}
	rest, ok := strings.CutPrefix(name, ImagesDir+"/blobs/sha256/")
	if !ok {
		return "", ""
	}
	_, file, ok := strings.Cut(rest, "/")
	if !ok {
		return "", ""
	}
	sha = strings.TrimSuffix(file, ".bmap.json")
	blob, bmap, err := archiveBlobNames(sha)
	switch {
	case err != nil:
		return "", ""
	case name == blob:
		return kindBlob, sha
	case name == bmap:
		return kindBlockMap, sha
	}
	return "", ""
}

// plainFileName is a name that stays inside the directory it is joined to.
func plainFileName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\\\x00")
}

// archiveBlobNames are the member names of a blob and its block map: the
// image store's own paths (images.BlobFiles) under ImagesDir.
func archiveBlobNames(sha string) (blob, bmap string, err error) {
	b, m, err := images.BlobFiles(sha)
	if err != nil {
		return "", "", err
	}
	return ImagesDir + "/" + b, ImagesDir + "/" + m, nil
}

// FormatError is an archive this code cannot read: not a metalhall
// backup, a newer version, or a manifest that makes no sense.
type FormatError struct{ Msg string }

func (e *FormatError) Error() string { return "backup archive: " + e.Msg }

// ChecksumError is a member whose bytes are not those the manifest
// lists: the archive is corrupt.
type ChecksumError struct {
	Member         string
	Want, Got      string
	WantN, GotSize int64
}

func (e *ChecksumError) Error() string {
	if e.WantN != e.GotSize {
		return fmt.Sprintf("backup archive is corrupt: %s has %d bytes, the manifest says %d", e.Member, e.GotSize, e.WantN)
	}
	return fmt.Sprintf("backup archive is corrupt: %s has sha256 %s, the manifest says %s", e.Member, e.Got, e.Want)
}

// TruncatedError is an archive that ends before every member listed in
// its manifest was read.
type TruncatedError struct{ Missing []string }

func (e *TruncatedError) Error() string {
	if len(e.Missing) == 0 {
		return "backup archive is cut short: it ends without its end marker"
	}
	return fmt.Sprintf("backup archive is cut short: %d member(s) the manifest lists are not in it, first %s", len(e.Missing), e.Missing[0])
}

// ErrWrongPassphrase: the passphrase does not open the sealing key.
var ErrWrongPassphrase = errors.New("the passphrase does not open the seal key in this backup (wrong passphrase?)")

// ErrBusy: a backup is already being written; they are written one at a
// time (each holds a temp copy of the database and a KDF's memory).
var ErrBusy = &inventory.ConflictError{Msg: "another backup is being written now: wait for it to finish"}

// hashingWriter counts and hashes what goes through it.
type hashingWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newHashingWriter(w io.Writer) *hashingWriter { return &hashingWriter{w: w, h: sha256.New()} }

func (h *hashingWriter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}

func (h *hashingWriter) sum() string { return hex.EncodeToString(h.h.Sum(nil)) }

// ctxReader stops a long copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
