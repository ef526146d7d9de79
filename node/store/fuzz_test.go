package store

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// FuzzMergeJSON feeds arbitrary bytes, decoded as a JSON []Entry the way a
// peer's message would be, to Merge. Merge must never panic, must apply
// exactly the LWW result of the valid entries, must be idempotent, and what
// it persisted must read back identically after a reopen.
func FuzzMergeJSON(f *testing.F) {
	for _, seed := range []string{
		`[]`,
		`null`,
		`[{}]`,
		`{"key":"web"}`,
		`[{"key":"web","version":{"time":{"wall":1764064800123456789,"logical":0},"node":"node-1"},"value":{"image":"demo:1","replicas":3}}]`,
		`[{"key":"web","version":{"time":{"wall":5,"logical":1},"node":"n1"},"deleted":true}]`,
		`[{"key":"web","version":{"time":{"wall":5,"logical":1},"node":"n1"},"deleted":true,"value":null}]`,
		`[{"key":"web","version":{"time":{"wall":5,"logical":1},"node":"n1"},"deleted":true,"value":1}]`,
		`[{"key":"web","version":{"time":{"wall":5},"node":"n1"},"value":null}]`,
		`[{"key":"a","version":{"time":{"wall":5},"node":"n1"},"value":"<&>\u2028 é"},
		  {"key":"a","version":{"time":{"wall":5},"node":"n2"},"value":[1, 2, {"x" : null}]},
		  {"key":"a","version":{"time":{"wall":5},"node":"n2"},"value":[1,2,{"x":null}]},
		  {"key":"b","version":{"time":{"wall":4},"node":"n2"},"value":true}]`,
		`[{"key":"","version":{"time":{"wall":5},"node":"n1"},"value":1}]`,
		`[{"key":"k","version":{"time":{"wall":-5},"node":"n1"},"value":1}]`,
		`[{"key":"k","version":{"time":{"wall":0,"logical":0},"node":"n1"},"value":1}]`,
		`[{"key":"k","version":{"time":{"wall":9223372036854775807,"logical":4294967295},"node":"n1"},"value":1}]`,
		`[{"key":"k","version":{"time":{"wall":1},"node":"a b"},"value":1}]`,
		`[{"key":"k","version":{"time":{"wall":1},"node":"n"},"value":"\ud800"}]`,
		`[{"key":"\u0000\ufffd","version":{"time":{"wall":1},"node":"n"},"value":1}]`,
		`[{"key":"` + strings.Repeat("k", MaxKeyLen+1) + `","version":{"time":{"wall":1},"node":"n"},"value":1}]`,
		`[{"key":"big","version":{"time":{"wall":1},"node":"n"},"value":"` + strings.Repeat("x", MaxValueSize) + `"}]`,
		`[{"key":"k","version":{"time":{"wall":1.5},"node":"n"},"value":1}]`,
		`[{"key":"k","version":"1.0@n","value":1}]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var entries []Entry
		if err := json.Unmarshal(data, &entries); err != nil {
			return
		}
		path := filepath.Join(fastTempDir(t), "fuzz.db")
		s, err := Open(path, Options{Node: "local", Clock: newFakeClock(epoch), NoSync: true, Logger: discard})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()

		invalid := 0
		for _, e := range entries {
			if e.Validate() != nil {
				invalid++
			}
		}
		changed, err := s.Merge(entries)
		switch {
		case invalid == 0 && err != nil:
			t.Fatalf("Merge of valid entries: %v", err)
		case invalid > 0 && !errors.Is(err, ErrInvalid):
			t.Fatalf("Merge with %d invalid entries returned %v", invalid, err)
		}
		if got := s.Stats().MergedInvalid; got != uint64(invalid) {
			t.Fatalf("MergedInvalid = %d, want %d", got, invalid)
		}
		model := lwwModel(entries)
		if len(changed) != len(model) {
			t.Fatalf("Merge into an empty store changed %d keys, want %d", len(changed), len(model))
		}
		for _, e := range changed {
			if err := e.Validate(); err != nil {
				t.Fatalf("applied an invalid entry: %v", err)
			}
			if got, ok := s.Lookup(e.Key); !ok || !entriesEqual(got, e) || !entriesEqual(got, model[e.Key]) {
				t.Fatalf("changed entry %+v; stored %+v; model %+v", e, got, model[e.Key])
			}
		}
		if again, _ := s.Merge(entries); len(again) != 0 {
			t.Fatalf("second Merge changed %+v", again)
		}
		st := s.Stats()
		if st.Live+st.Tombstones != len(model) || len(s.List()) != st.Live {
			t.Fatalf("Stats %+v inconsistent with %d keys", st, len(model))
		}

		digest, versions := s.Digest(), s.Versions()
		var keys []string
		for _, kv := range versions {
			keys = append(keys, kv.Key)
		}
		before := s.Entries(keys)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		s2, err := Open(path, Options{Node: "local", Clock: newFakeClock(epoch), NoSync: true, Logger: discard})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer s2.Close()
		if s2.Digest() != digest || !slices.Equal(s2.Versions(), versions) {
			t.Fatalf("reopened store differs: %v vs %v", s2.Versions(), versions)
		}
		after := s2.Entries(keys)
		for i := range before {
			if !entriesEqual(before[i], after[i]) {
				t.Fatalf("entry changed across reopen: %+v -> %+v", before[i], after[i])
			}
		}
		for _, kv := range versions {
			if s2.HLC().Last().Compare(kv.Version.Time) < 0 {
				t.Fatalf("HLC %v behind stored %v after reopen", s2.HLC().Last(), kv.Version)
			}
		}
	})
}
