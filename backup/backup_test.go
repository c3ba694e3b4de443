package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
)

var ctx = context.Background()

const pass = "correct horse battery staple"

// origin is a data dir as a service leaves it: a database with a site,
// two images in the blob store, a seal key.
type origin struct {
	dir string
	inv *inventory.Store
	src *Source
	key []byte
}

func newOrigin(t *testing.T) *origin {
	t.Helper()
	dir := t.TempDir()
	inv, err := inventory.Open(filepath.Join(dir, DBName), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inv.Close() })
	if _, err := inv.CreateSite(ctx, inventory.Site{Name: "riyadh-1"}); err != nil {
		t.Fatal(err)
	}
	imgs, err := images.Open(filepath.Join(dir, ImagesDir), inv, images.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ubuntu", "rocky"} {
		if _, err := imgs.Import(ctx, strings.NewReader(strings.Repeat("an image called "+n+"\n", 5000)), images.ImportOptions{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	key := bytes.Repeat([]byte{7}, 32)
	os.WriteFile(filepath.Join(dir, KeyFile), key, 0o600)
	return &origin{dir: dir, inv: inv, key: key, src: NewSource(inv, dir, key, "test", nil)}
}

func (o *origin) archive(t *testing.T, opts Options) []byte {
	t.Helper()
	p, err := o.src.Prepare(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var buf bytes.Buffer
	if err := p.WriteTo(ctx, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func passphrase(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(p), nil }
}

// tree lists a directory's files and sizes, to show that a refused
// restore changed nothing.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			out = append(out, "error "+err.Error())
			return nil
		}
		info, _ := d.Info()
		rel, _ := filepath.Rel(dir, p)
		out = append(out, rel+" "+info.Mode().String()+" "+string(rune('0'+info.Size()%10)))
		return nil
	})
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func TestRestoreBringsBackDatabaseKeyAndBlobsOnHold(t *testing.T) {
	o := newOrigin(t)
	// A job in flight, as in the backup of a busy service.
	o.inv.CreateHall(ctx, inventory.Hall{Name: "h1", Site: "riyadh-1"})
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	if bytes.Contains(arc, o.key) {
		t.Fatal("the seal key is in the archive in clear")
	}

	dst := filepath.Join(t.TempDir(), "copy")
	rep, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Passphrase: passphrase(pass)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.KeyRestored || rep.BlobsRestored != 2 || len(rep.MissingImages) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, KeyFile)); !bytes.Equal(got, o.key) {
		t.Fatal("restored key differs")
	}
	if fi, err := os.Stat(filepath.Join(dst, KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("restored key mode: %v %v", fi.Mode(), err)
	}
	for _, img := range rep.Manifest.Images {
		blob, bmap, _ := archiveBlobNames(img.SHA256)
		for _, f := range []string{blob, bmap} {
			a, _ := os.ReadFile(filepath.Join(o.dir, f))
			b, err := os.ReadFile(filepath.Join(dst, f))
			if err != nil || !bytes.Equal(a, b) {
				t.Fatalf("%s not restored: %v", f, err)
			}
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(dst, ".restore-*")); len(ents) != 0 {
		t.Fatalf("staging left behind: %v", ents)
	}
	inv, err := inventory.Open(filepath.Join(dst, DBName), inventory.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer inv.Close()
	if _, err := inv.Hall(ctx, "h1"); err != nil {
		t.Fatalf("restored database: %v", err)
	}
	if h := inv.Hold(); h == nil || !h.BackupTakenAt.Equal(rep.Manifest.CreatedAt) {
		t.Fatalf("restored database not on hold: %+v", h)
	}
}

func TestWrongPassphraseWritesNothing(t *testing.T) {
	o := newOrigin(t)
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	dst := filepath.Join(t.TempDir(), "copy")
	_, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Passphrase: passphrase("not the passphrase at all")})
	if !errors.Is(err, ErrWrongPassphrase) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused restore left the data dir: %v", err)
	}
	_, err = Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst})
	if !errors.Is(err, ErrNoPassphrase) {
		t.Fatalf("no passphrase: %v", err)
	}
}

func TestCorruptOrCutArchiveWritesNothing(t *testing.T) {
	o := newOrigin(t)
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	parent := t.TempDir()
	existing := filepath.Join(parent, "existing")
	os.MkdirAll(existing, 0o700)
	os.WriteFile(filepath.Join(existing, "metalhall.db"), []byte("the database that was here"), 0o600)
	before := tree(t, existing)

	// One byte flipped inside the second blob (the last member).
	bad := bytes.Clone(arc)
	i := bytes.LastIndex(bad, []byte("an image called"))
	bad[i] ^= 0xff
	for name, data := range map[string][]byte{"flipped byte": bad, "cut short": arc[:len(arc)*2/3]} {
		t.Run(name, func(t *testing.T) {
			dst := filepath.Join(parent, "new")
			_, err := Restore(ctx, bytes.NewReader(data), RestoreOptions{DataDir: dst, Passphrase: passphrase(pass)})
			var ce *ChecksumError
			var te *TruncatedError
			var fe *FormatError
			if !errors.As(err, &ce) && !errors.As(err, &te) && !errors.As(err, &fe) {
				t.Fatalf("restore of a %s archive: %v", name, err)
			}
			if name == "flipped byte" && !errors.As(err, &ce) {
				t.Fatalf("a flipped byte is not a checksum error: %v", err)
			}
			if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("left the new data dir behind: %v", err)
			}
			_, err = Restore(ctx, bytes.NewReader(data), RestoreOptions{DataDir: existing, Force: true, Passphrase: passphrase(pass)})
			if err == nil {
				t.Fatal("forced restore of a broken archive succeeded")
			}
			if after := tree(t, existing); after != before {
				t.Fatalf("forced restore of a broken archive changed the data dir:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

func TestRestoreOverANonEmptyDataDirNeedsForce(t *testing.T) {
	o := newOrigin(t)
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	dst := t.TempDir()
	os.WriteFile(filepath.Join(dst, "notes.txt"), []byte("mine"), 0o600)
	before := tree(t, dst)
	_, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Passphrase: passphrase(pass)})
	var ne *NotEmptyError
	if !errors.As(err, &ne) || !strings.Contains(err.Error(), "notes.txt") {
		t.Fatalf("restore over a non-empty dir: %v", err)
	}
	if tree(t, dst) != before {
		t.Fatal("a refused restore changed the data dir")
	}
	if _, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Force: true, Passphrase: passphrase(pass)}); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRefusesADataDirInUse(t *testing.T) {
	o := newOrigin(t)
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	// o.inv holds o.dir's database, as its service would.
	_, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: o.dir, Force: true, Passphrase: passphrase(pass)})
	var iu *InUseError
	if !errors.As(err, &iu) {
		t.Fatalf("restore into a data dir in use: %v", err)
	}
}

func TestMissingImagesAreListedAndRefusedUnlessAllowed(t *testing.T) {
	o := newOrigin(t)
	arc := o.archive(t, Options{WithoutImages: true})
	p, _ := o.src.Prepare(ctx, Options{WithoutImages: true})
	if p.Manifest.SealKey || len(p.Manifest.Images) != 2 || p.Manifest.Images[0].InArchive {
		t.Fatalf("manifest without images or key: %+v", p.Manifest)
	}
	p.Close()

	dst := filepath.Join(t.TempDir(), "copy")
	_, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst})
	var mi *MissingImagesError
	if !errors.As(err, &mi) || len(mi.Images) != 2 || mi.Images[0] != "rocky" || mi.Images[1] != "ubuntu" {
		t.Fatalf("missing images: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused restore left the data dir")
	}
	rep, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, AllowMissingImages: true})
	if err != nil || len(rep.MissingImages) != 2 || rep.KeyRestored || rep.KeyKept {
		t.Fatalf("allowed: %+v %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(dst, KeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a key appeared from a backup without one")
	}

	// The same archive over a data dir that still has the blobs and its
	// key (the original, stopped): nothing is missing, the key is kept.
	o.inv.Close()
	rep, err = Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: o.dir, Force: true})
	if err != nil || len(rep.MissingImages) != 0 || !rep.KeyKept || rep.BlobsRestored != 0 {
		t.Fatalf("over the original: %+v %v", rep, err)
	}
}

func TestBackupRefusesAShortPassphraseAndASecondBackupAtOnce(t *testing.T) {
	o := newOrigin(t)
	if _, err := o.src.Prepare(ctx, Options{Passphrase: []byte("short")}); !errors.Is(err, inventory.ErrInvalid) {
		t.Fatalf("short passphrase: %v", err)
	}
	p, err := o.src.Prepare(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.src.Prepare(ctx, Options{}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second backup at once: %v", err)
	}
	p.Close()
	if ents, _ := filepath.Glob(filepath.Join(o.dir, ".backup-*")); len(ents) != 0 {
		t.Fatalf("temp copy left: %v", ents)
	}
	p, err = o.src.Prepare(ctx, Options{})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	p.Close()
}

const goodProfile = "gpu_model: H100 SXM5\ngpu_count: 8\nos_disk: nvme0n1\n"

func TestProfilesAreBackedUpAndReplaceTheDataDirsOnRestore(t *testing.T) {
	o := newOrigin(t)
	profiles := filepath.Join(t.TempDir(), "elsewhere") // as serve --profiles-dir
	os.MkdirAll(profiles, 0o755)
	os.WriteFile(filepath.Join(profiles, "hgx-h100.yaml"), []byte(goodProfile), 0o644)
	os.WriteFile(filepath.Join(profiles, "README.txt"), []byte("not a profile"), 0o644)
	o.src.ProfilesDir = profiles
	bootenv := filepath.Join(o.dir, BootenvDir)
	os.MkdirAll(bootenv, 0o755)
	os.WriteFile(filepath.Join(bootenv, "initrd.img"), []byte("an initramfs"), 0o644)
	arc := o.archive(t, Options{Passphrase: []byte(pass)})
	if bytes.Contains(arc, []byte("an initramfs")) {
		t.Fatal("the boot environment is in the archive")
	}

	// A data dir with profiles of its own: forced, they are replaced.
	dst := t.TempDir()
	os.MkdirAll(filepath.Join(dst, ProfilesDir), 0o755)
	os.WriteFile(filepath.Join(dst, ProfilesDir, "stale.yaml"), []byte("min_disks: 1\n"), 0o644)
	rep, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Force: true, Passphrase: passphrase(pass)})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.ProfilesInArchive || len(rep.Profiles) != 1 || rep.Profiles[0] != "hgx-h100" || len(rep.BrokenProfiles) != 0 {
		t.Fatalf("profiles in the report: %+v", rep)
	}
	if got, err := os.ReadFile(filepath.Join(dst, ProfilesDir, "hgx-h100.yaml")); err != nil || string(got) != goodProfile {
		t.Fatalf("restored profile: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dst, ProfilesDir, "stale.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the data dir's own profile survived a forced restore: profiles are not those of the backup")
	}
	if _, err := os.Stat(filepath.Join(dst, ProfilesDir, "README.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a file that is not a profile was backed up")
	}
	if len(rep.BootenvMissing) != 1 || rep.BootenvMissing[0] != "initrd.img" {
		t.Fatalf("a restore without the boot environment does not say so: %+v", rep.BootenvMissing)
	}

	// Into the data dir that still has the boot environment: nothing missing.
	os.MkdirAll(filepath.Join(dst, BootenvDir), 0o755)
	os.WriteFile(filepath.Join(dst, BootenvDir, "initrd.img"), []byte("an initramfs"), 0o644)
	rep, err = Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, Force: true, Passphrase: passphrase(pass)})
	if err != nil || len(rep.BootenvMissing) != 0 {
		t.Fatalf("restore beside its boot environment: %+v %v", rep, err)
	}
}

func TestABrokenProfileIsFlaggedAtBackupAndRefusedAtRestoreUnlessAllowed(t *testing.T) {
	o := newOrigin(t)
	profiles := filepath.Join(o.dir, ProfilesDir)
	os.MkdirAll(profiles, 0o755)
	os.WriteFile(filepath.Join(profiles, "hgx-h100.yaml"), []byte(goodProfile), 0o644)
	// Dropped in by hand: gpu_count without os_disk.
	os.WriteFile(filepath.Join(profiles, "hgx-b200.yaml"), []byte("gpu_model: B200\ngpu_count: 8\n"), 0o644)
	p, err := o.src.Prepare(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Manifest.Profiles) != 2 || p.Manifest.Profiles[0].Name != "hgx-b200" || !strings.Contains(p.Manifest.Profiles[0].Problem, "os_disk is not set") ||
		p.Manifest.Profiles[1].Problem != "" {
		t.Fatalf("manifest profiles: %+v", p.Manifest.Profiles)
	}
	p.Close()
	arc := o.archive(t, Options{})

	dst := filepath.Join(t.TempDir(), "copy")
	_, err = Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst})
	var bp *BrokenProfilesError
	if !errors.As(err, &bp) || len(bp.Profiles) != 1 || !strings.Contains(bp.Profiles[0], `profile "hgx-b200" line 2`) {
		t.Fatalf("restore of a broken profile: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a refused restore left the data dir")
	}
	rep, err := Restore(ctx, bytes.NewReader(arc), RestoreOptions{DataDir: dst, AllowBrokenProfiles: true})
	if err != nil || len(rep.Profiles) != 2 || len(rep.BrokenProfiles) != 1 {
		t.Fatalf("allowed: %+v %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(dst, ProfilesDir, "hgx-b200.yaml")); err != nil {
		t.Fatal("an allowed broken profile was not restored")
	}
}

func TestAProfileMemberWithAPathIsNotAMember(t *testing.T) {
	for _, name := range []string{"profiles/../seal.key.yaml", "profiles/a/b.yaml", "profiles/.x.yaml", "profiles/x.yml", "profiles/"} {
		if kind, _ := memberKind(name); kind != "" {
			t.Errorf("%q is taken as a %s member", name, kind)
		}
	}
	if kind, _ := memberKind(ProfileMember("hgx-h100")); kind != kindProfile {
		t.Errorf("a profile member is taken as %q", kind)
	}
}

func TestAVersion1ArchiveLeavesTheDataDirsProfilesAlone(t *testing.T) {
	o := newOrigin(t)
	p, err := o.src.Prepare(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// As the metalhall before profiles were backed up wrote it.
	p.Manifest.Version, p.Manifest.Profiles, p.Manifest.Bootenv = 1, nil, nil
	var buf bytes.Buffer
	err = p.WriteTo(ctx, &buf)
	p.Close()
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	os.MkdirAll(filepath.Join(dst, ProfilesDir), 0o755)
	os.WriteFile(filepath.Join(dst, ProfilesDir, "hgx-h100.yaml"), []byte(goodProfile), 0o644)
	rep, err := Restore(ctx, bytes.NewReader(buf.Bytes()), RestoreOptions{DataDir: dst, Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if rep.ProfilesInArchive || len(rep.Profiles) != 0 {
		t.Fatalf("a version 1 archive reported profiles: %+v", rep)
	}
	if got, err := os.ReadFile(filepath.Join(dst, ProfilesDir, "hgx-h100.yaml")); err != nil || string(got) != goodProfile {
		t.Fatalf("the data dir's profile after a version 1 restore: %q %v", got, err)
	}
}
