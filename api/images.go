package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/inventory"
)

// ImageStore is what the API needs of the image store.
type ImageStore interface {
	Import(ctx context.Context, r io.Reader, opts images.ImportOptions) (*inventory.Image, error)
	ImportURL(ctx context.Context, url string, opts images.ImportOptions) (*inventory.Image, error)
	Delete(ctx context.Context, name string) error
}

// ImageURLImport asks the service to fetch an image itself.
type ImageURLImport struct {
	Name   string `json:"name"`
	URL    string `json:"url"`
	SHA256 string `json:"sha256,omitempty"`
	Format string `json:"format,omitempty"`
	Tenant string `json:"tenant,omitempty"`
}

// Image is a catalogue entry with how many machines use it. Ref is how
// to name it unambiguously (TENANT/NAME for a private image), as staff
// must when a tenant's image shares a name with a shared one.
type Image struct {
	inventory.Image
	Ref    string `json:"ref"`
	UsedBy int    `json:"used_by"`
}

var errNoImages = &httpError{http.StatusServiceUnavailable, "unavailable", "this service has no image store configured"}

func (s *Server) imageRoutes() []route {
	return []route{
		{method: "GET", pattern: "/api/v1/images", action: "image.list", summary: "List images (a tenant sees shared images and its own)", roles: everyone, reply: []Image{}, handle: s.listImages},
		{method: "GET", pattern: "/api/v1/images/{name}", action: "image.show", summary: "One image: sizes, checksums, format, users", roles: everyone, scope: scopeImage, reply: Image{}, handle: s.showImage},
		{method: "POST", pattern: "/api/v1/images", action: "image.import", summary: "Upload an image as the request body (query: name, sha256, format, tenant)", roles: everyone, body: "image", reply: Image{}, handle: s.importImage},
		{method: "POST", pattern: "/api/v1/images/import-url", action: "image.import-url", summary: "Have the service fetch an image from a URL", roles: staff, body: ImageURLImport{}, reply: Image{}, handle: s.importImageURL},
		{method: "DELETE", pattern: "/api/v1/images/{name}", action: "image.delete", summary: "Delete an image no machine is being provisioned with", roles: everyone, scope: scopeImage, handle: s.deleteImage},
	}
}

// visibleImage resolves a name as the caller sees it: a tenant sees
// shared images and its own private ones, its own first when both have
// the name; others' do not exist for it. Staff name an image by its ref
// (NAME for a shared image, TENANT/NAME for a private one), or by a bare
// name only one tenant's image has.
func (s *Server) visibleImage(c *call, name string) (*inventory.Image, error) {
	return s.resolveImage(c.ctx(), c.p, name)
}

func (s *Server) resolveImage(ctx context.Context, p Principal, name string) (*inventory.Image, error) {
	if p.Role == inventory.RoleTenant {
		img, err := s.inv.ImageFor(ctx, p.Tenant, name)
		if errors.Is(err, inventory.ErrNotFound) {
			return nil, notFound("image", name)
		}
		return img, err
	}
	return s.inv.ImageForStaff(ctx, name)
}

func (s *Server) imageView(c *call, img inventory.Image) Image {
	n, _ := s.inv.ImageUsers(c.ctx(), img.Ref())
	return Image{Image: img, Ref: img.Ref(), UsedBy: n}
}

func (s *Server) listImages(c *call) (int, any, error) {
	imgs, err := s.inv.Images(c.ctx())
	out := []Image{}
	for _, img := range imgs {
		if c.p.Role == inventory.RoleTenant && !img.VisibleTo(c.p.Tenant) {
			continue
		}
		out = append(out, Image{Image: img, Ref: img.Ref()})
	}
	return http.StatusOK, out, err
}

func (s *Server) showImage(c *call) (int, any, error) {
	img, err := s.visibleImage(c, c.r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.imageView(c, *img), nil
}

// importOptions fixes who an image belongs to: a tenant's uploads are its
// own private images, named in its own namespace, so a tenant can never
// create a shared image nor learn of another tenant's names.
func (s *Server) importOptions(c *call, opts images.ImportOptions) (images.ImportOptions, error) {
	if c.p.Role == inventory.RoleTenant {
		if opts.Tenant != "" && opts.Tenant != c.p.Tenant {
			return opts, forbidden("a tenant token may only import images for its own tenant")
		}
		opts.Tenant = c.p.Tenant
	}
	c.subject = "image/" + (&inventory.Image{Name: opts.Name, Tenant: opts.Tenant}).Ref()
	return opts, nil
}

func (s *Server) importImage(c *call) (int, any, error) {
	if s.images == nil {
		return 0, nil, errNoImages
	}
	q := c.r.URL.Query()
	opts, err := s.importOptions(c, images.ImportOptions{Name: q.Get("name"), SHA256: q.Get("sha256"), Format: q.Get("format"), Tenant: q.Get("tenant")})
	if err != nil {
		return 0, nil, err
	}
	// The body is streamed to disk as it arrives, within the store's
	// limits (uncompressed size, tenant quota, imports at once).
	img, err := s.images.Import(c.ctx(), c.r.Body, opts)
	if err != nil {
		return 0, nil, err
	}
	c.detail = fmt.Sprintf("%d bytes, sha256 %s", img.Size, img.SHA256)
	return http.StatusCreated, Image{Image: *img, Ref: img.Ref()}, nil
}

func (s *Server) importImageURL(c *call) (int, any, error) {
	if s.images == nil {
		return 0, nil, errNoImages
	}
	var in ImageURLImport
	if err := c.decode(&in); err != nil {
		return 0, nil, err
	}
	opts, err := s.importOptions(c, images.ImportOptions{Name: in.Name, SHA256: in.SHA256, Format: in.Format, Tenant: in.Tenant})
	if err != nil {
		return 0, nil, err
	}
	img, err := s.images.ImportURL(c.ctx(), in.URL, opts)
	if err != nil {
		return 0, nil, err
	}
	c.detail = fmt.Sprintf("from %s: %d bytes, sha256 %s", in.URL, img.Size, img.SHA256)
	return http.StatusCreated, Image{Image: *img, Ref: img.Ref()}, nil
}

func (s *Server) deleteImage(c *call) (int, any, error) {
	if s.images == nil {
		return 0, nil, errNoImages
	}
	name := c.r.PathValue("name")
	c.subject = "image/" + name
	img, err := s.visibleImage(c, name)
	if err != nil {
		return 0, nil, err
	}
	if c.p.Role == inventory.RoleTenant && img.Tenant != c.p.Tenant {
		return 0, nil, forbidden("a tenant token may only delete its own images")
	}
	c.subject = "image/" + img.Ref()
	return http.StatusNoContent, nil, s.images.Delete(c.ctx(), img.Ref())
}

// AuthorizeImage is the blob handler's access check for API tokens: staff
// read every image, a tenant the shared ones and its own.
func (s *Server) AuthorizeImage(r *http.Request, img *inventory.Image) error {
	p, err := s.authenticate(r)
	if err != nil {
		return err
	}
	if p.Role == inventory.RoleTenant && !img.VisibleTo(p.Tenant) {
		return fmt.Errorf("image %q: %w", img.Name, inventory.ErrNotFound)
	}
	return nil
}
