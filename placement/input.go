package placement

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"
)

// nodeInfo is a normalized Node.
type nodeInfo struct {
	name        string
	labels      map[string]string
	os, arch    string // lower case
	cpuCap      int64  // millicores, 0 = not limited
	memCap      int64  // bytes, 0 = not limited
	weight      float64
	schedulable bool
	reason      string
	filling     bool
}

// label is one constraint, kept sorted by key.
type label struct{ key, value string }

// platform is one normalized entry of Service.Platforms; arch "" matches any.
type platform struct{ os, arch string }

// svcInfo is a normalized Service plus its per-computation state.
type svcInfo struct {
	name        string
	replicas    int
	constraints []label    // sorted by key
	platforms   []platform // nil = any
	cpu, mem    int64      // per replica request: millicores, bytes
	hash        uint64
	firstSlot   int32         // id of slot name/0
	holders     []slotHolders // sorted by index; names sorted, unique
	adopted     []slotHolders // Service.Adopted, the same way

	eligible []int32 // node ids passing the static checks, ascending
	perNode  int     // replicas per node before spread is relaxed (uniform weights)
	weight   float64 // Σ weights of eligible nodes
	held     []int32 // node ids owning a slot (small services)
	count    []int32
}

// slotHolders are the holders of one slot, by name.
type slotHolders struct {
	index int
	nodes []string
}

// denseCountMin is the replica count from which a service tracks how many
// replicas each node holds in a dense array instead of scanning held.
const denseCountMin = 16

// millicores converts cores to thousandths of a core; anything that is not
// a positive finite number is 0.
func millicores(c float64) int64 {
	if !(c > 0) || math.IsInf(c, 1) {
		return 0
	}
	m := math.Round(c * 1000)
	if m > 1<<40 { // a billion cores: sums of many cannot overflow
		return 1 << 40
	}
	return int64(m)
}

func nonNegative(v int64) int64 { return max(v, 0) }

func normalizeNode(n *Node) nodeInfo {
	w := n.Weight
	if !(w > 0) || math.IsInf(w, 1) {
		w = 1
	}
	return nodeInfo{
		name:        n.Name,
		labels:      n.Labels,
		os:          strings.ToLower(n.OS),
		arch:        strings.ToLower(n.Arch),
		cpuCap:      millicores(n.CPUs),
		memCap:      nonNegative(n.Memory),
		weight:      w,
		schedulable: n.Schedulable,
		reason:      n.Reason,
		filling:     n.Filling,
	}
}

func normalizeService(s *Service) svcInfo {
	sv := svcInfo{
		name:     s.Name,
		replicas: max(s.Replicas, 0),
		cpu:      millicores(s.CPUs),
		mem:      nonNegative(s.Memory),
		hash:     hashString(s.Name),
	}
	for k, v := range s.Constraints {
		sv.constraints = append(sv.constraints, label{k, v})
	}
	slices.SortFunc(sv.constraints, func(a, b label) int { return cmp.Compare(a.key, b.key) })
	for _, p := range s.Platforms {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			continue
		}
		os, arch, _ := strings.Cut(p, "/")
		arch, _, _ = strings.Cut(arch, "/") // drop the variant
		pl := platform{os, arch}
		if !slices.Contains(sv.platforms, pl) {
			sv.platforms = append(sv.platforms, pl)
		}
	}
	slices.SortFunc(sv.platforms, func(a, b platform) int {
		return cmp.Or(cmp.Compare(a.os, b.os), cmp.Compare(a.arch, b.arch))
	})
	sv.holders = normalizeHolders(s.Holders, sv.replicas)
	sv.adopted = normalizeHolders(s.Adopted, sv.replicas)
	return sv
}

// normalizeHolders sorts a slot -> names map by index, with the names
// sorted and unique, dropping indices out of range and empty lists.
func normalizeHolders(m map[int][]string, replicas int) []slotHolders {
	var out []slotHolders
	for i, names := range m {
		if i < 0 || i >= replicas || len(names) == 0 {
			continue
		}
		names = slices.Compact(slices.Sorted(slices.Values(names)))
		out = append(out, slotHolders{i, names})
	}
	slices.SortFunc(out, func(a, b slotHolders) int { return cmp.Compare(a.index, b.index) })
	return out
}

// compareNodes orders nodes by name, then by every other field, so that a
// duplicate name is resolved the same way whatever the input order.
func compareNodes(a, b *nodeInfo) int {
	if c := cmp.Compare(a.name, b.name); c != 0 {
		return c
	}
	return cmp.Or(
		cmp.Compare(a.os, b.os),
		cmp.Compare(a.arch, b.arch),
		cmp.Compare(a.cpuCap, b.cpuCap),
		cmp.Compare(a.memCap, b.memCap),
		cmp.Compare(a.weight, b.weight),
		compareBool(a.schedulable, b.schedulable),
		cmp.Compare(a.reason, b.reason),
		compareBool(a.filling, b.filling),
		compareLabels(a.labels, b.labels),
	)
}

// compareServices is compareNodes for services.
func compareServices(a, b *svcInfo) int {
	if c := cmp.Compare(a.name, b.name); c != 0 {
		return c
	}
	return cmp.Or(
		cmp.Compare(a.replicas, b.replicas),
		cmp.Compare(a.cpu, b.cpu),
		cmp.Compare(a.mem, b.mem),
		slices.CompareFunc(a.constraints, b.constraints, func(x, y label) int {
			return cmp.Or(cmp.Compare(x.key, y.key), cmp.Compare(x.value, y.value))
		}),
		slices.CompareFunc(a.platforms, b.platforms, func(x, y platform) int {
			return cmp.Or(cmp.Compare(x.os, y.os), cmp.Compare(x.arch, y.arch))
		}),
		slices.CompareFunc(a.holders, b.holders, compareSlotHolders),
		slices.CompareFunc(a.adopted, b.adopted, compareSlotHolders),
	)
}

func compareSlotHolders(x, y slotHolders) int {
	return cmp.Or(cmp.Compare(x.index, y.index), slices.Compare(x.nodes, y.nodes))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

func compareLabels(a, b map[string]string) int {
	sorted := func(m map[string]string) []label {
		out := make([]label, 0, len(m))
		for k, v := range m {
			out = append(out, label{k, v})
		}
		slices.SortFunc(out, func(x, y label) int { return cmp.Compare(x.key, y.key) })
		return out
	}
	return slices.CompareFunc(sorted(a), sorted(b), func(x, y label) int {
		return cmp.Or(cmp.Compare(x.key, y.key), cmp.Compare(x.value, y.value))
	})
}

// eligible reports whether node n passes the static checks for sv, without
// allocating; staticCheck says why not.
func eligible(sv *svcInfo, n *nodeInfo) bool {
	if !n.schedulable {
		return false
	}
	for _, l := range sv.constraints {
		if v, ok := n.labels[l.key]; !ok || v != l.value {
			return false
		}
	}
	return len(sv.platforms) == 0 || platformOK(sv.platforms, n)
}

// staticCheck reports why node n can never own a slot of sv, or "" if it
// can. category groups nodes in unplaceable reasons ("label zone=eu");
// detail is specific to the node ("label zone=eu != us").
func staticCheck(sv *svcInfo, n *nodeInfo) (category, detail string) {
	if !n.schedulable {
		c := "not schedulable"
		if n.reason != "" {
			c += ": " + n.reason
		}
		return c, c
	}
	for _, l := range sv.constraints {
		c := "label " + l.key + "=" + l.value
		v, ok := n.labels[l.key]
		switch {
		case !ok:
			return c, c + ": node has no " + l.key + " label"
		case v != l.value:
			return c, c + " != " + v
		}
	}
	if len(sv.platforms) > 0 && !platformOK(sv.platforms, n) {
		c := "platform " + platformList(sv.platforms)
		have := n.os + "/" + n.arch
		if n.os == "" && n.arch == "" {
			have = "unknown"
		}
		return c, "platform " + have + " not in " + platformList(sv.platforms)
	}
	return "", ""
}

func platformOK(ps []platform, n *nodeInfo) bool {
	if n.os == "" {
		return false
	}
	for _, p := range ps {
		if p.os == n.os && (p.arch == "" || p.arch == n.arch) {
			return true
		}
	}
	return false
}

func platformList(ps []platform) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, p := range ps {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(p.os)
		if p.arch != "" {
			b.WriteString("/" + p.arch)
		}
	}
	b.WriteByte(']')
	return b.String()
}

// formatCPU formats millicores as cores: 1500 -> "1.5".
func formatCPU(m int64) string { return strconv.FormatFloat(float64(m)/1000, 'f', -1, 64) }

// formatBytes formats a byte count with the largest binary unit that
// divides it exactly: 536870912 -> "512Mi".
func formatBytes(b int64) string {
	units := []struct {
		suffix string
		size   int64
	}{{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}}
	for _, u := range units {
		if b != 0 && b%u.size == 0 {
			return strconv.FormatInt(b/u.size, 10) + u.suffix
		}
	}
	return strconv.FormatInt(b, 10)
}
