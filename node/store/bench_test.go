package store

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPut measures a durable local write (fsync included) to one key.
func BenchmarkPut(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.db")
	s, err := Open(path, Options{Node: "bench", Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := []byte(`{"name":"web","image":"demo:1","replicas":3,"publish":["8080:80"]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Put("web", value, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMerge100 measures merging a batch of 100 newer remote entries,
// persisted in one transaction with fsync.
func BenchmarkMerge100(b *testing.B) {
	path := filepath.Join(b.TempDir(), "bench.db")
	s, err := Open(path, Options{Node: "bench", Logger: discard})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	value := []byte(`{"name":"svc","image":"demo:1","replicas":3,"publish":["8080:80"]}`)
	keys := make([]string, 100)
	for i := range keys {
		keys[i] = fmt.Sprintf("svc-%03d", i)
	}
	batch := make([]Entry, len(keys))
	wall := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		wall++
		for i, k := range keys {
			batch[i] = Entry{Key: k, Version: ver(wall, 0, "remote"), Value: value}
		}
		changed, err := s.Merge(batch)
		if err != nil || len(changed) != len(batch) {
			b.Fatalf("Merge = %d changed, %v", len(changed), err)
		}
	}
}
