package provisioner

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/metalhall/metalhall/agent/wire"
	"github.com/metalhall/metalhall/images"
	"github.com/metalhall/metalhall/images/imagefmt"
	"github.com/metalhall/metalhall/inventory"
)

// ImageStore describes catalogue images for the agent, streaming from the
// service's blob handler under BaseURL/images/.
type ImageStore struct {
	Inv     *inventory.Store
	Store   *images.Store
	BaseURL string
}

// Spec is the agent's view of an image, named by ref (inventory.Image.Ref,
// as the provision job records it): where to stream it, how it is
// compressed, what checksum the written disk must have, and which regions
// hold data.
func (s ImageStore) Spec(ctx context.Context, ref string) (*wire.ImageSpec, error) {
	img, err := s.Inv.Image(ctx, ref)
	if err != nil {
		return nil, err
	}
	format, err := imagefmt.Parse(img.Format)
	if err != nil || format == "" {
		return nil, fmt.Errorf("image %q has format %q, which the agent cannot write", ref, img.Format)
	}
	spec := &wire.ImageSpec{URL: strings.TrimRight(s.BaseURL, "/") + "/images/" + img.SHA256, Format: string(format), Size: img.Size,
		SHA256: img.UncompressedSHA256, UncompressedSize: img.UncompressedSize}
	bm, err := s.Store.BlockMap(ctx, img)
	if err != nil {
		return nil, fmt.Errorf("image %q: block map: %w", ref, err)
	}
	for _, e := range bm.Extents {
		spec.BlockMap = append(spec.BlockMap, wire.Range{Offset: e.Offset, Length: e.Length})
	}
	return spec, nil
}

// AuthorizeImage lets an agent read the image its provision job writes,
// and nothing else, from the machine's own address. A request without an
// agent token gets ErrNotAgent: the provisioning listener serves blobs to
// agents only; the admin listener asks the API's tokens instead.
func (e *Engine) AuthorizeImage(r *http.Request, img *inventory.Image) error {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.HasPrefix(tok, "ag_") {
		return ErrNotAgent
	}
	j, err := e.jobForToken(r.Context(), tok)
	if err != nil {
		return err
	}
	if err := e.checkSource(r, j); err != nil {
		return err
	}
	// The job names its image by ref (a job from before names were
	// scoped, by its bare name): compare the blob, which is what the
	// agent reads, not the name another tenant may also use.
	if j.Kind == inventory.JobProvision {
		if mine, err := e.inv.Image(r.Context(), j.Image); err == nil && mine.SHA256 == img.SHA256 {
			return nil
		}
	}
	return fmt.Errorf("job %s does not write image %q: %w", j.ID, img.Ref(), inventory.ErrNotFound)
}

// ErrNotAgent says a request carries no agent token.
var ErrNotAgent = fmt.Errorf("not an agent token")
