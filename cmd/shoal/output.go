package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

// writeJSON writes v as indented JSON followed by a newline.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns. Cells must not contain tabs or newlines
// (cell() replaces them).
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)}
	t.row(header...)
	return t
}

func (t *table) row(cells ...string) {
	for i, c := range cells {
		cells[i] = cell(c)
	}
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// cell makes s fit in one table cell: "-" when empty, control characters
// escaped.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		q := strconv.Quote(s)
		return q[1 : len(q)-1]
	}
	return s
}

// joinKV formats a map as "k=v,k=v" in key order.
func joinKV(m map[string]string, sep string) string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, sep)
}

// formatPorts formats ports as "8080->80/tcp, 443->443/http".
func formatPorts(ports []spec.Port) string {
	parts := make([]string, len(ports))
	for i, p := range ports {
		proto := p.Protocol
		if proto == "" {
			proto = spec.ProtocolTCP
		}
		parts[i] = fmt.Sprintf("%d->%d/%s", p.Published, p.Target, proto)
	}
	return strings.Join(parts, ",")
}

// formatArgs formats an argv, quoting the words that need it.
func formatArgs(args []string) string {
	parts := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsFunc(a, func(r rune) bool { return r <= ' ' || strings.ContainsRune(`"'\$`+"`", r) }) {
			a = strconv.Quote(a)
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// formatHealth describes a probe: "http /healthz every 5s, timeout 2s".
func formatHealth(h *spec.Health) string {
	if h == nil {
		return ""
	}
	var probe string
	switch {
	case h.HTTP != "":
		probe = "http " + h.HTTP
	case h.TCP != 0:
		probe = "tcp " + strconv.Itoa(h.TCP)
	case len(h.Exec) > 0:
		probe = "exec " + formatArgs(h.Exec)
	}
	return fmt.Sprintf("%s every %s, timeout %s", probe, h.Interval, h.Timeout)
}

// formatResources describes limits: "cpus 0.5, memory 256Mi".
func formatResources(r spec.Resources) string {
	var parts []string
	if r.CPUs != 0 {
		parts = append(parts, "cpus "+strconv.FormatFloat(r.CPUs, 'f', -1, 64))
	}
	if r.Memory != 0 {
		parts = append(parts, "memory "+r.Memory.String())
	}
	return strings.Join(parts, ", ")
}

// ago formats the time since t coarsely ("45s ago", "3m ago", "2h ago",
// "5d ago").
func ago(now, t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	default:
		return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
	}
}

// printServices prints services as JSON (a list) or as the ls table.
func printServices(w io.Writer, asJSON bool, svcs []api.Service) error {
	if asJSON {
		if svcs == nil {
			svcs = []api.Service{}
		}
		return writeJSON(w, svcs)
	}
	now := time.Now()
	t := newTable(w, "NAME", "IMAGE", "REPLICAS", "PORTS", "VERSION", "UPDATED", "PROBLEMS")
	for _, s := range svcs {
		t.row(s.Name, s.Image, strconv.Itoa(s.Replicas), formatPorts(s.Ports), s.Version, ago(now, s.UpdatedAt), strings.Join(s.Problems, "; "))
	}
	return t.flush()
}

// printService prints one service as a JSON object or an ls table row.
func printService(w io.Writer, asJSON bool, s api.Service) error {
	if asJSON {
		return writeJSON(w, s)
	}
	return printServices(w, false, []api.Service{s})
}
