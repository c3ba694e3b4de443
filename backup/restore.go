package backup

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/metalhall/metalhall/internal/atomicfile"
	"github.com/metalhall/metalhall/inventory"
	"github.com/metalhall/metalhall/provisioner"
)

// RestoreOptions say where and how to restore.
type RestoreOptions struct {
	// DataDir receives the database, the key and the blobs. It must be
	// empty or absent unless Force.
	DataDir string
	// Passphrase is asked for only when the archive holds the sealing
	// key; returning nil (no passphrase to give) refuses the restore.
	Passphrase func() ([]byte, error)
	// Force restores over a data dir that is not empty: its database and
	// seal key are replaced, the blobs added to its image store.
	Force bool
	// AllowMissingImages restores even when images of the catalogue have
	// no blob in the archive nor in the data dir; they are reported.
	AllowMissingImages bool
	// AllowBrokenProfiles restores profiles that do not pass
	// provisioner.ParseProfile as they are; they are reported.
	AllowBrokenProfiles bool
}

// Report says what a restore did.
type Report struct {
	Manifest *Manifest `json:"manifest"`
	DataDir  string    `json:"data_dir"`
	// KeyRestored: the sealing key came from the archive. KeyKept: the
	// archive had none and the data dir's own seal.key was kept.
	KeyRestored bool `json:"key_restored"`
	KeyKept     bool `json:"key_kept"`
	// BlobsRestored came from the archive; BlobsPresent were already in
	// the data dir's image store.
	BlobsRestored int `json:"blobs_restored"`
	BlobsPresent  int `json:"blobs_present"`
	// MissingImages have no blob anywhere (restored only with
	// AllowMissingImages): provisioning with them fails until they are
	// imported again.
	MissingImages []string `json:"missing_images"`
	// PausedJobs are the unfinished jobs of the restored database: they
	// stay paused, and no BMC is contacted, until an admin resumes them.
	PausedJobs []string `json:"paused_jobs"`
	// Profiles are the hardware profiles put back in DATA_DIR/profiles
	// (which they replace). ProfilesInArchive is false for a version 1
	// archive: it has none, and the data dir's profiles were left alone.
	Profiles          []string `json:"profiles"`
	ProfilesInArchive bool     `json:"profiles_in_archive"`
	// BrokenProfiles do not parse ("name: why"); restored only with
	// AllowBrokenProfiles, and a machine naming one fails commissioning.
	BrokenProfiles []string `json:"broken_profiles"`
	// BootenvMissing are the boot environment files the backed-up service
	// had that the data dir lacks or holds with other contents: machines
	// cannot be commissioned or provisioned until 'bootenv build' is run
	// again. Boot environments are not archived (large, rebuildable).
	BootenvMissing []string `json:"bootenv_missing"`
}

// BrokenProfilesError refuses a restore whose profiles do not parse.
type BrokenProfilesError struct{ Profiles []string }

func (e *BrokenProfilesError) Error() string {
	return fmt.Sprintf("%d profile(s) in the backup do not parse: %s; machines naming them would fail commissioning; allow broken profiles to restore them as they are and fix them afterwards",
		len(e.Profiles), strings.Join(e.Profiles, "; "))
}

// NotEmptyError refuses a restore into a data dir that holds something,
// unless forced.
type NotEmptyError struct {
	Dir     string
	Entries []string
}

func (e *NotEmptyError) Error() string {
	return fmt.Sprintf("data dir %s is not empty (it holds %s): restore into an empty or new directory, or force it to replace its database and seal key",
		e.Dir, strings.Join(e.Entries, ", "))
}

// InUseError refuses a restore into a data dir a running service holds.
type InUseError struct{ Dir string }

func (e *InUseError) Error() string {
	return fmt.Sprintf("data dir %s is in use by a running metalhall: stop it first (a restore is done offline)", e.Dir)
}
func (e *InUseError) Unwrap() error { return inventory.ErrInUse }

// MissingImagesError refuses a restore whose catalogue names images with
// no blob, in the archive or the data dir.
type MissingImagesError struct{ Images []string }

func (e *MissingImagesError) Error() string {
	return fmt.Sprintf("%d image(s) of the catalogue have no blob in the backup nor in the data dir: %s; restore with the images, or allow missing images and import them again afterwards",
		len(e.Images), strings.Join(e.Images, ", "))
}

// ErrNoPassphrase: the archive holds the sealing key and no passphrase
// was given to open it.
var ErrNoPassphrase = errors.New("this backup holds the seal key encrypted under a passphrase: give the passphrase to restore it")

// Restore reads an archive from r, checks every member against the
// manifest, the key against the passphrase and the catalogue against the
// blobs, and only then moves the database, the key and the blobs into the
// data dir. The restored database is put on hold (inventory.Hold): the
// next service on it runs no job and contacts no BMC until an admin
// resumes. On any error the data dir is as it was.
func Restore(ctx context.Context, r io.Reader, opts RestoreOptions) (rep *Report, err error) {
	dir := opts.DataDir
	if dir == "" {
		return nil, errors.New("restore: no data dir given")
	}
	entries, err := os.ReadDir(dir)
	created := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		created = true
	case err != nil:
		return nil, fmt.Errorf("restore: data dir: %w", err)
	case len(entries) > 0 && !opts.Force:
		names := []string{}
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return nil, &NotEmptyError{Dir: dir, Entries: names}
	}
	// A service on this data dir holds its database exclusively; a shared
	// lock here fails at once while one runs, and keeps one from starting
	// while the files are replaced.
	if _, err := os.Stat(filepath.Join(dir, DBName)); err == nil {
		db, err := bolt.Open(filepath.Join(dir, DBName), 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, &InUseError{Dir: dir}
		}
		if err == nil {
			defer db.Close()
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("restore: data dir: %w", err)
	}
	stage, err := os.MkdirTemp(dir, ".restore-")
	if err != nil {
		return nil, fmt.Errorf("restore: staging dir: %w", err)
	}
	defer func() {
		os.RemoveAll(stage)
		if err != nil && created {
			os.Remove(dir)
		}
	}()
	rep, staged, err := extract(ctx, r, stage, opts)
	if err != nil {
		return nil, err
	}
	rep.DataDir = dir
	if err := checkProfiles(stage, rep, opts); err != nil {
		return nil, err
	}
	if err := checkBootenv(ctx, dir, rep); err != nil {
		return nil, err
	}
	if err := checkAndHold(ctx, stage, dir, rep, opts); err != nil {
		return nil, err
	}
	if err := commit(stage, dir, staged, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// extract reads the archive into the staging dir, checking each member.
func extract(ctx context.Context, r io.Reader, stage string, opts RestoreOptions) (*Report, []string, error) {
	root, err := os.OpenRoot(stage)
	if err != nil {
		return nil, nil, err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != ManifestName {
		return nil, nil, &FormatError{Msg: "it does not start with a metalhall backup manifest: is this a backup written by 'metalhall backup'?"}
	}
	if hdr.Size > maxManifest {
		return nil, nil, &FormatError{Msg: fmt.Sprintf("manifest of %d bytes", hdr.Size)}
	}
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(tr, maxManifest)).Decode(&m); err != nil {
		return nil, nil, &FormatError{Msg: fmt.Sprintf("manifest: %v", err)}
	}
	want, err := m.check()
	if err != nil {
		return nil, nil, err
	}
	rep := &Report{Manifest: &m, MissingImages: []string{}, PausedJobs: []string{}, Profiles: []string{}, BrokenProfiles: []string{}, BootenvMissing: []string{},
		ProfilesInArchive: m.Version >= 2}
	var pass []byte
	if m.SealKey {
		if opts.Passphrase != nil {
			if pass, err = opts.Passphrase(); err != nil {
				return nil, nil, err
			}
		}
		if len(pass) == 0 {
			return nil, nil, ErrNoPassphrase
		}
	}
	seen := map[string]bool{}
	var staged []string
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, &TruncatedError{Missing: unseen(m.Members, seen)}
		}
		if err != nil {
			return nil, nil, &FormatError{Msg: fmt.Sprintf("after %d member(s): %v", len(seen), err)}
		}
		mb, ok := want[hdr.Name]
		if !ok || seen[hdr.Name] || hdr.Typeflag != tar.TypeReg {
			return nil, nil, &FormatError{Msg: fmt.Sprintf("member %q is not one its manifest lists", hdr.Name)}
		}
		seen[hdr.Name] = true
		if hdr.Size != mb.Size {
			return nil, nil, &ChecksumError{Member: mb.Name, Want: mb.SHA256, WantN: mb.Size, GotSize: hdr.Size}
		}
		name := mb.Name
		if mb.Name == SealedKeyName {
			name = KeyFile // staged decrypted, under its data dir name
		}
		if err := root.MkdirAll(path.Dir(name), 0o750); err != nil {
			return nil, nil, err
		}
		perm := os.FileMode(0o600)
		if kind, _ := memberKind(name); kind == kindProfile {
			perm = 0o644 // as 'profile import' writes them: configuration, not a secret
		}
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
		if err != nil {
			return nil, nil, err
		}
		var dst io.Writer = f
		var sealed strings.Builder
		if mb.Name == SealedKeyName {
			dst = &sealed // small: read whole, decrypted below
		}
		hw := newHashingWriter(dst)
		n, err := io.Copy(hw, ctxReader{ctx, tr})
		if err == nil && mb.Name == SealedKeyName {
			err = openSealedKey(f, []byte(sealed.String()), pass, hw, mb)
		} else if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			delete(seen, mb.Name) // cut off inside it
			return nil, nil, &TruncatedError{Missing: unseen(m.Members, seen)}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("restore: %s: %w", mb.Name, err)
		}
		if n != mb.Size || hw.sum() != mb.SHA256 {
			return nil, nil, &ChecksumError{Member: mb.Name, Want: mb.SHA256, Got: hw.sum(), WantN: mb.Size, GotSize: n}
		}
		staged = append(staged, name)
	}
	if missing := unseen(m.Members, seen); len(missing) > 0 {
		return nil, nil, &TruncatedError{Missing: missing}
	}
	return rep, staged, nil
}

// unseen are the members not read yet, in the manifest's order.
func unseen(members []Member, seen map[string]bool) []string {
	var out []string
	for _, mb := range members {
		if !seen[mb.Name] {
			out = append(out, mb.Name)
		}
	}
	return out
}

// openSealedKey checks the sealed key's checksum first (a corrupt archive
// is not a wrong passphrase), then decrypts it into f.
func openSealedKey(f *os.File, sealed, pass []byte, hw *hashingWriter, mb Member) error {
	if hw.n != mb.Size || hw.sum() != mb.SHA256 {
		return &ChecksumError{Member: mb.Name, Want: mb.SHA256, Got: hw.sum(), WantN: mb.Size, GotSize: hw.n}
	}
	key, err := decryptKey(sealed, pass)
	if err != nil {
		return err
	}
	if _, err := f.Write(key); err != nil {
		return err
	}
	return f.Sync()
}

// checkProfiles parses every staged profile as commissioning would read
// it; a broken one refuses the restore unless allowed.
func checkProfiles(stage string, rep *Report, opts RestoreOptions) error {
	for _, p := range rep.Manifest.Profiles {
		data, err := readSmall(filepath.Join(stage, filepath.FromSlash(ProfileMember(p.Name))), maxProfile)
		if err != nil {
			return fmt.Errorf("restore: profile %q: %w", p.Name, err)
		}
		if _, err := provisioner.ParseProfile(p.Name, data); err != nil {
			rep.BrokenProfiles = append(rep.BrokenProfiles, err.Error())
		}
		rep.Profiles = append(rep.Profiles, p.Name)
	}
	if len(rep.BrokenProfiles) > 0 && !opts.AllowBrokenProfiles {
		return &BrokenProfilesError{Profiles: rep.BrokenProfiles}
	}
	return nil
}

// checkBootenv compares the boot environment the backup recorded with the
// data dir's.
func checkBootenv(ctx context.Context, dir string, rep *Report) error {
	have, err := bootenvFiles(ctx, filepath.Join(dir, BootenvDir))
	if err != nil {
		return fmt.Errorf("restore: boot environment: %w", err)
	}
	byName := map[string]Member{}
	for _, f := range have {
		byName[f.Name] = f
	}
	for _, f := range rep.Manifest.Bootenv {
		if got, ok := byName[f.Name]; !ok || got != f {
			rep.BootenvMissing = append(rep.BootenvMissing, f.Name)
		}
	}
	return nil
}

// checkAndHold opens the staged database: every image of its catalogue
// must have its blob (staged, or already in the data dir), and the
// database is put on hold with its unfinished jobs listed.
func checkAndHold(ctx context.Context, stage, dir string, rep *Report, opts RestoreOptions) error {
	inv, err := inventory.Open(filepath.Join(stage, DBName), inventory.Options{})
	if err != nil {
		return fmt.Errorf("restore: the database in the backup does not open: %w", err)
	}
	defer inv.Close()
	imgs, err := inv.Images(ctx)
	if err != nil {
		return err
	}
	for _, img := range imgs {
		blob, bmap, err := archiveBlobNames(img.SHA256)
		if err != nil {
			rep.MissingImages = append(rep.MissingImages, img.Ref())
			continue
		}
		if !(exists(stage, blob) && exists(stage, bmap)) && !(exists(dir, blob) && exists(dir, bmap)) {
			rep.MissingImages = append(rep.MissingImages, img.Ref())
		}
	}
	sort.Strings(rep.MissingImages)
	if len(rep.MissingImages) > 0 && !opts.AllowMissingImages {
		return &MissingImagesError{Images: rep.MissingImages}
	}
	jobs, err := inv.ActiveJobs(ctx)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		rep.PausedJobs = append(rep.PausedJobs, j.ID)
	}
	return inv.SetHold(ctx, inventory.Hold{
		Reason:        fmt.Sprintf("restored from a backup taken at %s", rep.Manifest.CreatedAt.UTC().Format(time.RFC3339)),
		BackupTakenAt: rep.Manifest.CreatedAt,
	})
}

func exists(dir, name string) bool {
	_, err := os.Stat(filepath.Join(dir, filepath.FromSlash(name)))
	return err == nil
}

// commit moves the staged files into the data dir: the blobs first, then
// the key, the database last. Blobs are named by their content: one the
// data dir already has is kept.
func commit(stage, dir string, staged []string, rep *Report) error {
	dirs := map[string]bool{dir: true}
	var db, key bool
	for _, name := range staged {
		switch name {
		case DBName:
			db = true
			continue
		case KeyFile:
			key = true
			continue
		}
		if kind, _ := memberKind(name); kind == kindProfile {
			continue // moved as one directory below
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if _, err := os.Stat(dst); err == nil {
			if kind, _ := memberKind(name); kind == kindBlob {
				rep.BlobsPresent++
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := os.Rename(filepath.Join(stage, filepath.FromSlash(name)), dst); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if kind, _ := memberKind(name); kind == kindBlob {
			rep.BlobsRestored++
		}
		dirs[filepath.Dir(dst)] = true
	}
	for d := range dirs {
		if err := atomicfile.SyncDir(d); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if key {
		if err := os.Rename(filepath.Join(stage, KeyFile), filepath.Join(dir, KeyFile)); err != nil {
			return fmt.Errorf("restore: seal key: %w", err)
		}
		rep.KeyRestored = true
	} else if exists(dir, KeyFile) {
		rep.KeyKept = true
	}
	if rep.ProfilesInArchive {
		if err := replaceDir(filepath.Join(stage, ProfilesDir), filepath.Join(dir, ProfilesDir), filepath.Join(stage, ".profiles-replaced")); err != nil {
			return fmt.Errorf("restore: profiles: %w", err)
		}
	}
	if !db {
		return errors.New("restore: no database staged")
	}
	if err := os.Rename(filepath.Join(stage, DBName), filepath.Join(dir, DBName)); err != nil {
		return fmt.Errorf("restore: database: %w", err)
	}
	return atomicfile.SyncDir(dir)
}

// replaceDir puts the directory src in the place of dst, moving what was
// there to aside (removed with the staging dir), and back if the move
// fails: dst is the old directory or the new one, never a mix of both.
func replaceDir(src, dst, aside string) error {
	if err := os.MkdirAll(src, 0o755); err != nil { // an archive with no profiles
		return err
	}
	if err := os.Chmod(src, 0o755); err != nil {
		return err
	}
	moved := false
	if err := os.Rename(dst, aside); err == nil {
		moved = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		if moved {
			if rerr := os.Rename(aside, dst); rerr != nil {
				return fmt.Errorf("%w; and putting the old directory back failed: %v (it is in %s)", err, rerr, aside)
			}
		}
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(dst))
}
