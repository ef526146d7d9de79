package containerd

import (
	"bytes"
	"maps"
	"os"
	"path/filepath"
	"testing"

	"pgregory.net/rapid"
)

func TestLastLines(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", -1, "a\nb\nc\n"},
		{"a\nb\nc\n", 0, ""},
		{"a\nb\nc\n", 1, "c\n"},
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc\n", 3, "a\nb\nc\n"},
		{"a\nb\nc\n", 9, "a\nb\nc\n"},
		{"a\nb\npartial", 1, "partial"},
		{"a\nb\npartial", 2, "b\npartial"},
		{"", 3, ""},
		{"\n\n", 1, "\n"},
	}
	for _, tt := range tests {
		if got := string(lastLines([]byte(tt.in), tt.n)); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
		}
	}
}

// Property: the tail is a suffix of the input holding min(n, lines) lines.
func TestLastLinesProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		lines := rapid.SliceOf(rapid.StringMatching(`[a-z ]{0,5}`)).Draw(t, "lines")
		var b bytes.Buffer
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
		n := rapid.IntRange(0, len(lines)+2).Draw(t, "n")
		got := lastLines(b.Bytes(), n)
		if !bytes.HasSuffix(b.Bytes(), got) {
			t.Fatalf("%q is not a suffix of %q", got, b.Bytes())
		}
		if want := min(n, len(lines)); bytes.Count(got, []byte("\n")) != want {
			t.Fatalf("lastLines(%d) = %q: %d lines, want %d", n, got, bytes.Count(got, []byte("\n")), want)
		}
	})
}

func TestHostPortsRoundTrip(t *testing.T) {
	tests := []struct {
		in      map[int]int
		label   string
		wantErr bool
	}{
		{map[int]int{80: 20001}, "80=20001", false},
		{map[int]int{443: 20002, 80: 20001}, "80=20001,443=20002", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		if got := formatHostPorts(tt.in); got != tt.label {
			t.Errorf("formatHostPorts(%v) = %q, want %q", tt.in, got, tt.label)
		}
		back, err := parseHostPorts(tt.label)
		if err != nil || !maps.Equal(back, tt.in) {
			t.Errorf("parseHostPorts(%q) = %v, %v; want %v", tt.label, back, err, tt.in)
		}
	}
	for _, bad := range []string{"80", "80=", "=80", "a=b", "0=1", "80=70000", "80=1,", "80=1;81=2"} {
		if got, err := parseHostPorts(bad); err == nil {
			t.Errorf("parseHostPorts(%q) = %v, want an error", bad, got)
		}
	}
}

// FuzzParseHostPorts: labels are outside input. Whatever parses formats
// back to an equivalent label; nothing panics.
func FuzzParseHostPorts(f *testing.F) {
	for _, s := range []string{"", "80=20001", "80=20001,443=20002", "80", "a=b", "1=1,1=2", "65535=1", "-1=5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := parseHostPorts(s)
		if err != nil {
			return
		}
		for c, h := range m {
			if c < 1 || c > 65535 || h < 1 || h > 65535 {
				t.Fatalf("parseHostPorts(%q) gave %d=%d", s, c, h)
			}
		}
		again, err := parseHostPorts(formatHostPorts(m))
		if err != nil || !maps.Equal(again, m) {
			t.Fatalf("round trip of %q: %v, %v", s, again, err)
		}
	})
}

func TestReplicaFromLabelsDropsBadValues(t *testing.T) {
	r := replicaFromLabels("x", "img", map[string]string{
		"shoal.service": "web", "shoal.slot": "notanumber", LabelIP: "999.1.1.1",
		LabelHostPorts: "80=x", LabelStarted: "yesterday",
	})
	if r.Service != "web" || r.Slot != 0 || r.IP.IsValid() || r.HostPorts != nil || !r.StartedAt.IsZero() {
		t.Fatalf("replicaFromLabels = %+v", r)
	}
}

func TestNormalizeOCIName(t *testing.T) {
	tests := map[string]string{
		"shoal-demo:latest":        "docker.io/library/shoal-demo:latest",
		"shoal-demo":               "docker.io/library/shoal-demo:latest",
		"team/app:1":               "docker.io/team/app:1",
		"127.0.0.1:5000/x/y:2":     "127.0.0.1:5000/x/y:2",
		"registry.example/a/b:c":   "registry.example/a/b:c",
		"Not A Reference":          "",
		"UPPERCASE:1":              "",
		"docker.io/library/bb:1.0": "docker.io/library/bb:1.0",
	}
	for in, want := range tests {
		if got := normalizeOCIName(in); got != want {
			t.Errorf("normalizeOCIName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIsLoopbackHost(t *testing.T) {
	tests := map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:5000": true, "127.3.2.1": true,
		"[::1]:5000": true, "::1": true, "docker.io": false, "10.0.0.1:5000": false,
		"registry.example:443": false, "localhost.example.com": false,
	}
	for host, want := range tests {
		if got, err := isLoopbackHost(host); err != nil || got != want {
			t.Errorf("isLoopbackHost(%q) = %v, %v; want %v", host, got, err, want)
		}
	}
}

// A follower that is behind when the log is rotated reads the rest of the
// old content from the .1 file, then the new file: nothing lost, nothing
// twice.
func TestCopyNewAcrossRotation(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.log")
	appendTo := func(s string) {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(s); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	appendTo("1\n2\n")
	off, err := copyNew(p, 0, &out)
	if err != nil {
		t.Fatal(err)
	}
	appendTo("3\n")
	if err := rotate(p); err != nil {
		t.Fatal(err)
	}
	appendTo("4\n")
	if off, err = copyNew(p, off, &out); err != nil {
		t.Fatal(err)
	}
	appendTo("5\n")
	if _, err = copyNew(p, off, &out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "1\n2\n3\n4\n5\n" {
		t.Fatalf("followed %q", got)
	}
	old, err := os.ReadFile(p + ".1")
	if err != nil || string(old) != "1\n2\n3\n" {
		t.Fatalf("rotated file = %q, %v", old, err)
	}
}
