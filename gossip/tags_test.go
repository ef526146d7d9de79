package gossip

import (
	"errors"
	"maps"
	"math"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/hashicorp/memberlist"
	"pgregory.net/rapid"
)

func fullTags() Tags {
	return Tags{
		PeerID:        "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo",
		PeerPort:      7947,
		API:           "127.0.0.1:7070",
		Arch:          "amd64",
		OS:            "linux",
		CPUs:          2.5,
		Memory:        8 << 30,
		RuntimeReady:  true,
		RuntimeReason: "",
		Labels:        map[string]string{"zone": "a", "disk": "ssd"},
		Version:       "0.1.0",
		Filling:       true,
	}
}

func TestTagsRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Tags
	}{
		{"zero", Tags{}},
		{"full", fullTags()},
		{"not ready", Tags{RuntimeReason: "containerd: dial unix /run/containerd/containerd.sock: no such file"}},
		{"ipv6 api", Tags{API: "[::1]:7070"}},
		{"tiny cpus", Tags{CPUs: 0.001}},
		{"empty label value", Tags{Labels: map[string]string{"gpu": ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := tt.in.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			got, err := DecodeTags(m)
			if err != nil {
				t.Fatalf("DecodeTags(%v): %v", m, err)
			}
			if !reflect.DeepEqual(got, tt.in) {
				t.Fatalf("round trip:\n got %#v\nwant %#v", got, tt.in)
			}
		})
	}
}

func TestTagsEncodeShortKeys(t *testing.T) {
	m, err := fullTags().Encode()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"id": "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo", "pp": "7947",
		"api": "127.0.0.1:7070", "arch": "amd64", "os": "linux", "cpu": "2.5",
		"mem": "8589934592", "rt": "1", "v": "0.1.0", "l.zone": "a", "l.disk": "ssd",
		"fill": "1",
	}
	if !maps.Equal(m, want) {
		t.Fatalf("Encode = %v, want %v", m, want)
	}
}

func TestTagsEncodeInvalid(t *testing.T) {
	tests := []struct {
		name string
		tags Tags
	}{
		{"negative port", Tags{PeerPort: -1}},
		{"port too big", Tags{PeerPort: 65536}},
		{"NaN cpus", Tags{CPUs: math.NaN()}},
		{"inf cpus", Tags{CPUs: math.Inf(1)}},
		{"negative cpus", Tags{CPUs: -1}},
		{"negative memory", Tags{Memory: -1}},
		{"api without port", Tags{API: "localhost"}},
		{"api port zero", Tags{API: "localhost:0"}},
		{"empty label key", Tags{Labels: map[string]string{"": "x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.tags.Encode()
			if !errors.Is(err, ErrInvalidTags) {
				t.Fatalf("Encode(%+v) error = %v, want ErrInvalidTags", tt.tags, err)
			}
		})
	}
}

func TestTagsTooLarge(t *testing.T) {
	labels := map[string]string{}
	for _, k := range []string{"a", "b", "c", "d", "e"} {
		labels[k] = strings.Repeat("x", 100)
	}
	_, err := Tags{Labels: labels}.Encode()
	if !errors.Is(err, ErrTagsTooLarge) {
		t.Fatalf("Encode error = %v, want ErrTagsTooLarge", err)
	}
	if !strings.Contains(err.Error(), "limit 512") {
		t.Fatalf("error %q does not give the limit", err)
	}
}

func TestTagsRuntimeReasonTruncated(t *testing.T) {
	// A long reason is cut to MaxRuntimeReason bytes at a rune boundary.
	reason := strings.Repeat("é", 100) // 200 bytes
	m, err := Tags{RuntimeReason: reason}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got := m["rr"]
	if len(got) > MaxRuntimeReason || !utf8.ValidString(got) || !strings.HasPrefix(reason, got) || len(got) < MaxRuntimeReason-1 {
		t.Fatalf("reason cut to %d bytes %q", len(got), got)
	}

	// When the rest nearly fills the metadata, the reason is cut further
	// instead of failing.
	tags := Tags{RuntimeReason: strings.Repeat("r", MaxRuntimeReason),
		Labels: map[string]string{"big": strings.Repeat("x", 400)}}
	m, err = tags.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	size, err := encodedTagsSize(m)
	if err != nil {
		t.Fatal(err)
	}
	if size > memberlist.MetaMaxSize || len(m["rr"]) >= MaxRuntimeReason || len(m["rr"]) == 0 {
		t.Fatalf("size %d, reason %d bytes", size, len(m["rr"]))
	}
}

func TestDecodeTagsBadInput(t *testing.T) {
	tests := []struct {
		name string
		in   map[string]string
	}{
		{"port not a number", map[string]string{"pp": "http"}},
		{"port zero", map[string]string{"pp": "0"}},
		{"port too big", map[string]string{"pp": "65536"}},
		{"port negative", map[string]string{"pp": "-1"}},
		{"api without port", map[string]string{"api": "example"}},
		{"api bad port", map[string]string{"api": "example:http"}},
		{"cpus not a number", map[string]string{"cpu": "many"}},
		{"cpus NaN", map[string]string{"cpu": "NaN"}},
		{"cpus inf", map[string]string{"cpu": "+Inf"}},
		{"cpus negative", map[string]string{"cpu": "-2"}},
		{"memory float", map[string]string{"mem": "1.5"}},
		{"memory negative", map[string]string{"mem": "-1"}},
		{"memory overflow", map[string]string{"mem": "99999999999999999999"}},
		{"runtime ready word", map[string]string{"rt": "true"}},
		{"filling word", map[string]string{"fill": "yes"}},
		{"empty label key", map[string]string{"l.": "x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeTags(tt.in)
			if !errors.Is(err, ErrInvalidTags) {
				t.Fatalf("DecodeTags(%v) error = %v, want ErrInvalidTags", tt.in, err)
			}
			if !reflect.DeepEqual(got, Tags{}) {
				t.Fatalf("DecodeTags returned %+v with an error, want zero Tags", got)
			}
			for k := range tt.in {
				if !strings.Contains(err.Error(), k) {
					t.Fatalf("error %q does not name the key %q", err, k)
				}
			}
		})
	}
}

func TestDecodeTagsIgnoresUnknownKeys(t *testing.T) {
	got, err := DecodeTags(map[string]string{"id": "p", "role": "", "future": "x", "l.k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	want := Tags{PeerID: "p", Labels: map[string]string{"k": "v"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestDecodeTagsNil(t *testing.T) {
	got, err := DecodeTags(nil)
	if err != nil || !reflect.DeepEqual(got, Tags{}) {
		t.Fatalf("DecodeTags(nil) = %+v, %v", got, err)
	}
}

// tagsGen draws valid Tags that fit in the metadata limit.
func tagsGen() *rapid.Generator[Tags] {
	short := rapid.StringN(0, 12, 12)
	return rapid.Custom(func(t *rapid.T) Tags {
		tags := Tags{
			PeerID:        short.Draw(t, "peer"),
			PeerPort:      rapid.IntRange(0, 65535).Draw(t, "pp"),
			Arch:          short.Draw(t, "arch"),
			OS:            short.Draw(t, "os"),
			CPUs:          rapid.Float64Range(0, 1024).Draw(t, "cpu"),
			Memory:        rapid.Int64Min(0).Draw(t, "mem"),
			RuntimeReady:  rapid.Bool().Draw(t, "rt"),
			Filling:       rapid.Bool().Draw(t, "fill"),
			RuntimeReason: rapid.StringN(0, 40, 40).Draw(t, "rr"),
			Version:       short.Draw(t, "v"),
		}
		if rapid.Bool().Draw(t, "hasAPI") {
			tags.API = "host:" + rapid.StringMatching(`[1-9][0-9]{0,3}`).Draw(t, "apiport")
		}
		labels := rapid.MapOfN(rapid.StringN(1, 8, 8), short, 0, 4).Draw(t, "labels")
		if len(labels) > 0 {
			tags.Labels = labels
		}
		return tags
	})
}

func TestTagsRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		in := tagsGen().Draw(t, "tags")
		m, err := in.Encode()
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		if size, err := encodedTagsSize(m); err != nil || size > memberlist.MetaMaxSize {
			t.Fatalf("encoded size %d (%v) over the limit", size, err)
		}
		got, err := DecodeTags(m)
		if err != nil {
			t.Fatalf("DecodeTags: %v", err)
		}
		if !reflect.DeepEqual(got, in) {
			t.Fatalf("round trip:\n got %#v\nwant %#v", got, in)
		}
	})
}

func TestTruncateUTF8(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"abc", 5, "abc"},
		{"abc", 2, "ab"},
		{"abc", 0, ""},
		{"abc", -1, ""},
		{"aé", 2, "a"},  // é is 2 bytes
		{"a€b", 3, "a"}, // € is 3 bytes
		{"a😀", 4, "a"},  // 😀 is 4 bytes
		{"a😀b", 5, "a😀"},
	}
	for _, tt := range tests {
		if got := truncateUTF8(tt.s, tt.n); got != tt.want {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

// FuzzDecodeTags feeds DecodeTags maps built from "key=value" lines. It must
// never panic, and whatever it accepts must survive Encode and decode to the
// same value.
func FuzzDecodeTags(f *testing.F) {
	f.Add("id=12D3KooW\npp=7947\napi=127.0.0.1:7070\narch=amd64\nos=linux\ncpu=4\nmem=1024\nrt=1\nrr=\nv=0.1.0\nl.zone=a")
	f.Add("pp=99999")
	f.Add("cpu=NaN")
	f.Add("cpu=1e308\nmem=9223372036854775807")
	f.Add("api=[::1]:80")
	f.Add("api=:")
	f.Add("l.=x")
	f.Add("rt=0\nunknown=whatever")
	f.Add("")
	f.Add("=\n=\n\xff\xfe=\x00")
	f.Fuzz(func(t *testing.T, s string) {
		m := map[string]string{}
		for line := range strings.SplitSeq(s, "\n") {
			k, v, _ := strings.Cut(line, "=")
			m[k] = v
		}
		tags, err := DecodeTags(m)
		if err != nil {
			if !errors.Is(err, ErrInvalidTags) {
				t.Fatalf("error %v is not ErrInvalidTags", err)
			}
			return
		}
		enc, err := tags.Encode()
		if errors.Is(err, ErrTagsTooLarge) {
			return // the input itself was over the limit
		}
		if err != nil {
			t.Fatalf("decoded tags %+v do not encode: %v", tags, err)
		}
		again, err := DecodeTags(enc)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		// Encode may shorten the reason (to MaxRuntimeReason, or to fit).
		if len(again.RuntimeReason) > MaxRuntimeReason || !strings.HasPrefix(tags.RuntimeReason, again.RuntimeReason) {
			t.Fatalf("reason %q is not a short prefix of %q", again.RuntimeReason, tags.RuntimeReason)
		}
		tags.RuntimeReason = again.RuntimeReason
		if !reflect.DeepEqual(again, tags) {
			t.Fatalf("not stable:\n got %#v\nwant %#v", again, tags)
		}
	})
}
