package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/metalhall/metalhall/api"
	"github.com/metalhall/metalhall/images/progress"
)

func imageCommand() *cli.Command {
	return &cli.Command{Name: "image", Usage: "OS images: import, list, show, delete", Subcommands: []*cli.Command{
		{Name: "import", Usage: "import an image from a file (uploaded) or a URL (fetched by the service)",
			UsageText: `metalhall image import --file PATH|--url URL [--sha256 HEX] [--format raw|raw.gz|raw.zst|raw.xz] NAME

The checksum may be that of the file or of the uncompressed image. The
format is detected from the content; --format only double-checks it.`,
			Flags: []cli.Flag{&cli.StringFlag{Name: "file", Usage: "a local image file to upload"}, &cli.StringFlag{Name: "url", Usage: "an http(s) URL the service fetches the image from (allowed by --image-url-allow)"}, &cli.StringFlag{Name: "sha256", Usage: "the image's expected SHA-256, checked after the transfer"},
				&cli.StringFlag{Name: "format", Usage: "raw, raw.gz, raw.zst or raw.xz (default: what its first bytes say; given, it must agree)"}, &cli.StringFlag{Name: "tenant", Usage: "make the image private to a tenant"},
				&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress line"}, outputFlag()},
			Action: imageImport},
		{Name: "list", Usage: "list images", Flags: []cli.Flag{outputFlag()}, Action: func(c *cli.Context) error {
			out, err := api.Call(c.Context, client(c), api.Ops.ImageList(), api.NoBody{})
			if err != nil {
				return err
			}
			return show(c, out, func(w io.Writer) {
				rows := [][]string{}
				for _, img := range out {
					rows = append(rows, []string{img.Name, img.Format, progress.Bytes(img.Size), progress.Bytes(img.UncompressedSize),
						img.SHA256[:12], orDash(img.Tenant), when(img.CreatedAt)})
				}
				printTable(w, []string{"NAME", "FORMAT", "SIZE", "UNCOMPRESSED", "SHA256", "TENANT", "CREATED"}, rows)
			})
		}},
		{Name: "show", Usage: "one image", UsageText: "metalhall image show [--tenant TENANT] NAME", Flags: []cli.Flag{imageTenantFlag(), outputFlag()}, Action: func(c *cli.Context) error {
			n, err := imageRef(c)
			if err != nil {
				return err
			}
			img, err := api.Call(c.Context, client(c), api.Ops.ImageShow(), api.NoBody{}, n)
			if err != nil {
				return err
			}
			return show(c, img, func(w io.Writer) {
				mapped := "-"
				if img.UncompressedSize > 0 {
					mapped = fmt.Sprintf("%s (%d%%)", progress.Bytes(img.MappedBytes), img.MappedBytes*100/img.UncompressedSize)
				}
				printFields(w, "name", img.Name, "format", img.Format, "size", progress.Bytes(img.Size),
					"uncompressed", progress.Bytes(img.UncompressedSize), "mapped (non-zero)", mapped,
					"sha256", img.SHA256, "uncompressed sha256", img.UncompressedSHA256, "tenant", orDash(img.Tenant),
					"used by", fmt.Sprintf("%d machines", img.UsedBy), "created", when(img.CreatedAt))
			})
		}},
		{Name: "delete", Usage: "delete an image (refused while a machine is being provisioned with it)", UsageText: "metalhall image delete [--tenant TENANT] NAME",
			Flags: []cli.Flag{imageTenantFlag()},
			Action: func(c *cli.Context) error {
				n, err := imageRef(c)
				if err != nil {
					return err
				}
				if _, err := api.Call(c.Context, client(c), api.Ops.ImageDelete(), api.NoBody{}, n); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "image %s deleted\n", n)
				return nil
			}},
	}}
}

// imageTenantFlag lets staff name a tenant's private image, which may
// share its name with a shared image or another tenant's.
func imageTenantFlag() cli.Flag {
	return &cli.StringFlag{Name: "tenant", Usage: "the tenant whose private image NAME is (staff; the same as naming TENANT/NAME)"}
}

// imageRef is the image the command names: NAME (for a tenant, its own
// image of that name, else the shared one; for staff, the shared one) or,
// with --tenant, TENANT/NAME.
func imageRef(c *cli.Context) (string, error) {
	n, err := name(c, "image")
	if err != nil || c.String("tenant") == "" {
		return n, err
	}
	if strings.Contains(n, "/") {
		return "", usagef("give either --tenant or TENANT/NAME, not both")
	}
	return c.String("tenant") + "/" + n, nil
}

func imageImport(c *cli.Context) error {
	n, err := name(c, "image")
	if err != nil {
		return err
	}
	file, src := c.String("file"), c.String("url")
	if (file == "") == (src == "") {
		return usagef("image import: give exactly one of --file or --url")
	}
	var img api.Image
	if src != "" {
		in := api.ImageURLImport{Name: n, URL: src, SHA256: c.String("sha256"), Format: c.String("format"), Tenant: c.String("tenant")}
		var err error
		if img, err = api.Call(c.Context, client(c), api.Ops.ImageImportURL(), in); err != nil {
			return err
		}
	} else {
		f, err := os.Open(file)
		if err != nil {
			return usagef("--file: %v", err) // a file named on the command line
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		q := url.Values{"name": {n}}
		setQ(q, "sha256", c.String("sha256"))
		setQ(q, "format", c.String("format"))
		setQ(q, "tenant", c.String("tenant"))
		body := progress.NewReader(f, fi.Size())
		stop := make(chan struct{})
		done := make(chan struct{})
		if !c.Bool("quiet") && isTerminal(c.App.ErrWriter) {
			go func() { // the progress line, on stderr so stdout stays clean
				defer close(done)
				for {
					select {
					case <-stop:
						fmt.Fprintf(c.App.ErrWriter, "\r\033[K")
						return
					case <-time.After(500 * time.Millisecond):
						fmt.Fprintf(c.App.ErrWriter, "\r\033[Kuploading %s: %s", n, body.Stats())
					}
				}
			}()
		} else {
			close(done)
		}
		img, err = api.Call(c.Context, client(c), api.Ops.ImageImport().Query(q),
			api.Upload{ContentType: "application/octet-stream", Body: api.SizedReader{Reader: body, N: fi.Size()}})
		close(stop)
		<-done
		if err != nil {
			return err
		}
	}
	return show(c, img, func(w io.Writer) {
		fmt.Fprintf(w, "image %s imported: %s %s (%s uncompressed), sha256 %s\n", img.Name, img.Format,
			progress.Bytes(img.Size), progress.Bytes(img.UncompressedSize), img.SHA256)
	})
}
