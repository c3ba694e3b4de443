package inventory

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bImages = []byte("images") // name → Image

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

// CreateImage adds an image to the catalogue.
func (s *Store) CreateImage(ctx context.Context, img Image) (*Image, error) {
	if err := checkName("name", img.Name); err != nil {
		return nil, err
	}
	img.CreatedAt = s.now().UTC()
	err := s.update(func(tx *bolt.Tx) error {
		if exists(tx, bImages, img.Name) {
			return &ExistsError{Kind: "image", Name: img.Name}
		}
		if img.Tenant != "" && !exists(tx, bTenants, img.Tenant) {
			return &NotFoundError{Kind: "tenant", Name: img.Tenant}
		}
		return putJSON(bkt(tx, bImages), []byte(img.Name), img)
	})
	if err != nil {
		return nil, err
	}
	return &img, nil
}

// Image returns one image.
func (s *Store) Image(ctx context.Context, name string) (*Image, error) {
	var out *Image
	err := s.view(func(tx *bolt.Tx) (err error) { out, err = get[Image](tx, bImages, "image", name); return })
	return out, err
}

// Images lists the catalogue by name.
func (s *Store) Images(ctx context.Context) ([]Image, error) {
	var out []Image
	err := s.view(func(tx *bolt.Tx) (err error) { out, err = list[Image](tx, bImages, nil); return })
	return out, err
}

// ValidateImageName says whether name may name an image. The images
// package asks before it streams gigabytes, rather than learn it from
// CreateImage at the end.
func ValidateImageName(name string) error { return checkName("name", name) }

// DeleteImage removes an image from the catalogue. It is refused, with a
// ConflictError naming a machine, while a machine is deployed with it or
// being provisioned with it: the check and the delete are one transaction,
// so no provision can slip in between. Removing the blob is the images
// package's business.
func (s *Store) DeleteImage(ctx context.Context, name string) error {
	return s.update(func(tx *bolt.Tx) error {
		if _, err := get[Image](tx, bImages, "image", name); err != nil {
			return err
		}
		// A provision job names its image on the machine when it starts
		// (StartJob), so machines being provisioned count here too.
		var users []string
		if _, err := list(tx, bMachines, func(m *Machine) bool {
			if m.Image == name {
				users = append(users, m.Name)
			}
			return false
		}); err != nil {
			return err
		}
		if len(users) > 0 {
			return &ConflictError{Msg: fmt.Sprintf("image %q is used by %d machine(s), e.g. %q: reimage or release them first", name, len(users), users[0])}
		}
		return bkt(tx, bImages).Delete([]byte(name))
	})
}

// ImageUsers counts the machines deployed with or being provisioned with an
// image.
func (s *Store) ImageUsers(ctx context.Context, name string) (int, error) {
	n := 0
	err := s.view(func(tx *bolt.Tx) error {
		_, err := list(tx, bMachines, func(m *Machine) bool {
			if m.Image == name {
				n++
			}
			return false
		})
		return err
	})
	return n, err
}
