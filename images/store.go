// Package images is the OS image catalogue and its content-addressed blob
// store.
//
// The catalogue (names, formats, checksums, owners) lives in the inventory
// database; the bytes live in files named by their sha256 under
// DIR/blobs/sha256/ab/abcdef…, each with its zero-block map beside it
// (abcdef….bmap.json). Import streams an image into a temp file while it
// checksums it, detects and checks its format, decompresses it once to
// learn the uncompressed checksum and map, and only then renames it into
// place and adds the catalogue entry: a failed or cancelled import leaves
// nothing behind. Identical content is stored once.
package images

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// Catalogue is what this package needs of the inventory; *inventory.Store
// is one.
type Catalogue interface {
	CreateImage(ctx context.Context, img inventory.Image) (*inventory.Image, error)
	Image(ctx context.Context, ref string) (*inventory.Image, error) // ref: inventory.Image.Ref
	Images(ctx context.Context) ([]inventory.Image, error)
	DeleteImage(ctx context.Context, ref string) error
	Tenant(ctx context.Context, name string) (*inventory.Tenant, error)
}

var _ Catalogue = (*inventory.Store)(nil)

// Options tune Open.
type Options struct {
	// BlockSize is the zero-map granularity, a power of two of at least
	// 4 KiB. Default imagefmt.BlockSize.
	BlockSize int64
	// MaxImageSize caps an image's uncompressed size; a stream that
	// decodes past it is stopped there. Default DefaultMaxImageSize.
	MaxImageSize int64
	// MaxImports is how many imports run at once; more are refused
	// (ErrBusy). Each costs a decoder's CPU and memory. Default 4.
	MaxImports int
	// TenantQuota caps the stored bytes of one tenant's images, imports
	// in flight included. Staff images are not counted. Default
	// DefaultTenantQuota; negative: no quota.
	TenantQuota int64
	// URLPolicy says where ImportURL may fetch from; the zero policy
	// allows nothing.
	URLPolicy URLPolicy
	// StallTimeout aborts an ImportURL download when no byte has arrived
	// for this long. Default one minute.
	StallTimeout time.Duration
	// NoSync skips fsync. Only for tests and benchmarks.
	NoSync bool
	Logger *slog.Logger
	// Peers, when set, is where a blob the catalogue names but this store
	// lacks is fetched from (instances sharing one catalogue).
	Peers *Peers
}

// Store is the blob store and the catalogue operations over it. It is safe
// for concurrent use.
type Store struct {
	dir    string // DIR/blobs
	cat    Catalogue
	opts   Options
	log    *slog.Logger
	noSync bool
	client *http.Client // ImportURL's, bound to opts.URLPolicy
	// peerClient fetches blobs from peers (Options.Peers without a Client).
	peerClient *http.Client

	// commit serialises the moments that tie blobs to catalogue entries:
	// an import's rename + CreateImage, a Delete, a GC sweep. Without it a
	// GC could remove a blob between an import's rename and its catalogue
	// entry. Streaming happens outside it.
	commit sync.Mutex

	// mu guards the in-flight state below.
	mu        sync.Mutex
	importing map[string]bool       // refs (inventory.Image.Ref) of images being imported
	temps     map[string]bool       // temp files of imports in flight
	inflight  map[string]int64      // bytes received by each tenant's imports in flight
	fetching  map[string]*fetchCall // blobs being fetched from a peer, by sha256

	slots chan struct{} // one per running import; cap Options.MaxImports

	metrics *storeMetrics
}

// Defaults of Options.
const (
	DefaultMaxImageSize = 256 << 30
	DefaultTenantQuota  = 100 << 30
	DefaultMaxImports   = 4
)

// Open opens the blob store under dir (created if needed) with cat as its
// catalogue. Temp files left by a crash are removed: at Open no import can
// be in flight, since the database lock keeps a second service out.
func Open(dir string, cat Catalogue, opts Options) (*Store, error) {
	if opts.BlockSize == 0 {
		opts.BlockSize = imagefmt.BlockSize
	}
	if opts.MaxImageSize == 0 {
		opts.MaxImageSize = DefaultMaxImageSize
	}
	if opts.MaxImports == 0 {
		opts.MaxImports = DefaultMaxImports
	}
	if opts.TenantQuota == 0 {
		opts.TenantQuota = DefaultTenantQuota
	}
	if opts.MaxImageSize < 0 || opts.MaxImports < 0 {
		return nil, fmt.Errorf("image store: max image size %d and max imports %d must be positive", opts.MaxImageSize, opts.MaxImports)
	}
	if opts.BlockSize < 4096 || opts.BlockSize&(opts.BlockSize-1) != 0 {
		return nil, fmt.Errorf("image store: block size %d is not a power of two of at least 4096", opts.BlockSize)
	}
	if opts.StallTimeout == 0 {
		opts.StallTimeout = time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Peers != nil && (opts.Peers.URLs == nil || len(opts.Peers.Key) < 16) {
		return nil, errors.New("image store: fetching from peers needs their URLs and a key of at least 16 bytes")
	}
	s := &Store{
		dir: filepath.Join(dir, "blobs"), cat: cat, opts: opts, log: opts.Logger, noSync: opts.NoSync,
		importing: make(map[string]bool), temps: make(map[string]bool), inflight: make(map[string]int64), fetching: make(map[string]*fetchCall),
		slots: make(chan struct{}, opts.MaxImports),
	}
	s.client = newHTTPClient(&s.opts.URLPolicy)
	s.peerClient = defaultPeerClient()
	s.metrics = newStoreMetrics(s)
	for _, d := range []string{s.tmpDir(), filepath.Join(s.dir, "sha256")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("image store: %w", err)
		}
	}
	stale, err := filepath.Glob(filepath.Join(s.tmpDir(), "*"))
	if err != nil {
		return nil, fmt.Errorf("image store: %w", err)
	}
	for _, p := range stale {
		if err := os.Remove(p); err != nil {
			return nil, fmt.Errorf("image store: remove stale temp file: %w", err)
		}
		s.log.Info("removed temp file of an interrupted import", "path", p)
	}
	return s, nil
}

func (s *Store) tmpDir() string { return filepath.Join(s.dir, "tmp") }

// ValidSHA256 says whether s is a sha256 as the store writes it: 64
// lowercase hex digits. Paths are built only from such strings.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// BlobPath is where the blob with this sha256 lives (whether or not it
// exists). It refuses anything but a valid sha256, so no caller can build a
// path out of the store from user input.
func (s *Store) BlobPath(sha string) (string, error) {
	if !ValidSHA256(sha) {
		return "", invalid("sha256", "%q is not a sha256 (64 lowercase hex digits)", sha)
	}
	return filepath.Join(s.dir, "sha256", sha[:2], sha), nil
}

func blockMapPath(blob string) string { return blob + ".bmap.json" }

// BlobFiles are the files of the blob with this sha256 (the blob and its
// block map), as slash-separated paths relative to the directory Open
// was given: what a backup carries and a restore puts back.
func BlobFiles(sha string) (blob, blockMap string, err error) {
	if !ValidSHA256(sha) {
		return "", "", invalid("sha256", "%q is not a sha256 (64 lowercase hex digits)", sha)
	}
	blob = "blobs/" + "sha256/" + sha[:2] + "/" + sha
	return blob, blockMapPath(blob), nil
}

// blockMapRef is Image.BlockMapRef: the map's path relative to the blob
// directory, so the data dir can move.
func blockMapRef(sha string) string { return "sha256/" + sha[:2] + "/" + sha + ".bmap.json" }

// OpenBlob opens a stored blob for reading.
func (s *Store) OpenBlob(sha string) (*os.File, error) {
	p, err := s.BlobPath(sha)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &inventory.NotFoundError{Kind: "blob", Name: sha}
	}
	return f, err
}

// BlockMap reads the zero-block map of an image.
//
// With Options.Peers, a blob missing here is fetched from a peer first
// (the agent streams it from this instance next).
func (s *Store) BlockMap(ctx context.Context, img *inventory.Image) (*imagefmt.BlockMap, error) {
	if err := s.ensureBlob(ctx, img); err != nil {
		return nil, err
	}
	p, err := s.BlobPath(img.SHA256)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", img.Name, err)
	}
	data, err := os.ReadFile(blockMapPath(p))
	if err != nil {
		return nil, fmt.Errorf("image %q: block map: %w", img.Name, err)
	}
	var m imagefmt.BlockMap
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("image %q: block map: %w", img.Name, err)
	}
	// A map stored before MaxExtents existed may be longer: merging its
	// extents loses nothing but some skipped zeros.
	if len(m.Extents) > imagefmt.MaxExtents {
		m.Coarsen(imagefmt.MaxExtents)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("image %q: %w", img.Name, err)
	}
	return &m, nil
}

// Delete removes an image, named by reference (inventory.Image.Ref),
// from the catalogue, and its blob when no other
// image shares it. It is refused (inventory.ErrConflict) while a machine
// is deployed with or being provisioned with the image.
func (s *Store) Delete(ctx context.Context, name string) error {
	s.commit.Lock()
	defer s.commit.Unlock()
	img, err := s.cat.Image(ctx, name)
	if err != nil {
		return err
	}
	if err := s.cat.DeleteImage(ctx, name); err != nil {
		return err
	}
	shared, err := s.referenced(ctx, img.SHA256)
	if err != nil {
		// The entry is gone; the blob is an orphan GC will find.
		return fmt.Errorf("image %q deleted, blob kept for GC: %w", name, err)
	}
	if !shared {
		if err := s.removeBlob(img.SHA256); err != nil {
			return fmt.Errorf("image %q deleted, blob kept for GC: %w", name, err)
		}
	}
	s.log.Info("image deleted", "image", name, "sha256", img.SHA256, "blob_removed", !shared)
	return nil
}

func (s *Store) referenced(ctx context.Context, sha string) (bool, error) {
	imgs, err := s.cat.Images(ctx)
	if err != nil {
		return false, err
	}
	for _, im := range imgs {
		if im.SHA256 == sha {
			return true, nil
		}
	}
	return false, nil
}

// removeBlob removes a blob and its map. Readers that have it open keep
// reading: an unlinked file lives until its last descriptor is closed.
func (s *Store) removeBlob(sha string) error {
	p, err := s.BlobPath(sha)
	if err != nil {
		return err
	}
	for _, f := range []string{p, blockMapPath(p)} {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// GCReport says what a GC removed.
type GCReport struct {
	Blobs     []string `json:"blobs"`      // sha256 of the removed blobs
	Bytes     int64    `json:"bytes"`      // space freed, maps and temp files included
	TempFiles int      `json:"temp_files"` // temp files no import owns
}

// GC removes blobs (and maps) no catalogue entry references, and temp files
// no running import owns. Delete already removes a blob when its last image
// goes; GC catches what a crash or a failed removal left.
func (s *Store) GC(ctx context.Context) (*GCReport, error) {
	s.commit.Lock()
	defer s.commit.Unlock()
	imgs, err := s.cat.Images(ctx)
	if err != nil {
		return nil, fmt.Errorf("image gc: %w", err)
	}
	keep := make(map[string]bool, len(imgs))
	for _, im := range imgs {
		keep[im.SHA256] = true
	}
	rep := &GCReport{Blobs: []string{}}
	root := filepath.Join(s.dir, "sha256")
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		name := d.Name()
		sha := strings.TrimSuffix(name, ".bmap.json")
		if keep[sha] {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		rep.Bytes += info.Size()
		if ValidSHA256(name) {
			rep.Blobs = append(rep.Blobs, name)
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("image gc: %w", err)
	}
	tmps, _ := filepath.Glob(filepath.Join(s.tmpDir(), "*"))
	for _, p := range tmps {
		s.mu.Lock()
		busy := s.temps[p]
		s.mu.Unlock()
		if busy {
			continue
		}
		if info, err := os.Stat(p); err == nil && os.Remove(p) == nil {
			rep.Bytes += info.Size()
			rep.TempFiles++
		}
	}
	s.log.Info("image gc", "blobs_removed", len(rep.Blobs), "bytes", rep.Bytes, "temp_files", rep.TempFiles)
	return rep, nil
}

func hexSum(b []byte) string { return hex.EncodeToString(b) }
