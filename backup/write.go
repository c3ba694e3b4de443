package backup

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// Source is a running service's side of a backup: its database, its data
// dir (for the image blobs and the boot environment), its profiles and its
// sealing key. It writes one archive at a time.
type Source struct {
	Inv     *inventory.Store
	DataDir string
	// ProfilesDir holds the hardware profiles; empty: DATA_DIR/profiles.
	ProfilesDir string
	Key         []byte
	Version     string
	Logger      *slog.Logger

	busy chan struct{}
}

// NewSource returns a Source; key is the service's sealing key.
func NewSource(inv *inventory.Store, dataDir string, key []byte, version string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{Inv: inv, DataDir: dataDir, Key: key, Version: version, Logger: log, busy: make(chan struct{}, 1)}
}

// Options choose what an archive holds.
type Options struct {
	// Passphrase encrypts the sealing key into the archive; empty leaves
	// the key out.
	Passphrase []byte
	// WithoutImages leaves the blobs out; the manifest still lists every
	// image and its checksum, so a restore can check the store it finds.
	WithoutImages bool
}

// Prepared is an archive whose manifest is known and whose members are
// ready to stream: the database copy is in a temp file. Stream it once,
// then Close it.
type Prepared struct {
	Manifest *Manifest
	src      *Source
	dbPath   string
	sealed   []byte
	// profiles are the profiles' bytes as read for the manifest: what is
	// streamed is exactly what was checksummed.
	profiles map[string][]byte
	release  func()
}

// Prepare takes the consistent copy of the database (and, in the same
// read transaction, the image catalogue), encrypts the key, and checks the
// blobs, so that errors come before the first byte is sent. It refuses
// (ErrBusy) while another archive is being written.
func (s *Source) Prepare(ctx context.Context, opts Options) (_ *Prepared, err error) {
	if len(opts.Passphrase) > 0 {
		if err := CheckPassphrase(opts.Passphrase); err != nil {
			return nil, &inventory.ValidationError{Field: "passphrase", Msg: err.Error()}
		}
	}
	select {
	case s.busy <- struct{}{}:
	default:
		return nil, ErrBusy
	}
	p := &Prepared{src: s, profiles: map[string][]byte{}, release: func() { <-s.busy }}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	m := &Manifest{Format: Format, Version: Version, CreatedAt: time.Now().UTC(), MetalhallVersion: s.Version,
		WithoutImages: opts.WithoutImages, Members: []Member{}, Images: []Image{}, Profiles: []Profile{}, Bootenv: []Member{}}
	p.Manifest = m

	if len(opts.Passphrase) > 0 {
		if p.sealed, err = encryptKey(s.Key, opts.Passphrase, defaultKDF); err != nil {
			return nil, fmt.Errorf("encrypting the seal key: %w", err)
		}
		sum := sha256.Sum256(p.sealed)
		m.Members = append(m.Members, Member{Name: SealedKeyName, Size: int64(len(p.sealed)), SHA256: hex.EncodeToString(sum[:])})
		m.SealKey = true
	}

	// The database copy goes to a temp file in the data dir (the same
	// disk as the database, and never a shared /tmp): its checksum must
	// be in the manifest, which comes first.
	f, err := os.CreateTemp(s.DataDir, ".backup-*.db")
	if err != nil {
		return nil, fmt.Errorf("backup: temp copy of the database: %w", err)
	}
	p.dbPath = f.Name()
	hw := newHashingWriter(f)
	_, imgs, err := s.Inv.Snapshot(hw)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("backup: copying the database: %w", err)
	}
	m.Members = append(m.Members, Member{Name: DBName, Size: hw.n, SHA256: hw.sum()})

	slices.SortFunc(imgs, func(a, b inventory.Image) int {
		if a.Ref() < b.Ref() {
			return -1
		}
		if a.Ref() > b.Ref() {
			return 1
		}
		return 0
	})
	seen := map[string]bool{}
	for _, img := range imgs {
		e := Image{Ref: img.Ref(), SHA256: img.SHA256, Size: img.Size}
		blob, bmap, err := archiveBlobNames(img.SHA256)
		if err != nil {
			return nil, fmt.Errorf("backup: image %s: %w", img.Ref(), err)
		}
		bi, berr := os.Stat(filepath.Join(s.DataDir, filepath.FromSlash(blob)))
		mi, merr := os.Stat(filepath.Join(s.DataDir, filepath.FromSlash(bmap)))
		switch {
		case errors.Is(berr, fs.ErrNotExist) || errors.Is(merr, fs.ErrNotExist):
			e.MissingAtBackup = true
			s.Logger.Warn("backup: the catalogue names an image whose blob is not in the store", "image", img.Ref(), "sha256", img.SHA256)
		case berr != nil:
			return nil, fmt.Errorf("backup: image %s: %w", img.Ref(), berr)
		case merr != nil:
			return nil, fmt.Errorf("backup: image %s: %w", img.Ref(), merr)
		case !opts.WithoutImages:
			e.InArchive = true
			if !seen[img.SHA256] { // images may share a blob
				seen[img.SHA256] = true
				msum, err := fileSHA256(ctx, filepath.Join(s.DataDir, filepath.FromSlash(bmap)))
				if err != nil {
					return nil, fmt.Errorf("backup: image %s: block map: %w", img.Ref(), err)
				}
				// The blob's name is its checksum; it is checked again
				// as it streams.
				m.Members = append(m.Members, Member{Name: blob, Size: bi.Size(), SHA256: img.SHA256},
					Member{Name: bmap, Size: mi.Size(), SHA256: msum})
			}
		}
		m.Images = append(m.Images, e)
	}
	if err := p.addProfiles(ctx); err != nil {
		return nil, err
	}
	if m.Bootenv, err = bootenvFiles(ctx, filepath.Join(s.DataDir, BootenvDir)); err != nil {
		return nil, fmt.Errorf("backup: boot environment: %w", err)
	}
	return p, nil
}

// addProfiles reads the profiles directory as the service does (NAME.yaml
// with a valid name) into memory and lists each as a member. A profile
// that does not parse is kept, as it is on disk, and flagged.
func (p *Prepared) addProfiles(ctx context.Context) error {
	dir := p.src.ProfilesDir
	if dir == "" {
		dir = filepath.Join(p.src.DataDir, ProfilesDir)
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("backup: profiles: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".yaml")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if kind, _ := memberKind(ProfileMember(name)); kind != kindProfile {
			continue // the service does not read it either
		}
		data, err := readSmall(filepath.Join(dir, e.Name()), maxProfile)
		if err != nil {
			return fmt.Errorf("backup: profile %q: %w", name, err)
		}
		entry := Profile{Name: name}
		if _, err := provisioner.ParseProfile(name, data); err != nil {
			entry.Problem = err.Error()
			p.src.Logger.Warn("backup: a profile does not parse; it is backed up as it is", "profile", name, "err", err)
		}
		sum := sha256.Sum256(data)
		p.profiles[ProfileMember(name)] = data
		p.Manifest.Members = append(p.Manifest.Members, Member{Name: ProfileMember(name), Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:])})
		p.Manifest.Profiles = append(p.Manifest.Profiles, entry)
	}
	return nil
}

// readSmall reads a file of at most max bytes.
func readSmall(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("more than %d bytes: not a profile; move it out of the profiles directory", max)
	}
	return data, nil
}

// bootenvFiles are the regular files of a boot environment directory with
// their sizes and checksums; none when it does not exist.
func bootenvFiles(ctx context.Context, dir string) ([]Member, error) {
	out := []Member{}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || !plainFileName(e.Name()) || strings.HasPrefix(e.Name(), ".") {
			continue // temp files of a build in progress start with a dot
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		hw := newHashingWriter(io.Discard)
		_, err = io.Copy(hw, ctxReader{ctx, f})
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, Member{Name: e.Name(), Size: hw.n, SHA256: hw.sum()})
	}
	return out, nil
}

// WriteTo streams the archive: the manifest, then each member in its
// order. An error after the first byte leaves the stream cut short, which
// a restore refuses.
func (p *Prepared) WriteTo(ctx context.Context, w io.Writer) error {
	tw := tar.NewWriter(w)
	man, err := json.MarshalIndent(p.Manifest, "", " ")
	if err != nil {
		return err
	}
	now := p.Manifest.CreatedAt
	put := func(name string, size int64) error {
		return tw.WriteHeader(&tar.Header{Name: name, Size: size, Mode: 0o600, ModTime: now, Typeflag: tar.TypeReg})
	}
	if err := put(ManifestName, int64(len(man))); err != nil {
		return err
	}
	if _, err := tw.Write(man); err != nil {
		return err
	}
	for _, mb := range p.Manifest.Members {
		if err := put(mb.Name, mb.Size); err != nil {
			return err
		}
		if mb.Name == SealedKeyName {
			if _, err := tw.Write(p.sealed); err != nil {
				return err
			}
			continue
		}
		if data, ok := p.profiles[mb.Name]; ok {
			if _, err := tw.Write(data); err != nil {
				return err
			}
			continue
		}
		path := p.dbPath
		if mb.Name != DBName {
			path = filepath.Join(p.src.DataDir, filepath.FromSlash(mb.Name))
		}
		if err := copyChecked(ctx, tw, path, mb); err != nil {
			return err
		}
	}
	return tw.Close()
}

// Close removes the temp copy of the database and lets the next backup in.
func (p *Prepared) Close() error {
	var err error
	if p.dbPath != "" {
		err = os.Remove(p.dbPath)
		p.dbPath = ""
	}
	if p.release != nil {
		p.release()
		p.release = nil
	}
	return err
}

// copyChecked streams a file into the archive and checks that it is
// exactly the member the manifest promised (a blob's name is its sha256:
// a blob that rotted on disk is not passed on as good).
func copyChecked(ctx context.Context, w io.Writer, path string, mb Member) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("backup: %s: %w", mb.Name, err)
	}
	defer f.Close()
	hw := newHashingWriter(w)
	n, err := io.Copy(hw, io.LimitReader(ctxReader{ctx, f}, mb.Size))
	if err != nil {
		return fmt.Errorf("backup: %s: %w", mb.Name, err)
	}
	if n != mb.Size || hw.sum() != mb.SHA256 {
		return fmt.Errorf("backup: %s changed or does not match its checksum (%d of %d bytes, sha256 %s): the archive is cut short; check the image store", mb.Name, n, mb.Size, hw.sum())
	}
	return nil
}

func fileSHA256(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
