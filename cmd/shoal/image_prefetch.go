package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/shoalmesh/shoal/node/api"
)

func newImagePrefetchCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "prefetch IMAGE",
		Short: "Copy an image to every node ahead of need",
		Long: `Have every live node pull IMAGE now, from the nodes that hold it (over the
peer plane), rather than when a replica first needs it. The node at --addr
pins IMAGE to the digest it or its peers hold, so every node gets the same
bytes. Progress is shown per node; the command fails if any node failed.
With -o json, each progress line is printed as JSON as it arrives.`,
		Example: `  shoal image load demo.tar && shoal image prefetch shoal-demo:latest`,
		Args:    nArgs(1, 1, "one IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			var r progressRenderer
			if g.json() {
				r = &jsonProgress{w: out}
			} else {
				r = newBarProgress(out, isTerminal(out))
			}
			if err := c.Prefetch(ctx(cmd), args[0], r.update); err != nil {
				return err
			}
			return r.finish()
		},
	}
}

// isTerminal reports whether w is a terminal (progress is redrawn in
// place there, printed line by line elsewhere).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progressRenderer shows prefetch progress.
type progressRenderer interface {
	update(api.PrefetchProgress)
	// finish prints the summary and returns an error if a node failed.
	finish() error
}

// jsonProgress prints every progress line as JSON.
type jsonProgress struct {
	w      io.Writer
	failed []string
}

func (j *jsonProgress) update(p api.PrefetchProgress) {
	_ = json.NewEncoder(j.w).Encode(p) // one line per event
	if p.State == "failed" {
		j.failed = append(j.failed, p.Node)
	}
}

func (j *jsonProgress) finish() error { return failedNodes(j.failed) }

// barProgress draws one bar per node: redrawn in place on a terminal,
// else one line when a node starts and one when it ends.
type barProgress struct {
	w     io.Writer
	tty   bool
	order []string
	last  map[string]api.PrefetchProgress
	drawn int // lines drawn last time (tty)
}

func newBarProgress(w io.Writer, tty bool) *barProgress {
	return &barProgress{w: w, tty: tty, last: map[string]api.PrefetchProgress{}}
}

func (b *barProgress) update(p api.PrefetchProgress) {
	prev, seen := b.last[p.Node]
	if !seen {
		b.order = append(b.order, p.Node)
		slices.Sort(b.order)
	}
	b.last[p.Node] = p
	if b.tty {
		b.redraw()
		return
	}
	if !seen || prev.State != p.State && p.State != "pulling" {
		fmt.Fprintln(b.w, b.line(p))
	}
}

func (b *barProgress) redraw() {
	if b.drawn > 0 {
		fmt.Fprintf(b.w, "\x1b[%dA", b.drawn) // cursor up
	}
	for _, n := range b.order {
		fmt.Fprintf(b.w, "\x1b[2K%s\n", b.line(b.last[n]))
	}
	b.drawn = len(b.order)
}

// line is one node's progress: name, bar, bytes, state.
func (b *barProgress) line(p api.PrefetchProgress) string {
	const width = 30
	filled := 0
	if p.Total > 0 {
		filled = int(int64(width) * min(p.Done, p.Total) / p.Total)
	}
	if p.State == "done" {
		filled = width
	}
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	if filled > 0 && filled < width {
		bar = strings.Repeat("=", filled-1) + ">" + strings.Repeat(" ", width-filled)
	}
	size := "?"
	if p.Total > 0 {
		size = formatSize(p.Total)
	}
	status := fmt.Sprintf("%s/%s", formatSize(p.Done), size)
	switch p.State {
	case "pulling":
		if p.Total == 0 {
			status = "pulling"
		}
	case "done":
		status = fmt.Sprintf("%s done in %.1fs", formatSize(p.Total), p.Seconds)
	case "failed":
		status = "failed: " + p.Error
	}
	return fmt.Sprintf("%-16s [%s] %s", p.Node, bar, status)
}

func (b *barProgress) finish() error {
	var failed []string
	for _, n := range b.order {
		if b.last[n].State != "done" {
			failed = append(failed, n)
		}
	}
	if len(failed) == 0 && len(b.order) > 0 {
		nodes := "nodes"
		if len(b.order) == 1 {
			nodes = "node"
		}
		fmt.Fprintf(b.w, "%s is on %d %s\n", b.last[b.order[0]].Image, len(b.order), nodes)
	}
	return failedNodes(failed)
}

// failedNodes is the command's error when nodes failed.
func failedNodes(nodes []string) error {
	if len(nodes) == 0 {
		return nil
	}
	return fmt.Errorf("prefetch failed on %s", strings.Join(nodes, ", "))
}
