package inventory

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/metalhall/metalhall/inventory/kv"
)

// bImages maps an image's key to the Image. A shared image's key is its
// name; a tenant's private image's key is TENANT/NAME, so each tenant has
// its own namespace and never collides with (or learns of) another's.
// Names and tenant names cannot hold '/', so the two never clash. A
// database written before names were scoped keeps private images under
// their bare name: lookupImage still finds them there.
var bImages = []byte("images")

func init() { extraBuckets = append(extraBuckets, bImages) }

// Image is a catalogue entry: an OS image whose bytes live in the images
// package's content-addressed blob store under SHA256.
type Image struct {
	Name               string    `json:"name"`
	Format             string    `json:"format"` // raw, raw.gz, raw.zst, raw.xz
	SHA256             string    `json:"sha256"` // of the stored blob
	Size               int64     `json:"size"`
	UncompressedSHA256 string    `json:"uncompressed_sha256"` // what ends up on disk
	UncompressedSize   int64     `json:"uncompressed_size"`
	MappedBytes        int64     `json:"mapped_bytes"` // non-zero bytes of the uncompressed image
	BlockMapRef        string    `json:"block_map_ref,omitempty"`
	Tenant             string    `json:"tenant,omitempty"` // private to this tenant when set
	CreatedAt          time.Time `json:"created_at"`
}

// VisibleTo is the one rule of image visibility for a tenant: shared
// images (no tenant) are everyone's, a private image its tenant's alone.
// For a tenant's caller an image it may not see does not exist. Staff see
// every image and do not ask.
func (img *Image) VisibleTo(tenant string) bool {
	return img.Tenant == "" || img.Tenant == tenant
}

// Ref is how staff, jobs and machines name an image unambiguously: NAME
// for a shared image, TENANT/NAME for a tenant's private one.
func (img *Image) Ref() string {
	if img.Tenant == "" {
		return img.Name
	}
	return img.Tenant + "/" + img.Name
}

// lookupImage finds an image by reference and returns the key it is
// stored under. TENANT/NAME is looked up under its own key first, then
// under the bare name where a database written before names were scoped
// kept it (found only if it belongs to that tenant). A bare NAME is
// whatever is stored under it: a shared image, or such an old private one.
func lookupImage(tx kv.Tx, ref string) (string, *Image, error) {
	tenant, name, scoped := strings.Cut(ref, "/")
	if !scoped {
		img, err := get[Image](tx, bImages, "image", ref)
		return ref, img, err
	}
	if img, err := get[Image](tx, bImages, "image", ref); err == nil || !errors.Is(err, ErrNotFound) {
		return ref, img, err
	}
	img, err := get[Image](tx, bImages, "image", name)
	if err == nil && img.Tenant != tenant {
		img, err = nil, &NotFoundError{Kind: "image", Name: ref}
	} else if errors.Is(err, ErrNotFound) {
		err = &NotFoundError{Kind: "image", Name: ref}
	}
	return name, img, err
}

// CreateImage adds an image to the catalogue, in its tenant's namespace
// when it has one (see bImages).
func (s *Store) CreateImage(ctx context.Context, img Image) (*Image, error) {
	if err := checkName("name", img.Name); err != nil {
		return nil, err
	}
	img.CreatedAt = s.now().UTC()
	err := s.update(func(tx kv.Tx) error {
		if img.Tenant != "" && !exists(tx, bTenants, img.Tenant) {
			return &NotFoundError{Kind: "tenant", Name: img.Tenant}
		}
		// For a private image this also finds the tenant's own image
		// stored under the bare name by an older database.
		if _, _, err := lookupImage(tx, img.Ref()); err == nil {
			return &ExistsError{Kind: "image", Name: img.Name}
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
		if img.Tenant == "" && exists(tx, bImages, img.Name) {
			// An older database's private image holds the bare key.
			return &ExistsError{Kind: "image", Name: img.Name}
		}
		return putJSON(bkt(tx, bImages), []byte(img.Ref()), img)
	})
	if err != nil {
		return nil, err
	}
	return &img, nil
}

// Image returns one image by reference (Image.Ref): NAME for a shared
// image, TENANT/NAME for a private one. It does not check who may see it:
// a tenant's lookups go through ImageFor.
func (s *Store) Image(ctx context.Context, ref string) (*Image, error) {
	var out *Image
	err := s.view(func(tx kv.Tx) (err error) { _, out, err = lookupImage(tx, ref); return })
	return out, err
}

// ImageFor resolves a name as a tenant sees it. The tenant's own image of
// that name wins over a shared one: a tenant's names are its own, so an
// image the operator adds later never changes what the tenant's name
// means (and refusing the tenant's name would only tell it what the
// operator plans). TENANT/NAME is accepted for the tenant's own tenant.
// An image the tenant may not see is a NotFoundError naming what it asked
// for, exactly as for a name nobody uses.
func (s *Store) ImageFor(ctx context.Context, tenant, name string) (*Image, error) {
	if own, ok := strings.CutPrefix(name, tenant+"/"); ok {
		name = own
	}
	notFound := &NotFoundError{Kind: "image", Name: name}
	if strings.Contains(name, "/") {
		return nil, notFound
	}
	var out *Image
	err := s.view(func(tx kv.Tx) error {
		for _, ref := range []string{tenant + "/" + name, name} {
			_, img, err := lookupImage(tx, ref)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if img.VisibleTo(tenant) {
				out = img
				return nil
			}
		}
		return notFound
	})
	return out, err
}

// Images lists the catalogue by name.
func (s *Store) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	err := s.view(func(tx kv.Tx) (err error) { out, err = list[Image](tx, bImages, nil); return })
	return out, err
}

// ImageForStaff resolves a name as staff give it: a ref (NAME of a
// shared image, TENANT/NAME of a private one); a bare NAME no shared
// image has names the one private image of that name, so staff need not
// know an image's tenant until two tenants use the name. Then the answer
// is an AmbiguousImageError naming the refs to choose from.
func (s *Store) ImageForStaff(ctx context.Context, name string) (*Image, error) {
	var out *Image
	err := s.view(func(tx kv.Tx) error {
		_, img, err := lookupImage(tx, name)
		if err == nil || !errors.Is(err, ErrNotFound) || strings.Contains(name, "/") {
			out = img
			return err
		}
		matches, err := list(tx, bImages, func(img *Image) bool { return img.Name == name })
		if err != nil {
			return err
		}
		switch len(matches) {
		case 0:
			return &NotFoundError{Kind: "image", Name: name}
		case 1:
			out = &matches[0]
			return nil
		}
		amb := &AmbiguousImageError{Name: name}
		for _, m := range matches {
			amb.Refs = append(amb.Refs, m.Ref())
		}
		return amb
	})
	return out, err
}

// AmbiguousImageError says a bare name is used by several tenants' private
// images and no shared one. It is a conflict (errors.Is ErrConflict).
type AmbiguousImageError struct {
	Name string
	Refs []string // TENANT/NAME of each
}

func (e *AmbiguousImageError) Error() string {
	return fmt.Sprintf("image %q is the name of %d tenants' private images (%s): name one as TENANT/NAME", e.Name, len(e.Refs), strings.Join(e.Refs, ", "))
}

func (e *AmbiguousImageError) Unwrap() error { return ErrConflict }

// ValidateImageName says whether name may name an image. The images
// package asks before it streams gigabytes, rather than learn it from
// CreateImage at the end.
func ValidateImageName(name string) error { return checkName("name", name) }

// DeleteImage removes an image, named by reference, from the catalogue. It is refused, with a
// ConflictError naming a machine, while a machine is deployed with it or
// being provisioned with it: the check and the delete are one transaction,
// so no provision can slip in between. Removing the blob is the images
// package's business.
func (s *Store) DeleteImage(ctx context.Context, ref string) error {
	return s.update(func(tx kv.Tx) error {
		key, img, err := lookupImage(tx, ref)
		if err != nil {
			return err
		}
		users, err := imageUsers(tx, key, img)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return &ConflictError{Msg: fmt.Sprintf("image %q is used by %d machine(s), e.g. %q: reimage or release them first", img.Name, len(users), users[0])}
		}
		return bkt(tx, bImages).Delete([]byte(key))
	})
}

// imageUsers names the machines deployed with or being provisioned with
// the image stored under key. A provision job names its image on the
// machine when it starts (StartJob), so machines being provisioned count
// too. Machines name images by Ref; those provisioned before names were
// scoped name them by the key they had then.
func imageUsers(tx kv.Tx, key string, img *Image) ([]string, error) {
	var users []string
	_, err := list(tx, bMachines, func(m *Machine) bool {
		if m.Image != "" && (m.Image == img.Ref() || m.Image == key) {
			users = append(users, m.Name)
		}
		return false
	})
	return users, err
}

// ImageUsers counts the machines deployed with or being provisioned with an
// image, named by reference.
func (s *Store) ImageUsers(ctx context.Context, ref string) (int, error) {
	n := 0
	err := s.view(func(tx kv.Tx) error {
		key, img, err := lookupImage(tx, ref)
		if err != nil {
			return err
		}
		users, err := imageUsers(tx, key, img)
		n = len(users)
		return err
	})
	return n, err
}
