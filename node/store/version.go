package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits enforced on every entry, local or remote.
const (
	// MaxKeyLen is the longest key accepted, in bytes (a DNS name's limit).
	MaxKeyLen = 253
	// MaxNodeLen is the longest node name accepted in a Version, in bytes.
	MaxNodeLen = 253
	// MaxValueSize is the largest value accepted, in bytes, after JSON
	// compaction.
	MaxValueSize = 1 << 20
)

// ErrBadVersion is returned by ParseVersion for malformed input.
var ErrBadVersion = errors.New("store: malformed version")

// Version orders writes: by Time, then by Node as a tie-break. It is a total
// order, and because each node's HLC is strictly increasing and node names are
// unique, no two writes get the same Version.
type Version struct {
	// Time is the writer's HLC reading when the write happened.
	Time Timestamp `json:"time"`
	// Node is the name of the node that made the write.
	Node string `json:"node"`
}

// Compare returns -1, 0 or +1 as v is older than, equal to or newer than o.
func (v Version) Compare(o Version) int {
	if c := v.Time.Compare(o.Time); c != 0 {
		return c
	}
	return strings.Compare(v.Node, o.Node)
}

// IsZero reports whether v is the zero Version.
func (v Version) IsZero() bool { return v.Time.IsZero() && v.Node == "" }

// String formats v as "<wall>.<logical>@<node>", for example
// "1764064800123456789.0@node-1". ParseVersion is its inverse.
func (v Version) String() string {
	b := make([]byte, 0, 32+len(v.Node))
	b = strconv.AppendInt(b, v.Time.Wall, 10)
	b = append(b, '.')
	b = strconv.AppendUint(b, uint64(v.Time.Logical), 10)
	b = append(b, '@')
	b = append(b, v.Node...)
	return string(b)
}

// ParseVersion parses the output of Version.String. The input usually comes
// from outside (an HTTP If-Match header), so it is checked strictly: wall and
// logical must be unsigned decimal numbers in range, and the node name (all
// text after the first '@') must satisfy the same rules as a node name in a
// stored entry. Errors wrap ErrBadVersion.
func ParseVersion(s string) (Version, error) {
	bad := func(why string) (Version, error) {
		return Version{}, fmt.Errorf("%w %s: %s (want <wall>.<logical>@<node>)", ErrBadVersion, quoteShort(s), why)
	}
	ts, node, ok := strings.Cut(s, "@")
	if !ok {
		return bad("missing '@'")
	}
	wall, logical, ok := strings.Cut(ts, ".")
	if !ok {
		return bad("missing '.' between wall and logical time")
	}
	if !isDigits(wall) {
		return bad("wall time is not an unsigned decimal number")
	}
	if !isDigits(logical) {
		return bad("logical time is not an unsigned decimal number")
	}
	w, err := strconv.ParseInt(wall, 10, 64)
	if err != nil {
		return bad("wall time out of range")
	}
	l, err := strconv.ParseUint(logical, 10, 32)
	if err != nil {
		return bad("logical time out of range")
	}
	if err := checkNode(node); err != nil {
		return bad(err.Error())
	}
	return Version{Time: Timestamp{Wall: w, Logical: uint32(l)}, Node: node}, nil
}

// quoteShort quotes s for an error message, truncating long input.
func quoteShort(s string) string {
	const limit = 80
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkNode validates a node name: 1 to MaxNodeLen bytes of UTF-8 without
// control characters or white space, so that a Version's String is a single
// token safe in an HTTP header and survives JSON unchanged.
func checkNode(n string) error {
	switch {
	case n == "":
		return errors.New("empty node name")
	case len(n) > MaxNodeLen:
		return fmt.Errorf("node name longer than %d bytes", MaxNodeLen)
	case !utf8.ValidString(n):
		return errors.New("node name is not valid UTF-8")
	}
	for _, r := range n {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return fmt.Errorf("node name contains %U", r)
		}
	}
	return nil
}

// checkKey validates a key: 1 to MaxKeyLen bytes of valid UTF-8 (JSON
// cannot carry anything else unchanged).
func checkKey(k string) error {
	switch {
	case k == "":
		return errors.New("empty key")
	case len(k) > MaxKeyLen:
		return fmt.Errorf("key longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(k):
		return errors.New("key is not valid UTF-8")
	}
	return nil
}

// Entry is one replicated map entry. Deleted entries are tombstones: they
// carry no Value and exist so that a deletion can win over older writes.
type Entry struct {
	// Key is the map key.
	Key string `json:"key"`
	// Version orders this write against every other write of Key.
	Version Version `json:"version"`
	// Deleted marks a tombstone.
	Deleted bool `json:"deleted,omitempty"`
	// Value is the JSON value of a live entry; nil for a tombstone.
	Value json.RawMessage `json:"value,omitempty"`
}

// KeyVersion is an entry without its value, for anti-entropy summaries.
type KeyVersion struct {
	// Key is the map key.
	Key string `json:"key"`
	// Version is the entry's version.
	Version Version `json:"version"`
	// Deleted marks a tombstone.
	Deleted bool `json:"deleted,omitempty"`
}

// KeyVersion returns e without its value.
func (e Entry) KeyVersion() KeyVersion {
	return KeyVersion{Key: e.Key, Version: e.Version, Deleted: e.Deleted}
}

// Validate reports whether e may be stored, as Merge checks it: a key of 1 to
// MaxKeyLen bytes of UTF-8, a non-zero version with a non-negative wall time
// and a valid node name, and either a tombstone without a value or a live
// entry whose value is valid JSON other than null, at most MaxValueSize bytes
// once compacted. Errors wrap ErrInvalid.
func (e Entry) Validate() error {
	if _, err := check(e); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return nil
}

// check validates e and returns it in canonical form (see canonicalValue).
// Its errors are bare reasons; callers wrap them with ErrInvalid.
func check(e Entry) (Entry, error) {
	if err := checkKey(e.Key); err != nil {
		return Entry{}, err
	}
	switch {
	case e.Version.Time.IsZero():
		return Entry{}, fmt.Errorf("key %q: zero version", e.Key)
	case e.Version.Time.Wall < 0:
		return Entry{}, fmt.Errorf("key %q: negative wall time in version", e.Key)
	}
	if err := checkNode(e.Version.Node); err != nil {
		return Entry{}, fmt.Errorf("key %q: version: %v", e.Key, err)
	}
	v, err := canonicalValue(e.Deleted, e.Value)
	if err != nil {
		return Entry{}, fmt.Errorf("key %q: %v", e.Key, err)
	}
	e.Value = v
	return e, nil
}

// canonicalValue validates the value of an entry and returns it compacted, so
// that it round-trips byte for byte through the JSON encoding used on disk; a
// JSON null counts as no value. The result never aliases raw.
func canonicalValue(deleted bool, raw []byte) (json.RawMessage, error) {
	var value json.RawMessage
	if len(raw) > 0 {
		var buf bytes.Buffer
		buf.Grow(len(raw))
		if err := json.Compact(&buf, raw); err != nil {
			return nil, fmt.Errorf("value is not valid JSON: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), []byte("null")) {
			value = buf.Bytes()
		}
	}
	switch {
	case deleted && value != nil:
		return nil, errors.New("tombstone with a value")
	case !deleted && value == nil:
		return nil, errors.New("live entry without a value")
	case len(value) > MaxValueSize:
		return nil, fmt.Errorf("value of %d bytes exceeds %d", len(value), MaxValueSize)
	}
	return value, nil
}

// supersedes reports whether e replaces o under last-writer-wins: the higher
// Version wins. Honest nodes never write two different entries with the same
// Version; should it happen anyway (a node that lost its data directory and
// its clock went back), a tombstone beats a live entry and otherwise the
// bytewise greater value wins, so Merge stays commutative even then.
func (e Entry) supersedes(o Entry) bool {
	if c := e.Version.Compare(o.Version); c != 0 {
		return c > 0
	}
	if e.Deleted != o.Deleted {
		return e.Deleted
	}
	return bytes.Compare(e.Value, o.Value) > 0
}
