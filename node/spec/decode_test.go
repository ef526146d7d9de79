package spec

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

const fullJSON = `{
  "name": "web",
  "image": "registry.example.com:5000/team/web:1.2",
  "replicas": 3,
  "command": ["/bin/web", "--port=80"],
  "env": {"MODE": "prod", "EMPTY": ""},
  "ports": [{"published": 8080, "target": 80, "protocol": "http"}, {"published": 9090, "target": 90}],
  "health": {"http": "/healthz", "interval": "10s", "timeout": "1s"},
  "resources": {"cpus": 0.5, "memory": "256Mi"},
  "constraints": {"zone": "a", "example.com/disk": "ssd"},
  "network": "bridge"
}`

func TestDecodeFull(t *testing.T) {
	got, err := Decode([]byte(fullJSON))
	if err != nil {
		t.Fatal(err)
	}
	want := validSpec()
	want.Normalize()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode =\n%+v\nwant\n%+v", got, want)
	}
}

func TestDecodeNormalizes(t *testing.T) {
	got, err := Decode([]byte(`{"name":"a","image":"a","ports":[{"published":1,"target":2}],"health":{"tcp":2},"env":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := Spec{
		Name: "a", Image: "a", Network: "bridge",
		Ports:  []Port{{1, 2, "tcp"}},
		Health: &Health{TCP: 2, Interval: Duration(5 * time.Second), Timeout: Duration(2 * time.Second)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Decode = %+v, want %+v", got, want)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"empty", ``, "spec: empty document: want a JSON object"},
		{"whitespace", " \n", "spec: empty document"},
		{"not object", `[]`, "spec: want a JSON object, got an array"},
		{"null", `null`, "spec: want a JSON object, got null"},
		{"unknown field", `{"name":"a","image":"a","replica":1}`, `spec: unknown field "replica"`},
		{"case folded field", `{"Name":"a","image":"a"}`, `spec: unknown field "Name"`},
		{"nested unknown", `{"name":"a","image":"a","health":{"htp":"/"}}`, `spec: health: unknown field "htp"`},
		{"port unknown", `{"name":"a","image":"a","ports":[{"publish":1}]}`, `spec: ports[0]: unknown field "publish"`},
		{"duplicate field", `{"name":"a","image":"a","name":"b"}`, `spec: duplicate field "name"`},
		{"duplicate env", `{"name":"a","image":"a","env":{"A":"1","A":"2"}}`, `spec: env: duplicate key "A"`},
		{"trailing object", `{"name":"a","image":"a"}{}`, "spec: unexpected data after the JSON object"},
		{"trailing garbage", `{"name":"a","image":"a"} x`, "spec: "},
		{"truncated", `{"name":"a"`, "spec: invalid JSON"},
		{"syntax", `{"name" "a"}`, "spec: invalid JSON"},
		{"replicas string", `{"name":"a","image":"a","replicas":"3"}`, "spec: replicas: want an integer, got a string"},
		{"replicas float", `{"name":"a","image":"a","replicas":1.5}`, "spec: replicas: want an integer, got 1.5"},
		{"replicas huge", `{"name":"a","image":"a","replicas":1e400}`, "spec: replicas: want an integer"},
		{"cpus string", `{"name":"a","image":"a","resources":{"cpus":"1"}}`, "spec: resources.cpus: want a number, got a string"},
		{"cpus range", `{"name":"a","image":"a","resources":{"cpus":1e400}}`, "spec: resources.cpus: number 1e400 is out of range"},
		{"env not object", `{"name":"a","image":"a","env":["A=1"]}`, "spec: env: want an object, got an array"},
		{"env value number", `{"name":"a","image":"a","env":{"A":1}}`, `spec: env["A"]: want a string, got the number 1`},
		{"command not array", `{"name":"a","image":"a","command":"sh"}`, "spec: command: want an array, got a string"},
		{"command element", `{"name":"a","image":"a","command":[1]}`, "spec: command[0]: want a string"},
		{"interval number", `{"name":"a","image":"a","health":{"tcp":1,"interval":5}}`, "spec: health.interval: duration must be a string"},
		{"interval negative", `{"name":"a","image":"a","health":{"tcp":1,"interval":"-5s"}}`, "spec: health.interval: duration must not be negative"},
		{"interval garbage", `{"name":"a","image":"a","health":{"tcp":1,"interval":"soon"}}`, `spec: health.interval: invalid duration "soon"`},
		{"memory bad", `{"name":"a","image":"a","resources":{"memory":"lots"}}`, `spec: resources.memory: spec: invalid size "lots"`},
		{"memory negative", `{"name":"a","image":"a","resources":{"memory":-1}}`, "spec: resources.memory: size must be a non-negative"},
		{"validation", `{"name":"a","image":"a","replicas":1001}`, "spec: replicas: must be between 0 and 1000, got 1001"},
		{"too large", `{"name":"` + strings.Repeat("a", MaxSpecSize) + `"}`, "spec: document too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode([]byte(tt.in))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("Decode(%.60q) = %v, want an error starting %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestDecodeValidationErrorAs(t *testing.T) {
	_, err := Decode([]byte(`{"name":"A","image":""}`))
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("Decode error = %v, want a *ValidationError with 2 problems", err)
	}
}

func TestDecodeNulls(t *testing.T) {
	s, err := Decode([]byte(`{"name":"a","image":"a","replicas":null,"health":null,"env":null,"resources":null,"ports":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Health != nil || s.Env != nil || s.Replicas != 0 {
		t.Fatalf("nulls set fields: %+v", s)
	}
}

func TestMarshalShape(t *testing.T) {
	s := validSpec()
	s.Normalize()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	h := m["health"].(map[string]any)
	r := m["resources"].(map[string]any)
	if h["interval"] != "10s" || h["timeout"] != "1s" || r["memory"] != float64(256<<20) {
		t.Fatalf("marshalled %s: want durations as strings and memory as a number", b)
	}
	min, _ := json.Marshal(Spec{Name: "a", Image: "a"})
	if string(min) != `{"name":"a","image":"a","replicas":0}` {
		t.Fatalf("minimal spec marshals as %s", min)
	}
}
