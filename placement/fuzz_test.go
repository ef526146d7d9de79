package placement

import (
	"maps"
	"math"
	"reflect"
	"slices"
	"testing"
)

// byteReader hands out fuzz bytes; past the end it returns zeros.
type byteReader struct{ b []byte }

func (r *byteReader) next() byte {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *byteReader) pick(options ...string) string { return options[int(r.next())%len(options)] }

// decodeCluster builds a small cluster from bytes. Values are chosen to
// hit edge cases: empty and duplicate names, NaN and infinite weights and
// capacities, negative replicas and requests, odd platform strings.
func decodeCluster(data []byte) ([]Node, []Service, Options) {
	r := &byteReader{data}
	floats := []float64{0, 1, 0.5, 2, -1, math.NaN(), math.Inf(1), 1e-9, 1e300}
	ints := []int64{0, 1 << 30, 256 << 20, -1, 1, math.MaxInt64}
	opts := Options{Epsilon: floats[int(r.next())%len(floats)]}
	ns := make([]Node, int(r.next())%12)
	for i := range ns {
		ns[i] = Node{
			Name:        r.pick("a", "b", "c", "d", "e", "", "node-1", "f", "g"),
			Arch:        r.pick("amd64", "arm64", "", "AMD64"),
			OS:          r.pick("linux", "", "windows"),
			CPUs:        floats[int(r.next())%len(floats)],
			Memory:      ints[int(r.next())%len(ints)],
			Weight:      floats[int(r.next())%len(floats)],
			Schedulable: r.next()%5 != 0,
			Reason:      r.pick("", "runtime not ready"),
		}
		if z := r.pick("", "a", "b"); z != "" {
			ns[i].Labels = map[string]string{"zone": z}
		}
	}
	ss := make([]Service, int(r.next())%8)
	for i := range ss {
		ss[i] = Service{
			Name:     r.pick("web", "db", "", "x", "web"),
			Replicas: int(int8(r.next())) % 20,
			CPUs:     floats[int(r.next())%len(floats)],
			Memory:   ints[int(r.next())%len(ints)],
		}
		if z := r.pick("", "a", "b"); z != "" {
			ss[i].Constraints = map[string]string{"zone": z}
		}
		switch r.next() % 4 {
		case 1:
			ss[i].Platforms = []string{"linux/amd64"}
		case 2:
			ss[i].Platforms = []string{" Linux/ARM64/v8 ", "", "windows"}
		case 3:
			ss[i].Platforms = []string{"/", "linux//"}
		}
	}
	// Holders and reports last, so that older seeds decode as before.
	for i := range ns {
		ns[i].Filling = r.next()%2 == 1
	}
	for i := range ss {
		for range int(r.next()) % 6 {
			if ss[i].Holders == nil {
				ss[i].Holders = map[int][]string{}
			}
			idx := int(int8(r.next())) % 20
			ss[i].Holders[idx] = append(ss[i].Holders[idx], r.pick("a", "b", "c", "d", "e", "", "node-1", "zz", "a"))
		}
	}
	// Adopted copies after that.
	for i := range ss {
		for _, idx := range slices.Sorted(maps.Keys(ss[i].Holders)) {
			if hs := ss[i].Holders[idx]; len(hs) > 0 && r.next()%3 == 0 {
				if ss[i].Adopted == nil {
					ss[i].Adopted = map[int][]string{}
				}
				ss[i].Adopted[idx] = append(ss[i].Adopted[idx], hs[0], r.pick("a", "zz", ""))
			}
		}
	}
	return ns, ss, opts
}

// FuzzCompute checks that Compute never panics, accounts for every slot,
// never violates a constraint or capacity, and does not depend on the
// input order, whatever the (decoded) input.
func FuzzCompute(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 3, 0, 0, 0, 0, 0, 1, 0, 1, 1, 0, 0, 0, 1, 1, 2, 2, 0, 3, 5, 0, 0, 0, 0})
	f.Add([]byte{5, 9, 1, 1, 1, 6, 2, 3, 1, 1, 2, 2, 2, 5, 0, 0, 4, 1, 2, 0, 3, 1, 1, 7, 4, 3, 0, 2, 2, 4, 0, 0, 1, 9, 3, 5, 2, 2, 3})
	f.Add([]byte{6, 11, 0, 0, 0, 7, 5, 6, 1, 0, 1, 1, 1, 2, 3, 4, 1, 1, 2, 2, 2, 5, 5, 5, 1, 0, 0, 3, 3, 3, 0, 1, 2, 7, 255, 6, 5, 1, 3, 19, 2, 2, 0, 2})
	f.Add([]byte("a fairly long seed that decodes into a mixed cluster with several services and nodes"))
	f.Add([]byte("a longer seed that decodes into a mixed cluster with several services and nodes, then holders: nodes reported, slots held by one, two or unknown nodes"))
	f.Add([]byte("an even longer seed that decodes into a mixed cluster with several services and nodes, then holders, filling nodes, and copies adopted by the nodes that hold them, or by nodes that do not"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ns, ss, opts := decodeCluster(data)
		r := Compute(ns, ss, opts)
		assertInvariants(t, ns, ss, opts, r)
		rn, rs := slices.Clone(ns), slices.Clone(ss)
		slices.Reverse(rn)
		slices.Reverse(rs)
		if got := Compute(rn, rs, opts); !reflect.DeepEqual(got, r) {
			t.Fatalf("result depends on input order:\n%+v\n%+v", r, got)
		}
		all := append(slotsOf(r.Assignments), unplacedSlots(r.Unplaceable)...)
		if len(all) > 0 {
			s := all[len(data)%len(all)]
			e, err := Explain(ns, ss, opts, s.Service, s.Index)
			if err != nil {
				t.Fatalf("Explain(%s): %v", s, err)
			}
			assertExplanationMatches(t, ns, ss, opts, e)
		}
	})
}
