package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/backup"
	"github.com/metalhall/metalhall/internal/atomicfile"
)

// noKeyWarning is said whenever a backup leaves the seal key out.
const noKeyWarning = "the seal key (DATA_DIR/seal.key) is not in this backup: after a restore the BMC passwords and the sealed SSH keys and user data of jobs cannot be read unless the original seal.key is put back beside the database; give --passphrase-file (or a passphrase at the prompt) to include it encrypted"

// backupSummary is what `backup` prints.
type backupSummary struct {
	Path          string   `json:"path"`
	Bytes         int64    `json:"bytes"`
	Images        int      `json:"images"`
	ImagesInside  int      `json:"images_in_archive"`
	WithoutImages bool     `json:"without_images"`
	SealKey       bool     `json:"seal_key"`
	MissingImages []string `json:"missing_images"`
	Profiles      int      `json:"profiles"`
	// BrokenProfiles did not parse when the backup was taken ("name: why").
	BrokenProfiles []string `json:"broken_profiles"`
	// BootenvFiles are recorded by checksum only: boot environments are
	// not archived.
	BootenvFiles int      `json:"bootenv_files"`
	Warnings     []string `json:"warnings"`
}

func backupCommand() *cli.Command {
	return &cli.Command{Name: "backup", Usage: "write a backup archive while the service runs: database, image blobs, seal key under a passphrase (admin)",
		UsageText: `metalhall backup [--force] [--passphrase-file FILE] [--without-images] --out FILE

The archive (tar, with a manifest of every member's size and sha256) holds
the database, the image blobs unless --without-images (the manifest then
lists the blobs the catalogue names, so a restore can check them), the
hardware profiles, and the seal key encrypted under a passphrase
(argon2id, AES-256-GCM): from --passphrase-file, or asked for on a
terminal. Without a passphrase the key is left out, and BMC passwords and
sealed SSH keys and user data cannot be read after a restore. The agent's
boot environment is not in it (it is large, and 'metalhall bootenv build'
makes it again); its checksums are, so a restore says when it is missing.
Restore with 'metalhall restore'.`,
		Flags: []cli.Flag{&cli.StringFlag{Name: "out", Required: true, Usage: "file to write the archive to (refused if it exists, unless --force)"},
			&cli.BoolFlag{Name: "force", Usage: "replace --out if it exists"},
			&cli.StringFlag{Name: "passphrase-file", Usage: "file whose first line is the passphrase the seal key is encrypted under (at least 12 characters)"},
			&cli.BoolFlag{Name: "without-images", Usage: "leave the image blobs out (the manifest still lists them)"},
			outputFlag()},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			out := c.String("out")
			// Refused before the download, and again atomically when the
			// file lands (another writer may have made it meanwhile).
			if _, err := os.Lstat(out); err == nil && !c.Bool("force") {
				return usagef("backup: %s exists: name another file, or pass --force to replace it", out)
			}
			pass, err := backupPassphrase(c)
			if err != nil {
				return err
			}
			in := api.BackupRequest{Passphrase: string(pass), WithoutImages: c.Bool("without-images")}
			body, err := api.Call(c.Context, client(c), api.Ops.BackupArchive(), in)
			if err != nil {
				return err
			}
			defer body.Close()
			n, err := atomicfile.Copy(out, body, atomicfile.Options{Perm: 0o600, Exclusive: !c.Bool("force")})
			if errors.Is(err, fs.ErrExist) {
				return usagef("backup: %s appeared while the backup was read: nothing written; name another file, or pass --force", out)
			}
			if err != nil {
				return fmt.Errorf("backup: %w (nothing written to %s)", err, out)
			}
			m, err := readManifest(out)
			if err != nil {
				return fmt.Errorf("backup: %s was written but does not read back: %w", out, err)
			}
			res := backupSummary{Path: out, Bytes: n, Images: len(m.Images), WithoutImages: m.WithoutImages, SealKey: m.SealKey,
				MissingImages: []string{}, Warnings: []string{}, Profiles: len(m.Profiles), BrokenProfiles: []string{}, BootenvFiles: len(m.Bootenv)}
			for _, p := range m.Profiles {
				if p.Problem != "" {
					res.BrokenProfiles = append(res.BrokenProfiles, p.Problem)
				}
			}
			for _, img := range m.Images {
				if img.InArchive {
					res.ImagesInside++
				}
				if img.MissingAtBackup {
					res.MissingImages = append(res.MissingImages, img.Ref)
				}
			}
			if !m.SealKey {
				res.Warnings = append(res.Warnings, noKeyWarning)
			}
			if len(res.MissingImages) > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("the service's image store lacks the blobs of %s: a restore will report them missing", strings.Join(res.MissingImages, ", ")))
			}
			if len(res.BrokenProfiles) > 0 {
				res.Warnings = append(res.Warnings, fmt.Sprintf("%d profile(s) do not parse and are backed up as they are (a restore refuses them unless --allow-broken-profiles): %s",
					len(res.BrokenProfiles), strings.Join(res.BrokenProfiles, "; ")))
			}
			return show(c, res, func(w io.Writer) {
				key := "seal key encrypted under the passphrase"
				if !m.SealKey {
					key = "NO seal key"
				}
				imgs := fmt.Sprintf("%d of %d image blobs", res.ImagesInside, res.Images)
				if m.WithoutImages {
					imgs = fmt.Sprintf("no image blobs (%d listed for the restore to check)", res.Images)
				}
				fmt.Fprintf(w, "backup written to %s (%d bytes): database, %s, %s, %d profile(s)\n", out, n, imgs, key, res.Profiles)
				if res.BootenvFiles > 0 {
					fmt.Fprintf(w, "the boot environment is not in it (%d file(s) recorded by checksum): after a restore, rebuild it with 'metalhall bootenv build' if the data dir lacks it\n", res.BootenvFiles)
				}
				for _, warn := range res.Warnings {
					fmt.Fprintln(w, "warning: "+warn)
				}
			})
		}}
}

// backupPassphrase is the passphrase from --passphrase-file, or asked for
// (twice) on a terminal; nil when there is none to give.
func backupPassphrase(c *cli.Context) ([]byte, error) {
	if f := c.String("passphrase-file"); f != "" {
		p, err := passphraseFile(f)
		if err != nil {
			return nil, err
		}
		if err := backup.CheckPassphrase(p); err != nil {
			return nil, usagef("--passphrase-file: %v", err)
		}
		return p, nil
	}
	tty, ok := terminalIn(c)
	if !ok {
		return nil, nil
	}
	p, err := prompt(tty, c.App.ErrWriter, "Passphrase to encrypt the seal key with (empty: leave the key out): ")
	if err != nil || len(p) == 0 {
		return nil, err
	}
	if err := backup.CheckPassphrase(p); err != nil {
		return nil, usagef("backup: %v", err)
	}
	again, err := prompt(tty, c.App.ErrWriter, "The same passphrase again: ")
	if err != nil {
		return nil, err
	}
	if string(again) != string(p) {
		return nil, usagef("backup: the two passphrases differ: nothing written")
	}
	return p, nil
}

// passphraseFile reads the first line of f.
func passphraseFile(f string) ([]byte, error) {
	data, err := os.ReadFile(f)
	if err != nil {
		return nil, usagef("--passphrase-file: %v", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return []byte(strings.TrimRight(line, "\r")), nil
}

// terminalIn is the command's input when it is a terminal.
func terminalIn(c *cli.Context) (*os.File, bool) {
	in := c.App.Reader
	if in == nil {
		in = os.Stdin
	}
	f, ok := in.(*os.File)
	if !ok {
		return nil, false
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil, false
	}
	return f, true
}

// prompt asks for a secret on a terminal, without echoing it.
func prompt(tty *os.File, w io.Writer, question string) ([]byte, error) {
	fmt.Fprint(w, question)
	defer fmt.Fprintln(w)
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	line, err := bufio.NewReader(tty).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return []byte(strings.TrimRight(line, "\r\n")), nil
}

// readManifest reads the manifest an archive starts with.
func readManifest(path string) (*backup.Manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	hdr, err := tr.Next()
	if err != nil || hdr.Name != backup.ManifestName {
		return nil, errors.New("no manifest at its start")
	}
	var m backup.Manifest
	if err := json.NewDecoder(tr).Decode(&m); err != nil {
		return nil, err
	}
	return &m, nil
}

func restoreCommand() *cli.Command {
	return &cli.Command{Name: "restore", Usage: "restore a backup archive into a data dir, offline; the copy starts with its jobs paused",
		UsageText: `metalhall restore --from FILE --data-dir DIR [--passphrase-file FILE] [--force] [--allow-missing-images] [--allow-broken-profiles]

Run it where the service runs, with the service stopped (it refuses a data
dir a running 'metalhall serve' holds). Every member is checked against the
archive's manifest, the seal key against the passphrase (from
--passphrase-file, or asked for on a terminal) and the image catalogue
against the blobs, and every hardware profile is parsed as commissioning
reads it, before anything is written; any failure leaves DIR as it was.
DIR must be empty or new unless --force. The profiles go to DIR/profiles,
replacing what was there (serve with --profiles-dir elsewhere: move them
there). The boot environment is not in a backup: restore says when DIR
lacks the one the backed-up service had ('metalhall bootenv build').

The restored copy is on hold: 'metalhall serve' on it runs no job step and
contacts no BMC (jobs, commands and the power sync) until an admin runs
'metalhall job resume'. A copy started beside the original therefore never
drives the original's machines by itself. The tokens are those of the
backed-up service.`,
		Flags: []cli.Flag{&cli.StringFlag{Name: "from", Required: true, Usage: "the archive 'metalhall backup' wrote"},
			&cli.StringFlag{Name: "data-dir", Required: true, Usage: "the data dir to restore into (empty or new unless --force)"},
			&cli.StringFlag{Name: "passphrase-file", Usage: "file whose first line is the backup's passphrase"},
			&cli.BoolFlag{Name: "force", Usage: "restore over a data dir that is not empty: its database, seal key and profiles are replaced"},
			&cli.BoolFlag{Name: "allow-missing-images", Usage: "restore even when images of the catalogue have no blob (they are listed)"},
			&cli.BoolFlag{Name: "allow-broken-profiles", Usage: "restore profiles that do not parse as they are (they are listed; fix them before commissioning)"},
			outputFlag()},
		Action: func(c *cli.Context) error {
			if err := noArgs(c); err != nil {
				return err
			}
			if _, err := outputFormat(c); err != nil {
				return err
			}
			f, err := os.Open(c.String("from"))
			if err != nil {
				return usagef("restore: --from: %v", err)
			}
			defer f.Close()
			ask := func() ([]byte, error) {
				if pf := c.String("passphrase-file"); pf != "" {
					return passphraseFile(pf)
				}
				if tty, ok := terminalIn(c); ok {
					return prompt(tty, c.App.ErrWriter, "Passphrase of the backup's seal key: ")
				}
				return nil, nil
			}
			rep, err := backup.Restore(c.Context, bufio.NewReaderSize(f, 1<<20), backup.RestoreOptions{DataDir: c.String("data-dir"),
				Passphrase: ask, Force: c.Bool("force"), AllowMissingImages: c.Bool("allow-missing-images"),
				AllowBrokenProfiles: c.Bool("allow-broken-profiles")})
			if err != nil {
				return restoreError(err)
			}
			return show(c, rep, func(w io.Writer) {
				key := "seal key restored"
				switch {
				case rep.KeyKept:
					key = "seal key: the data dir's own kept (the backup has none)"
				case !rep.KeyRestored:
					key = "NO seal key"
				}
				profiles := fmt.Sprintf("%d profile(s)", len(rep.Profiles))
				if !rep.ProfilesInArchive {
					profiles = "no profiles (an archive from before they were backed up: the data dir's were left alone)"
				}
				fmt.Fprintf(w, "restored into %s: database, %d image blobs (%d already there), %s, %s\n", rep.DataDir, rep.BlobsRestored, rep.BlobsPresent, profiles, key)
				if !rep.KeyRestored && !rep.KeyKept {
					fmt.Fprintln(w, "warning: the backup has no seal key: BMC passwords and the sealed SSH keys and user data of jobs cannot be read; put the original seal.key in the data dir before 'metalhall serve', or enroll the BMC passwords again")
				}
				if len(rep.MissingImages) > 0 {
					fmt.Fprintf(w, "warning: %d image(s) have no blob: %s; provisioning with them fails until they are imported again\n", len(rep.MissingImages), strings.Join(rep.MissingImages, ", "))
				}
				if len(rep.BrokenProfiles) > 0 {
					fmt.Fprintf(w, "warning: %d profile(s) do not parse: %s; machines naming them fail commissioning until they are fixed ('metalhall profile validate')\n", len(rep.BrokenProfiles), strings.Join(rep.BrokenProfiles, "; "))
				}
				if len(rep.BootenvMissing) > 0 {
					fmt.Fprintf(w, "warning: the data dir lacks the boot environment the backed-up service had (%s): machines cannot be commissioned or provisioned until 'metalhall bootenv build' is run\n", strings.Join(rep.BootenvMissing, ", "))
				}
				fmt.Fprintf(w, "on hold: %d unfinished job(s) paused; 'metalhall serve' on it contacts no BMC until an admin runs 'metalhall job resume'\n", len(rep.PausedJobs))
			})
		}}
}

// restoreError gives restore's refusals their exit statuses: a command
// line to change is a usage error, the rest a refusal.
func restoreError(err error) error {
	var ne *backup.NotEmptyError
	switch {
	case errors.As(err, &ne):
		return usagef("restore: %v (--force)", err)
	case errors.Is(err, backup.ErrNoPassphrase):
		return usagef("restore: %v (--passphrase-file, or run it on a terminal)", err)
	case errors.Is(err, backup.ErrWrongPassphrase):
		return fmt.Errorf("restore: %w: nothing written", err)
	}
	var mi *backup.MissingImagesError
	if errors.As(err, &mi) {
		return fmt.Errorf("restore: %w (--allow-missing-images): nothing written", err)
	}
	var bp *backup.BrokenProfilesError
	if errors.As(err, &bp) {
		return fmt.Errorf("restore: %w (--allow-broken-profiles): nothing written", err)
	}
	return fmt.Errorf("%w: nothing written", err)
}
