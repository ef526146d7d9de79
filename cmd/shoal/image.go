package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/runtime/demo"
)

func newImageCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Load, list and prefetch container images",
		Long: `Load, list and prefetch the cluster's container images.

No registry is needed: build the demo image with 'shoal image build-demo', or
save any image with 'docker save' (or 'ctr image export'), and load the
archive on one node with 'shoal image load'. The other nodes fetch it from
the nodes that hold it, over the peer plane, when they first need it, or at
once with 'shoal image prefetch'.`,
		Args: nArgs(0, 0, "a subcommand: load, ls, prefetch or build-demo"),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newImageLoadCmd(g), newImageLsCmd(g), newImagePrefetchCmd(g), newImageBuildDemoCmd())
	return cmd
}

func newImageLoadCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "load FILE",
		Short: "Load an image archive into a node's runtime",
		Long: `Load an image archive into the container runtime of the node at --addr, and
print the images it held. FILE is a 'docker save' tarball or an OCI image
archive (uncompressed); '-' reads it from standard input. The archive is
streamed to the node, never held in memory.`,
		Example: `  shoal image load demo.tar
  docker save nginx:1.27 | shoal image load -`,
		Args: nArgs(1, 1, "one archive FILE, or - for standard input"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r io.Reader
			if args[0] == "-" {
				r = cmd.InOrStdin()
				if f, ok := r.(*os.File); ok {
					if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
						return errors.New("standard input is a terminal: pipe an image archive into it, or give a FILE")
					}
				}
			} else {
				f, err := os.Open(args[0])
				if err != nil {
					return err // *PathError: "open FILE: no such file or directory"
				}
				defer f.Close()
				if fi, err := f.Stat(); err == nil && fi.IsDir() {
					return fmt.Errorf("%s is a directory, not an image archive", args[0])
				}
				r = f
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			imgs, err := c.LoadImage(ctx(cmd), r)
			if err != nil {
				return fmt.Errorf("loading %s: %w", archiveName(args[0]), err)
			}
			return printImages(cmd.OutOrStdout(), g.json(), false, imgs)
		},
	}
}

// archiveName names a load argument in messages.
func archiveName(arg string) string {
	if arg == "-" {
		return "standard input"
	}
	return arg
}

func newImageLsCmd(g *globals) *cobra.Command {
	var local bool
	cmd := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the cluster's images and the nodes that hold them",
		Long: `List every image a node of the cluster holds, once per name and digest,
with the nodes that hold it. With --local, only the images of the node at
--addr. With -o json the output is a JSON list with full digests.`,
		Args: nArgs(0, 0, "no arguments"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list := c.Images
			if local {
				list = c.LocalImages
			}
			imgs, err := list(ctx(cmd))
			if err != nil {
				return err
			}
			return printImages(cmd.OutOrStdout(), g.json(), !local, imgs)
		},
	}
	cmd.Flags().BoolVar(&local, "local", false, "only the images of the node at --addr")
	return cmd
}

// printImages prints images as a JSON list or a table (with a NODES
// column when withNodes).
func printImages(w io.Writer, asJSON, withNodes bool, imgs []api.Image) error {
	if asJSON {
		if imgs == nil {
			imgs = []api.Image{}
		}
		return writeJSON(w, imgs)
	}
	cols := []string{"NAME", "DIGEST", "SIZE", "PLATFORMS"}
	if withNodes {
		cols = append(cols, "NODES")
	}
	t := newTable(w, cols...)
	for _, img := range imgs {
		row := []string{img.Name, shortDigest(img.Digest), formatSize(img.Size), strings.Join(img.Platforms, ",")}
		if withNodes {
			row = append(row, strings.Join(img.Nodes, ","))
		}
		t.row(row...)
	}
	return t.flush()
}

// shortDigest shortens "sha256:<64 hex>" to "sha256:<12 hex>".
func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12]
}

// formatSize formats a byte count in decimal units with about three
// significant digits, as docker does ("0B", "812B", "6.1MB", "1.23GB").
func formatSize(n int64) string {
	if n < 1000 {
		return fmt.Sprintf("%dB", n)
	}
	f, unit := float64(n), ""
	for _, unit = range []string{"kB", "MB", "GB", "TB"} {
		f /= 1000
		if f < 1000 {
			break
		}
	}
	decimals := 0
	switch {
	case f < 10:
		decimals = 2
	case f < 100:
		decimals = 1
	}
	s := strconv.FormatFloat(f, 'f', decimals, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s + unit
}

func newImageBuildDemoCmd() *cobra.Command {
	var out, binary string
	opts := demo.Options{}
	cmd := &cobra.Command{
		Use:   "build-demo -o FILE",
		Short: "Build the demo image archive",
		Long: `Build the demo image: the running shoal binary at /shoal, started as
'/shoal demo-server' (an HTTP server on $PORT, 8080, answering which replica
served the request, with /healthz for probes). No registry or Docker daemon is
used. Write it to FILE as an OCI archive (default) or a 'docker save'
tarball, then load it on the nodes with 'shoal image load FILE'.

The image has no libc, so shoal must be statically linked (built with
CGO_ENABLED=0). For another --platform, pass a shoal built for it with
--binary.`,
		Example: `  shoal image build-demo -o demo.tar
  shoal image build-demo -o demo.tar --name demo:1 --format docker
  GOARCH=arm64 CGO_ENABLED=0 go build -o shoal-arm64 ./cmd/shoal
  shoal image build-demo -o demo-arm64.tar --platform linux/arm64 --binary ./shoal-arm64`,
		Args: nArgs(0, 0, "no arguments (the archive goes to -o FILE)"),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError(cmd, "build-demo needs -o FILE (or -o - for standard output)")
			}
			opts.Binary = binary
			if out == "-" {
				w := cmd.OutOrStdout()
				if f, ok := w.(*os.File); ok {
					if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
						return errors.New("standard output is a terminal: redirect it, or give -o FILE")
					}
				}
				return demo.WriteArchive(w, opts)
			}
			size, err := writeFileAtomic(out, func(w io.Writer) error { return demo.WriteArchive(w, opts) })
			if err != nil {
				return err
			}
			name := opts.Name
			if name == "" {
				name = demo.DefaultName
			}
			format := opts.Format
			if format == "" {
				format = demo.FormatOCI
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s (%s archive, %s)\n", out, name, format, formatSize(size))
			return nil
		},
	}
	f := cmd.Flags()
	// -o/--output here names the archive file; it shadows the global
	// -o/--output (table or json), which this command does not use.
	f.StringVarP(&out, "output", "o", "", "file to write the archive to ('-': standard output)")
	f.StringVar(&opts.Name, "name", demo.DefaultName, "image name (a tag)")
	f.StringVar(&opts.Format, "format", demo.FormatOCI, "archive format: oci or docker")
	f.StringVar(&opts.Platform, "platform", "", "image platform os/arch[/variant] (default: this machine's)")
	f.StringVar(&binary, "binary", "", "static shoal binary to pack (default: the running one)")
	_ = cmd.RegisterFlagCompletionFunc("format", cobra.FixedCompletions([]string{demo.FormatOCI, demo.FormatDocker}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// writeFileAtomic writes path through write: into a temporary file in the
// same directory, renamed over path only when write succeeded, so a
// failure never leaves a partial archive. It returns the file's size.
func writeFileAtomic(path string, write func(io.Writer) error) (int64, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, err
	}
	fail := func(err error) (int64, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return 0, err
	}
	if err := write(tmp); err != nil {
		return fail(err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		return fail(err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return 0, err
	}
	return fi.Size(), nil
}
