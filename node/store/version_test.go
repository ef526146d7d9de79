package store

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestVersionCompare(t *testing.T) {
	tests := []struct {
		a, b Version
		want int
	}{
		{Version{}, Version{}, 0},
		{ver(5, 0, "a"), ver(5, 0, "a"), 0},
		{ver(5, 0, "a"), ver(6, 0, "a"), -1},
		{ver(6, 0, "a"), ver(5, 9, "z"), 1},
		{ver(5, 1, "a"), ver(5, 2, "a"), -1},
		{ver(5, 2, "a"), ver(5, 1, "z"), 1},
		{ver(5, 1, "a"), ver(5, 1, "b"), -1}, // node tie-break
		{ver(5, 1, "node-10"), ver(5, 1, "node-9"), -1},
		{Version{}, ver(0, 0, "a"), -1},
	}
	for _, tt := range tests {
		if got := tt.a.Compare(tt.b); got != tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := tt.b.Compare(tt.a); got != -tt.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
	if !(Version{}).IsZero() || ver(0, 0, "a").IsZero() || ver(1, 0, "").IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestVersionString(t *testing.T) {
	tests := []struct {
		v    Version
		want string
	}{
		{ver(1764064800123456789, 0, "node-1"), "1764064800123456789.0@node-1"},
		{ver(1, 42, "a@b"), "1.42@a@b"},
		{ver(math.MaxInt64, math.MaxUint32, "n"), "9223372036854775807.4294967295@n"},
		{ver(7, 0, "nœud-é"), "7.0@nœud-é"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
		back, err := ParseVersion(tt.want)
		if err != nil {
			t.Errorf("ParseVersion(%q): %v", tt.want, err)
		} else if back != tt.v {
			t.Errorf("ParseVersion(%q) = %+v, want %+v", tt.want, back, tt.v)
		}
	}
}

func TestParseVersionErrors(t *testing.T) {
	tests := []struct {
		in, why string
	}{
		{"", "missing '@'"},
		{"1.0", "missing '@'"},
		{"1@n", "missing '.'"},
		{".0@n", "wall time is not"},
		{"1.@n", "logical time is not"},
		{"-1.0@n", "wall time is not"},
		{"+1.0@n", "wall time is not"},
		{"1.-1@n", "logical time is not"},
		{"0x1.0@n", "wall time is not"},
		{"1.0.0@n", "logical time is not"},
		{" 1.0@n", "wall time is not"},
		{"9223372036854775808.0@n", "wall time out of range"},
		{"1.4294967296@n", "logical time out of range"},
		{"1.0@", "empty node name"},
		{"1.0@a b", "node name contains U+0020"},
		{"1.0@a\r\nX-Evil: 1", "node name contains U+000D"},
		{"1.0@\xff", "not valid UTF-8"},
		{"1.0@" + strings.Repeat("n", MaxNodeLen+1), "longer than"},
		{`"1.0@n"`, "wall time is not"},
	}
	for _, tt := range tests {
		v, err := ParseVersion(tt.in)
		if err == nil {
			t.Errorf("ParseVersion(%q) = %+v, want error", tt.in, v)
			continue
		}
		if !errors.Is(err, ErrBadVersion) {
			t.Errorf("ParseVersion(%q) error %v does not wrap ErrBadVersion", tt.in, err)
		}
		if !strings.Contains(err.Error(), tt.why) {
			t.Errorf("ParseVersion(%q) error %q, want it to mention %q", tt.in, err, tt.why)
		}
	}
	// Long garbage is truncated in the message.
	_, err := ParseVersion(strings.Repeat("x", 10000))
	if err == nil || len(err.Error()) > 300 {
		t.Errorf("error for long input: %v", err)
	}
}

func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{
		"1764064800123456789.0@node-1",
		"0.0@n",
		"1.42@a@b",
		"9223372036854775807.4294967295@n",
		"01.001@x",
		"1.0@",
		"-1.0@n",
		"1.0@a b",
		"",
		"@",
		".@",
		"1.0@\xff",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			if !errors.Is(err, ErrBadVersion) {
				t.Fatalf("error %v does not wrap ErrBadVersion", err)
			}
			return
		}
		str := v.String()
		back, err := ParseVersion(str)
		if err != nil {
			t.Fatalf("ParseVersion(%q) ok = %+v, but its String %q does not parse: %v", s, v, str, err)
		}
		if back != v {
			t.Fatalf("round trip: %q -> %+v -> %q -> %+v", s, v, str, back)
		}
		if back.String() != str {
			t.Fatalf("String not canonical: %q vs %q", back.String(), str)
		}
	})
}

func TestEntryValidate(t *testing.T) {
	v := ver(100, 0, "n1")
	big := `"` + strings.Repeat("x", MaxValueSize-2) + `"`
	tests := []struct {
		name string
		e    Entry
		why  string // "" = valid
	}{
		{"live", Entry{Key: "web", Version: v, Value: []byte(`{"a":1}`)}, ""},
		{"tombstone", Entry{Key: "web", Version: v, Deleted: true}, ""},
		{"tombstone with null value", Entry{Key: "web", Version: v, Deleted: true, Value: []byte("null")}, ""},
		{"max key", Entry{Key: strings.Repeat("k", MaxKeyLen), Version: v, Value: []byte("1")}, ""},
		{"max value", Entry{Key: "k", Version: v, Value: []byte(big)}, ""},
		{"max value with spaces", Entry{Key: "k", Version: v, Value: []byte(" " + big + " ")}, ""},
		{"logical only", Entry{Key: "k", Version: ver(0, 1, "n"), Value: []byte("1")}, ""},
		{"empty key", Entry{Version: v, Value: []byte("1")}, "empty key"},
		{"long key", Entry{Key: strings.Repeat("k", MaxKeyLen+1), Version: v, Value: []byte("1")}, "key longer"},
		{"non-UTF-8 key", Entry{Key: "a\xffb", Version: v, Value: []byte("1")}, "UTF-8"},
		{"zero version", Entry{Key: "k", Value: []byte("1")}, "zero version"},
		{"zero time", Entry{Key: "k", Version: ver(0, 0, "n"), Value: []byte("1")}, "zero version"},
		{"no node", Entry{Key: "k", Version: ver(1, 0, ""), Value: []byte("1")}, "empty node"},
		{"bad node", Entry{Key: "k", Version: ver(1, 0, "a\nb"), Value: []byte("1")}, "node name contains"},
		{"negative wall", Entry{Key: "k", Version: ver(-1, 0, "n"), Value: []byte("1")}, "negative wall"},
		{"tombstone with value", Entry{Key: "k", Version: v, Deleted: true, Value: []byte("1")}, "tombstone with a value"},
		{"live without value", Entry{Key: "k", Version: v}, "without a value"},
		{"live with null", Entry{Key: "k", Version: v, Value: []byte(" null ")}, "without a value"},
		{"invalid JSON", Entry{Key: "k", Version: v, Value: []byte("{")}, "not valid JSON"},
		{"two JSON values", Entry{Key: "k", Version: v, Value: []byte("1 2")}, "not valid JSON"},
		{"value too big", Entry{Key: "k", Version: v, Value: []byte(big[:len(big)-1] + `x"`)}, "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.e.Validate()
			if tt.why == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Validate() = %v, want ErrInvalid mentioning %q", err, tt.why)
			}
		})
	}
}

func TestCanonicalValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{ "a" : [1, 2] }`, `{"a":[1,2]}`},
		{"\n\t\"<&>\"\n", `"<&>"`},
		{`"\u2028"`, `"\u2028"`},
		{"\"\u2028\"", "\"\u2028\""},
	}
	for _, tt := range tests {
		in := []byte(tt.in)
		got, err := canonicalValue(false, in)
		if err != nil || string(got) != tt.want {
			t.Errorf("canonicalValue(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if len(got) > 0 && len(in) > 0 && &got[0] == &in[0] {
			t.Errorf("canonicalValue(%q) aliases its input", tt.in)
		}
	}
}
