package spec

import (
	"encoding/json"
	"reflect"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		fullJSON,
		`{"name":"a","image":"a"}`,
		`{"name":"a","image":"a","replicas":0,"command":[],"env":{},"ports":[],"constraints":{}}`,
		`{"name":"a","image":"a","ports":[{"published":80,"target":80}],"health":{"http":"/"}}`,
		`{"name":"a","image":"a","health":{"exec":["pg_isready","-U","x"],"interval":"1s"}}`,
		`{"name":"a","image":"a","health":{"tcp":5432,"interval":"1m","timeout":"59.5s"}}`,
		`{"name":"a","image":"a","resources":{"cpus":-0,"memory":"1.5Gi"}}`,
		`{"name":"a","image":"a","resources":{"cpus":1e-320,"memory":4194304}}`,
		`{"name":"a","image":"a","network":"host","ports":[{"published":80,"target":8080,"protocol":"http"}]}`,
		`{"name":"a","image":"a","env":{"\u00e9":"\ud800"},"command":["<&>"]}`,
		`{"name":"a","image":"a","replica":1}`,
		`{"name":"a","image":"a","replicas":1001}`,
		`{"name":"a","image":"a","health":{}}`,
		`{"name":"a","image":"a","name":"b"}`,
		`{"name":"a","image":"a"} {}`,
		`{"name":"a","image":"a","health":{"tcp":1,"interval":5}}`,
		`[{"name":"a"}]`,
		`null`,
		``,
		`{"name":"a","image":"a","ports":[{"published":80,"target":80},{"published":80,"target":81}]}`,
		"{\"name\":\"a\",\"image\":\"a\xff\"}",
		`{"name":"a","image":"a","ports":[{"published":80,"target":80,"protocol":"http"}],"balance":{"policy":"maglev","hash_on":"header:X-U","proxy_protocol":false}}`,
		`{"name":"a","image":"a","balance":{"policy":1}}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Decode(data)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Decode accepted an invalid spec: %v", err)
		}
		out, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode(Marshal(s)) = %v\njson: %s", err, out)
		}
		if !reflect.DeepEqual(s, again) {
			t.Fatalf("round trip changed the spec:\n%+v\n%+v\njson: %s", s, again, out)
		}
		norm := again
		norm.Normalize()
		if !reflect.DeepEqual(norm, again) {
			t.Fatalf("a decoded spec is not normalized: %+v", again)
		}
	})
}

func FuzzParseBytes(f *testing.F) {
	for _, s := range []string{"0", "512Mi", "1g", "64MB", "1.5k", "9223372036854775807", "8388608Ti", "x", "1..2k", " 1 kib "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseBytes(s)
		if err != nil {
			return
		}
		if b < 0 {
			t.Fatalf("ParseBytes(%q) = %d, negative", s, b)
		}
		if again, err := ParseBytes(b.String()); err != nil || again != b {
			t.Fatalf("ParseBytes(%q) = %d, but its String %q parses as %d, %v", s, b, b.String(), again, err)
		}
	})
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []string{"80", "8080:80", "8080:80/http", "80/tcp", "0:1", "1:2:3", "a:b/c", "+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePublish(s)
		if err != nil {
			return
		}
		sp := Spec{Name: "a", Image: "a", Ports: []Port{p}}
		if err := sp.Validate(); err != nil {
			t.Fatalf("ParsePublish(%q) = %+v, which does not validate: %v", s, p, err)
		}
	})
}
