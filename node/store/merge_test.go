package store

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"pgregory.net/rapid"
)

// entryGen draws entries from a small space (few keys, nodes and times) so
// that batches are full of conflicts, ties and duplicates. About one in ten
// entries is invalid; those must be ignored the same way by every replica.
var entryGen = rapid.Custom(func(t *rapid.T) Entry {
	e := Entry{
		Key: rapid.SampledFrom([]string{"a", "b", "c", "d"}).Draw(t, "key"),
		Version: ver(
			rapid.Int64Range(1, 5).Draw(t, "wall"),
			rapid.Uint32Range(0, 2).Draw(t, "logical"),
			rapid.SampledFrom([]string{"n1", "n2", "n3"}).Draw(t, "node"),
		),
		Deleted: rapid.IntRange(0, 3).Draw(t, "deleted") == 0,
	}
	if !e.Deleted {
		e.Value = []byte(rapid.SampledFrom([]string{`1`, `2`, `"x"`, `{"a": 1}`, `{"a":1}`}).Draw(t, "value"))
	}
	switch rapid.IntRange(0, 19).Draw(t, "invalid") {
	case 0:
		e.Key = ""
	case 1:
		e.Version = Version{}
	}
	return e
})

// tmpStores hands out fresh stores for rapid iterations, which cannot use
// t.TempDir themselves.
type tmpStores struct {
	dir string
	n   int
}

func (ts *tmpStores) open(rt *rapid.T, node string) *Store {
	ts.n++
	path := filepath.Join(ts.dir, fmt.Sprintf("s%d.db", ts.n))
	s, err := Open(path, Options{Node: node, Clock: newFakeClock(epoch), NoSync: true, Logger: discard})
	if err != nil {
		rt.Fatalf("Open: %v", err)
	}
	rt.Cleanup(func() {
		_ = s.Close()
		_ = os.Remove(path)
	})
	return s
}

// lwwModel is the expected result of merging entries: per key, the entry
// that supersedes all others.
func lwwModel(entries []Entry) map[string]Entry {
	m := make(map[string]Entry)
	for _, raw := range entries {
		e, err := check(raw)
		if err != nil {
			continue
		}
		if cur, ok := m[e.Key]; !ok || e.supersedes(cur) {
			m[e.Key] = e
		}
	}
	return m
}

// assertMatches checks that s holds exactly the model, by digest, versions
// and full entries.
func assertMatches(rt *rapid.T, name string, s *Store, model map[string]Entry) {
	want := summarize(model)
	if got := s.Versions(); !slices.Equal(got, want.versions) {
		rt.Fatalf("%s: Versions = %v, want %v", name, got, want.versions)
	}
	if s.Digest() != want.digest {
		rt.Fatalf("%s: digest differs from the model's", name)
	}
	for k, w := range model {
		if got, ok := s.Lookup(k); !ok || !entriesEqual(got, w) {
			rt.Fatalf("%s: Lookup(%q) = %+v, want %+v", name, k, got, w)
		}
	}
}

func TestMergeConvergenceProperty(t *testing.T) {
	ts := &tmpStores{dir: fastTempDir(t)}
	rapid.Check(t, func(rt *rapid.T) {
		entries := rapid.SliceOfN(entryGen, 1, 24).Draw(rt, "entries")
		model := lwwModel(entries)

		// One at a time, in a random order.
		one := ts.open(rt, "r1")
		for _, e := range rapid.Permutation(entries).Draw(rt, "order") {
			_, _ = one.Merge([]Entry{e})
		}
		assertMatches(rt, "one at a time", one, model)

		// With duplicates, in random batches of a random order.
		withDups := slices.Clone(entries)
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(entries)-1), 0, 8).Draw(rt, "dups") {
			withDups = append(withDups, entries[i])
		}
		withDups = rapid.Permutation(withDups).Draw(rt, "dup order")
		batched := ts.open(rt, "r2")
		for rest := withDups; len(rest) > 0; {
			n := rapid.IntRange(1, len(rest)).Draw(rt, "batch")
			_, _ = batched.Merge(rest[:n])
			rest = rest[n:]
		}
		assertMatches(rt, "batched with duplicates", batched, model)

		// All at once, reversed, twice: the second merge changes nothing.
		whole := ts.open(rt, "r3")
		rev := slices.Clone(entries)
		slices.Reverse(rev)
		_, _ = whole.Merge(rev)
		if again, _ := whole.Merge(rev); len(again) != 0 {
			rt.Fatalf("repeated merge changed %v", again)
		}
		assertMatches(rt, "one batch", whole, model)

		// Associativity, as anti-entropy does it: two replicas each merge part
		// of the entries, then a third merges their full contents.
		split := rapid.IntRange(0, len(entries)).Draw(rt, "split")
		x, y := ts.open(rt, "x"), ts.open(rt, "y")
		_, _ = x.Merge(entries[:split])
		_, _ = y.Merge(entries[split:])
		z := ts.open(rt, "z")
		for _, src := range []*Store{y, x} {
			var keys []string
			for _, kv := range src.Versions() {
				keys = append(keys, kv.Key)
			}
			if _, err := z.Merge(src.Entries(keys)); err != nil {
				rt.Fatalf("merge of a replica's own entries: %v", err)
			}
		}
		assertMatches(rt, "replica of replicas", z, model)
	})
}

// TestMergeLocalWritesConverge mixes local writes and deletes on several
// nodes with pairwise syncs in random order; after a final full exchange all
// replicas hold the same map.
func TestMergeLocalWritesConverge(t *testing.T) {
	ts := &tmpStores{dir: fastTempDir(t)}
	rapid.Check(t, func(rt *rapid.T) {
		nodes := []*Store{ts.open(rt, "n1"), ts.open(rt, "n2"), ts.open(rt, "n3")}
		pull := func(dst, src *Store) {
			var keys []string
			for _, kv := range src.Versions() {
				keys = append(keys, kv.Key)
			}
			if _, err := dst.Merge(src.Entries(keys)); err != nil {
				rt.Fatalf("sync: %v", err)
			}
		}
		steps := rapid.IntRange(1, 30).Draw(rt, "steps")
		for range steps {
			n := nodes[rapid.IntRange(0, len(nodes)-1).Draw(rt, "node")]
			key := rapid.SampledFrom([]string{"a", "b", "c"}).Draw(rt, "key")
			switch rapid.IntRange(0, 2).Draw(rt, "op") {
			case 0:
				if _, err := n.Put(key, []byte(`"v"`), nil); err != nil {
					rt.Fatal(err)
				}
			case 1:
				_, _ = n.Delete(key, nil)
			case 2:
				pull(n, nodes[rapid.IntRange(0, len(nodes)-1).Draw(rt, "peer")])
			}
		}
		for range 2 {
			for _, dst := range nodes {
				for _, src := range nodes {
					pull(dst, src)
				}
			}
		}
		for _, n := range nodes[1:] {
			if n.Digest() != nodes[0].Digest() || !slices.Equal(n.Versions(), nodes[0].Versions()) {
				rt.Fatalf("replicas diverged: %v vs %v", n.Versions(), nodes[0].Versions())
			}
		}
	})
}
