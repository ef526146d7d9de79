package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestConditionalWrites(t *testing.T) {
	other := ver(1, 0, "elsewhere")
	type state int
	const (
		absent state = iota
		live
		deleted
	)
	type condKind int
	const (
		none condKind = iota
		zero
		current
		stale
	)
	tests := []struct {
		op    string // "put" or "delete"
		state state
		cond  condKind
		want  error // nil, ErrConflict or ErrNotFound
	}{
		{"put", absent, none, nil},
		{"put", absent, zero, nil},
		{"put", absent, stale, ErrConflict},
		{"put", live, none, nil},
		{"put", live, zero, ErrConflict},
		{"put", live, current, nil},
		{"put", live, stale, ErrConflict},
		{"put", deleted, none, nil},
		{"put", deleted, zero, nil},
		{"put", deleted, current, nil},
		{"put", deleted, stale, ErrConflict},
		{"delete", absent, none, ErrNotFound},
		{"delete", absent, zero, ErrNotFound},
		{"delete", absent, stale, ErrNotFound},
		{"delete", live, none, nil},
		{"delete", live, zero, ErrConflict},
		{"delete", live, current, nil},
		{"delete", live, stale, ErrConflict},
		{"delete", deleted, none, ErrNotFound},
		{"delete", deleted, current, ErrNotFound},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/state=%d/cond=%d", tt.op, tt.state, tt.cond)
		t.Run(name, func(t *testing.T) {
			s, _ := openTest(t, Options{})
			var cur Version
			if tt.state != absent {
				e, err := s.Put("web", []byte(`{"v":1}`), nil)
				if err != nil {
					t.Fatal(err)
				}
				cur = e.Version
			}
			if tt.state == deleted {
				e, err := s.Delete("web", nil)
				if err != nil {
					t.Fatal(err)
				}
				cur = e.Version
			}
			var cond *Version
			switch tt.cond {
			case zero:
				cond = &Version{}
			case current:
				cond = &cur
			case stale:
				cond = &other
			}
			before, _ := s.Lookup("web")
			digest := s.Digest()

			var got Entry
			var err error
			if tt.op == "put" {
				got, err = s.Put("web", []byte(`{"v": 2}`), cond)
			} else {
				got, err = s.Delete("web", cond)
			}

			if tt.want != nil {
				if !errors.Is(err, tt.want) {
					t.Fatalf("err = %v, want %v", err, tt.want)
				}
				if after, _ := s.Lookup("web"); !entriesEqual(after, before) {
					t.Fatalf("failed write changed the entry: %+v -> %+v", before, after)
				}
				if s.Digest() != digest {
					t.Fatal("failed write changed the digest")
				}
				if tt.want == ErrConflict {
					var ce *ConflictError
					if !errors.As(err, &ce) || ce.Current != cur || ce.Key != "web" || ce.Expected != *cond {
						t.Fatalf("conflict error %#v, want current %v", err, cur)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want nil", err)
			}
			if got.Version.Compare(cur) <= 0 || got.Version.Node != "node-1" {
				t.Fatalf("new version %v not after %v or wrong node", got.Version, cur)
			}
			looked, ok := s.Lookup("web")
			if !ok || !entriesEqual(looked, got) {
				t.Fatalf("Lookup = %+v, %v; want %+v", looked, ok, got)
			}
			live, ok := s.Get("web")
			if tt.op == "put" {
				if !ok || string(live.Value) != `{"v":2}` || live.Deleted {
					t.Fatalf("Get = %+v, %v; want the compacted new value", live, ok)
				}
			} else if ok || !looked.Deleted || looked.Value != nil {
				t.Fatalf("Get after delete = %+v, %v; Lookup = %+v", live, ok, looked)
			}
		})
	}
}

func TestConflictErrorMessage(t *testing.T) {
	tests := []struct {
		err  ConflictError
		want string
	}{
		{ConflictError{Key: "web", Expected: ver(1, 0, "a"), Current: ver(2, 0, "b")},
			`store: version conflict: key "web": current version 2.0@b, expected 1.0@a`},
		{ConflictError{Key: "web", Expected: ver(1, 0, "a")},
			`store: version conflict: key "web": current version absent, expected 1.0@a`},
		{ConflictError{Key: "web", Current: ver(2, 0, "b")},
			`store: version conflict: key "web": current version 2.0@b, expected absent or deleted`},
		{ConflictError{Key: "web", Expected: ver(1, 0, "a"), Current: ver(2, 0, "b"), Deleted: true},
			`store: version conflict: key "web": current version deleted at 2.0@b, expected 1.0@a`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(&tt.err, ErrConflict) {
			t.Errorf("%v does not wrap ErrConflict", &tt.err)
		}
	}
}

func TestPutStampsVersions(t *testing.T) {
	clk := newFakeClock(epoch)
	s, _ := openTest(t, Options{Node: "n7", Clock: clk})
	e1, err := s.Put("a", []byte("1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := ver(epoch.UnixNano(), 0, "n7"); e1.Version != want {
		t.Fatalf("first version %v, want %v", e1.Version, want)
	}
	e2, _ := s.Put("b", []byte("2"), nil)
	if want := ver(epoch.UnixNano(), 1, "n7"); e2.Version != want {
		t.Fatalf("second version %v, want %v (clock stalled)", e2.Version, want)
	}
	clk.Advance(-time.Minute)
	e3, _ := s.Delete("a", nil)
	if want := ver(epoch.UnixNano(), 2, "n7"); e3.Version != want {
		t.Fatalf("third version %v, want %v (clock went back)", e3.Version, want)
	}
	if s.HLC().Last() != e3.Version.Time {
		t.Fatalf("HLC().Last() = %v, want %v", s.HLC().Last(), e3.Version.Time)
	}
}

func TestPutInvalid(t *testing.T) {
	tests := []struct {
		name  string
		key   string
		value string
	}{
		{"empty key", "", "1"},
		{"long key", strings.Repeat("k", MaxKeyLen+1), "1"},
		{"non-UTF-8 key", "\xff", "1"},
		{"no value", "k", ""},
		{"null", "k", "null"},
		{"bad JSON", "k", "{"},
		{"too big", "k", `"` + strings.Repeat("x", MaxValueSize) + `"`},
	}
	s, _ := openTest(t, Options{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			last := s.HLC().Last()
			_, err := s.Put(tt.key, []byte(tt.value), nil)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("Put = %v, want ErrInvalid", err)
			}
			if _, ok := s.Lookup(tt.key); ok {
				t.Fatal("invalid put stored an entry")
			}
			if s.HLC().Last() != last {
				t.Fatal("invalid put ticked the clock")
			}
		})
	}
	if _, err := s.Delete("", nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Delete(\"\") = %v, want ErrInvalid", err)
	}
}

func TestReads(t *testing.T) {
	s, _ := openTest(t, Options{})
	for _, k := range []string{"c", "a", "d", "b"} {
		if _, err := s.Put(k, []byte(`"`+k+`"`), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Delete("c", nil); err != nil {
		t.Fatal(err)
	}
	keys := func(es []Entry) (out []string) {
		for _, e := range es {
			out = append(out, e.Key)
		}
		return out
	}
	if got := keys(s.List()); !slices.Equal(got, []string{"a", "b", "d"}) {
		t.Errorf("List keys = %v", got)
	}
	var vkeys []string
	for _, kv := range s.Versions() {
		vkeys = append(vkeys, kv.Key)
		if kv.Deleted != (kv.Key == "c") {
			t.Errorf("Versions: %+v has wrong Deleted", kv)
		}
	}
	if !slices.Equal(vkeys, []string{"a", "b", "c", "d"}) {
		t.Errorf("Versions keys = %v", vkeys)
	}
	if got := keys(s.Entries([]string{"d", "zzz", "c", "a"})); !slices.Equal(got, []string{"d", "c", "a"}) {
		t.Errorf("Entries keys = %v", got)
	}
	if _, ok := s.Get("c"); ok {
		t.Error("Get returned a tombstone")
	}
	if e, ok := s.Lookup("c"); !ok || !e.Deleted {
		t.Errorf("Lookup(c) = %+v, %v", e, ok)
	}
	if _, ok := s.Lookup("zzz"); ok {
		t.Error("Lookup of unknown key succeeded")
	}
	if st := s.Stats(); st != (Stats{Live: 3, Tombstones: 1}) {
		t.Errorf("Stats = %+v", st)
	}
	// Versions returns a copy.
	v := s.Versions()
	v[0].Key = "mutated"
	if s.Versions()[0].Key != "a" {
		t.Error("Versions shares its slice")
	}
}

func TestDigestTracksChanges(t *testing.T) {
	s, _ := openTest(t, Options{})
	empty := s.Digest()
	if empty != s.Digest() {
		t.Fatal("Digest not stable")
	}
	seen := map[[32]byte]string{empty: "empty"}
	step := func(name string, f func() error) {
		t.Helper()
		if err := f(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		d := s.Digest()
		if prev, dup := seen[d]; dup {
			t.Fatalf("%s: digest equals the one after %s", name, prev)
		}
		seen[d] = name
	}
	step("put a", func() error { _, err := s.Put("a", []byte("1"), nil); return err })
	step("put b", func() error { _, err := s.Put("b", []byte("1"), nil); return err })
	step("rewrite a", func() error { _, err := s.Put("a", []byte("1"), nil); return err })
	step("delete a", func() error { _, err := s.Delete("a", nil); return err })
	step("merge c", func() error {
		_, err := s.Merge([]Entry{{Key: "c", Version: ver(1, 0, "x"), Value: []byte("1")}})
		return err
	})
}

func TestPersistence(t *testing.T) {
	clk := newFakeClock(epoch)
	path := filepath.Join(t.TempDir(), "store.db")
	s, err := Open(path, Options{Node: "node-1", Clock: clk, Logger: discard}) // with fsync
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]string{
		"web":    `{"image":"demo:1","replicas":3}`,
		"html":   `"<a href=\"x\">&amp;</a>"`,
		"spaced": "{ \"a\" :\n [1, 2, 3] }",
		"uni":    "\"é\u2028\\u2029\"",
		"gone":   `1`,
	}
	for k, v := range values {
		if _, err := s.Put(k, []byte(v), nil); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Millisecond)
	}
	if _, err := s.Delete("gone", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Merge([]Entry{{Key: "remote", Version: ver(epoch.Add(time.Hour).UnixNano(), 5, "node-2"), Value: []byte(`"r"`)}}); err != nil {
		t.Fatal(err)
	}
	wantVersions := s.Versions()
	wantDigest := s.Digest()
	var wantEntries []Entry
	for _, kv := range wantVersions {
		e, _ := s.Lookup(kv.Key)
		wantEntries = append(wantEntries, e)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopen with the clock two hours back: behind every stored version.
	clk.Set(epoch.Add(-2 * time.Hour))
	s2 := reopenTest(t, path, Options{Clock: clk})
	if s2.Digest() != wantDigest {
		t.Error("digest changed across reopen")
	}
	if got := s2.Versions(); !slices.Equal(got, wantVersions) {
		t.Errorf("Versions after reopen = %v, want %v", got, wantVersions)
	}
	for _, want := range wantEntries {
		got, ok := s2.Lookup(want.Key)
		if !ok || !entriesEqual(got, want) {
			t.Errorf("Lookup(%q) after reopen = %+v, want %+v", want.Key, got, want)
		}
	}
	var maxV Version
	for _, kv := range wantVersions {
		if kv.Version.Compare(maxV) > 0 {
			maxV = kv.Version
		}
	}
	if s2.HLC().Last().Compare(maxV.Time) < 0 {
		t.Fatalf("HLC after reopen %v behind stored %v", s2.HLC().Last(), maxV)
	}
	e, err := s2.Put("new", []byte("1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version.Compare(maxV) <= 0 {
		t.Fatalf("write after reopen got %v, not after stored %v", e.Version, maxV)
	}
}

func TestReopenAfterCollectingNewestTombstone(t *testing.T) {
	clk := newFakeClock(epoch.Add(10 * 24 * time.Hour))
	s, path := openTest(t, Options{Clock: clk})
	if _, err := s.Put("a", []byte("1"), nil); err != nil {
		t.Fatal(err)
	}
	tomb, err := s.Delete("a", nil)
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(8 * 24 * time.Hour)
	if n, err := s.CollectTombstones(); n != 1 || err != nil {
		t.Fatalf("CollectTombstones = %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	clk.Set(epoch)
	s2 := reopenTest(t, path, Options{Clock: clk})
	if got := s2.Stats(); got != (Stats{}) {
		t.Fatalf("Stats after reopen = %+v, want empty", got)
	}
	if e, _ := s2.Put("b", []byte("1"), nil); e.Version.Compare(tomb.Version) <= 0 {
		t.Fatalf("write after reopen got %v, not after the collected tombstone %v", e.Version, tomb.Version)
	}
}

func TestClose(t *testing.T) {
	s, _ := openTest(t, Options{})
	if _, err := s.Put("a", []byte("1"), nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	writes := map[string]func() error{
		"Put":    func() error { _, err := s.Put("b", []byte("1"), nil); return err },
		"Delete": func() error { _, err := s.Delete("a", nil); return err },
		"Merge": func() error {
			_, err := s.Merge([]Entry{{Key: "c", Version: ver(1, 0, "x"), Value: []byte("1")}})
			return err
		},
		"CollectTombstones": func() error { _, err := s.CollectTombstones(); return err },
	}
	for name, f := range writes {
		if err := f(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close = %v, want ErrClosed", name, err)
		}
	}
	if _, ok := s.Get("a"); !ok {
		t.Error("Get after Close lost the entry")
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a bolt file "), 1024), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		path string
		node string
		want string
	}{
		{"no node", filepath.Join(dir, "a.db"), "", "Options.Node: empty node name"},
		{"bad node", filepath.Join(dir, "a.db"), "a b", "Options.Node"},
		{"missing dir", filepath.Join(dir, "nope", "a.db"), "n", "no such file"},
		{"not a database", garbage, "n", "store: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.path, Options{Node: tt.node, Logger: discard})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Open error %q, want it to mention %q", err, tt.want)
			}
		})
	}
	// The file is created with mode 0600.
	s, path := openTest(t, Options{})
	_ = s
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("database file mode: %v, %v", fi.Mode(), err)
	}
}

func TestMergeLWW(t *testing.T) {
	older, newer := ver(100, 0, "n1"), ver(200, 0, "n1")
	live := func(v Version, val string) Entry { return Entry{Key: "k", Version: v, Value: []byte(val)} }
	tomb := func(v Version) Entry { return Entry{Key: "k", Version: v, Deleted: true} }
	tests := []struct {
		name        string
		local       *Entry
		remote      Entry
		wantChanged bool
	}{
		{"new key", nil, live(older, "1"), true},
		{"new tombstone", nil, tomb(older), true},
		{"newer write wins", ptr(live(older, "1")), live(newer, "2"), true},
		{"older write loses", ptr(live(newer, "2")), live(older, "1"), false},
		{"newer tombstone beats older write", ptr(live(older, "1")), tomb(newer), true},
		{"older tombstone loses to newer write", ptr(live(newer, "1")), tomb(older), false},
		{"newer write beats older tombstone", ptr(tomb(older)), live(newer, "2"), true},
		{"older write loses to newer tombstone", ptr(tomb(newer)), live(older, "2"), false},
		{"same version is a no-op", ptr(live(older, "1")), live(older, "1"), false},
		{"same version, spacing differs: no-op", ptr(live(older, `[1,2]`)), live(older, `[1, 2]`), false},
		{"node breaks the tie", ptr(live(ver(100, 0, "n1"), "1")), live(ver(100, 0, "n2"), "2"), true},
		{"node breaks the tie (loses)", ptr(live(ver(100, 0, "n2"), "1")), live(ver(100, 0, "n1"), "2"), false},
		{"logical breaks the tie", ptr(live(ver(100, 1, "n2"), "1")), live(ver(100, 2, "n1"), "2"), true},
		{"same version, tombstone wins", ptr(live(older, "1")), tomb(older), true},
		{"same version, live loses to tombstone", ptr(tomb(older)), live(older, "1"), false},
		{"same version, greater value wins", ptr(live(older, "1")), live(older, "2"), true},
		{"same version, smaller value loses", ptr(live(older, "2")), live(older, "1"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := openTest(t, Options{})
			if tt.local != nil {
				if ch, err := s.Merge([]Entry{*tt.local}); err != nil || len(ch) != 1 {
					t.Fatalf("seed merge = %v, %v", ch, err)
				}
			}
			changed, err := s.Merge([]Entry{tt.remote})
			if err != nil {
				t.Fatal(err)
			}
			if (len(changed) == 1) != tt.wantChanged {
				t.Fatalf("changed = %+v, want changed=%v", changed, tt.wantChanged)
			}
			want, _ := check(tt.remote)
			if !tt.wantChanged {
				want, _ = check(*tt.local)
			}
			if got, ok := s.Lookup("k"); !ok || !entriesEqual(got, want) {
				t.Fatalf("Lookup = %+v, want %+v", got, want)
			}
			// Idempotent: merging the same again changes nothing.
			if again, err := s.Merge([]Entry{tt.remote}); err != nil || len(again) != 0 {
				t.Fatalf("repeat merge = %+v, %v", again, err)
			}
		})
	}
}

func TestMergeBatchDuplicatesKeepNewest(t *testing.T) {
	s, _ := openTest(t, Options{})
	batch := []Entry{
		{Key: "k", Version: ver(300, 0, "a"), Value: []byte("3")},
		{Key: "k", Version: ver(100, 0, "a"), Value: []byte("1")},
		{Key: "j", Version: ver(100, 0, "a"), Deleted: true},
		{Key: "k", Version: ver(200, 0, "a"), Value: []byte("2")},
		{Key: "k", Version: ver(300, 0, "a"), Value: []byte("3")},
	}
	changed, err := s.Merge(batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 2 || changed[0].Key != "j" || changed[1].Key != "k" || string(changed[1].Value) != "3" {
		t.Fatalf("changed = %+v, want j then k=3", changed)
	}
}

func TestMergeInvalidSkippedAndCounted(t *testing.T) {
	s, _ := openTest(t, Options{})
	v := ver(100, 0, "n2")
	batch := []Entry{
		{Key: "ok1", Version: v, Value: []byte(`{"a": 1}`)},
		{Key: "", Version: v, Value: []byte("1")},
		{Key: "zero", Value: []byte("1")},
		{Key: "tomb-val", Version: v, Deleted: true, Value: []byte("1")},
		{Key: "no-val", Version: v},
		{Key: strings.Repeat("k", MaxKeyLen+1), Version: v, Value: []byte("1")},
		{Key: "big", Version: v, Value: []byte(`"` + strings.Repeat("x", MaxValueSize) + `"`)},
		{Key: "badjson", Version: v, Value: []byte("{")},
		{Key: "ok2", Version: v, Deleted: true},
	}
	changed, err := s.Merge(batch)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Merge error = %v, want ErrInvalid", err)
	}
	if !strings.Contains(err.Error(), "skipped 7 of 9") {
		t.Errorf("error %q does not count the skipped entries", err)
	}
	if len(changed) != 2 || changed[0].Key != "ok1" || changed[1].Key != "ok2" {
		t.Fatalf("changed = %+v, want ok1 and ok2", changed)
	}
	if string(changed[0].Value) != `{"a":1}` {
		t.Errorf("value not canonical: %s", changed[0].Value)
	}
	if st := s.Stats(); st != (Stats{Live: 1, Tombstones: 1, MergedInvalid: 7}) {
		t.Errorf("Stats = %+v", st)
	}
	for _, e := range batch[1:8] {
		if _, ok := s.Lookup(e.Key); ok {
			t.Errorf("invalid entry %q was applied", e.Key)
		}
	}
	// All invalid: nothing changes, error, count grows.
	changed, err = s.Merge(batch[1:3])
	if !errors.Is(err, ErrInvalid) || len(changed) != 0 || s.Stats().MergedInvalid != 9 {
		t.Fatalf("all-invalid merge = %v, %v, stats %+v", changed, err, s.Stats())
	}
}

func TestMergeAdvancesHLC(t *testing.T) {
	s, _ := openTest(t, Options{Node: "a"})
	remote := ver(epoch.Add(time.Hour).UnixNano(), 9, "b")
	if _, err := s.Merge([]Entry{{Key: "k", Version: remote, Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	e, err := s.Put("k", []byte("2"), &remote)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version.Compare(remote) <= 0 {
		t.Fatalf("local write after merge %v does not beat remote %v", e.Version, remote)
	}
	// Invalid entries do not move the clock.
	last := s.HLC().Last()
	_, _ = s.Merge([]Entry{{Key: "", Version: ver(epoch.Add(48*time.Hour).UnixNano(), 0, "b"), Value: []byte("1")}})
	if s.HLC().Last() != last {
		t.Fatal("invalid entry advanced the HLC")
	}
}

func TestCollectTombstones(t *testing.T) {
	clk := newFakeClock(epoch)
	s, _ := openTest(t, Options{Clock: clk, TombstoneHorizon: time.Hour})
	day := int64(24 * time.Hour)
	now := epoch.UnixNano()
	if _, err := s.Merge([]Entry{
		{Key: "old-tomb", Version: ver(now-day, 0, "x"), Deleted: true},
		{Key: "edge-tomb", Version: ver(now-int64(time.Hour), 0, "x"), Deleted: true},
		{Key: "young-tomb", Version: ver(now-int64(time.Minute), 0, "x"), Deleted: true},
		{Key: "old-live", Version: ver(now-day, 0, "x"), Value: []byte("1")},
	}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		advance   time.Duration
		want      int
		remaining []string
	}{
		{0, 1, []string{"edge-tomb", "old-live", "young-tomb"}},
		{0, 0, []string{"edge-tomb", "old-live", "young-tomb"}},
		{time.Nanosecond, 1, []string{"old-live", "young-tomb"}},
		{58 * time.Minute, 0, []string{"old-live", "young-tomb"}},
		{2 * time.Minute, 1, []string{"old-live"}},
		{1000 * time.Hour, 0, []string{"old-live"}},
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		n, err := s.CollectTombstones()
		if err != nil || n != st.want {
			t.Fatalf("step %d: CollectTombstones = %d, %v; want %d", i, n, err, st.want)
		}
		var keys []string
		for _, kv := range s.Versions() {
			keys = append(keys, kv.Key)
		}
		if !slices.Equal(keys, st.remaining) {
			t.Fatalf("step %d: keys %v, want %v", i, keys, st.remaining)
		}
	}
	// The collection is persisted.
	clk.Advance(time.Hour)
	if _, err := s.Delete("old-live", nil); err != nil {
		t.Fatal(err)
	}
	clk.Advance(2 * time.Hour)
	if n, _ := s.CollectTombstones(); n != 1 || s.Stats() != (Stats{}) {
		t.Fatalf("collect of local delete: n=%d stats=%+v", n, s.Stats())
	}
}

func TestOnChange(t *testing.T) {
	var (
		mu  sync.Mutex
		got []Entry
		s   *Store
	)
	s, _ = openTest(t, Options{OnChange: func(e Entry) {
		// Reading (and even writing) from the callback must not deadlock.
		if cur, ok := s.Lookup(e.Key); !ok || cur.Version.Compare(e.Version) < 0 {
			t.Errorf("OnChange(%v) before the change is visible", e.Version)
		}
		if e.Key == "trigger" && !e.Deleted {
			if _, err := s.Delete("trigger", nil); err != nil {
				t.Errorf("Delete from OnChange: %v", err)
			}
		}
		mu.Lock()
		got = append(got, e)
		mu.Unlock()
	}})
	put, _ := s.Put("a", []byte("1"), nil)
	_, _ = s.Put("a", []byte("1"), &Version{}) // conflict: no callback
	merged, _ := s.Merge([]Entry{
		{Key: "c", Version: ver(1, 0, "x"), Value: []byte("1")},
		{Key: "b", Version: ver(1, 0, "x"), Value: []byte("1")},
		{Key: "a", Version: ver(1, 0, "x"), Value: []byte("0")}, // loses: no callback
	})
	_, _ = s.Merge(merged) // no change: no callback
	trig, _ := s.Put("trigger", []byte("1"), nil)
	untrig, _ := s.Lookup("trigger")

	want := []Entry{put, merged[0], merged[1], trig, untrig}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("OnChange got %d calls %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if !entriesEqual(got[i], want[i]) {
			t.Errorf("call %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestOnChangeConcurrentWritesInCommitOrder(t *testing.T) {
	var (
		mu       sync.Mutex
		inFlight int
		got      []Version
	)
	s, _ := openTest(t, Options{NoSync: true, Clock: SystemClock, OnChange: func(e Entry) {
		mu.Lock()
		inFlight++
		if inFlight > 1 {
			t.Error("OnChange called concurrently")
		}
		got = append(got, e.Version)
		inFlight--
		mu.Unlock()
	}})
	const writers, per = 4, 25
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range per {
				key := fmt.Sprintf("w%d-%d", w, i%5)
				if _, err := s.Put(key, []byte("1"), nil); err != nil {
					t.Error(err)
				}
				s.Get(key)
				s.Digest()
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != writers*per {
		t.Fatalf("%d callbacks, want %d", len(got), writers*per)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Compare(got[i-1]) <= 0 {
			t.Fatalf("callback %d: version %v not after %v: not in commit order", i, got[i], got[i-1])
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	s, _ := openTest(t, Options{NoSync: true, Clock: SystemClock})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() {
			for i := range 30 {
				key := fmt.Sprintf("k%d", i%7)
				switch (w + i) % 4 {
				case 0:
					_, _ = s.Put(key, []byte("1"), nil)
				case 1:
					_, _ = s.Delete(key, nil)
				case 2:
					_, _ = s.Merge([]Entry{{Key: key, Version: ver(int64(i+1), 0, "r"), Value: []byte("2")}})
				case 3:
					_, _ = s.CollectTombstones()
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range 100 {
				s.List()
				s.Versions()
				s.Digest()
				s.Entries([]string{"k1", "k2"})
				s.Stats()
			}
		})
	}
	wg.Wait()
	// The cached digest matches a fresh computation.
	s.mu.RLock()
	fresh := summarize(s.entries).digest
	s.mu.RUnlock()
	if s.Digest() != fresh {
		t.Fatal("cached digest is stale")
	}
}

func ptr[T any](v T) *T { return &v }

// entriesEqual compares entries including their values.
func entriesEqual(a, b Entry) bool {
	return a.Key == b.Key && a.Version == b.Version && a.Deleted == b.Deleted && bytes.Equal(a.Value, b.Value)
}
