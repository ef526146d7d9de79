package spec

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

// validSpec returns a spec that uses every field and passes Validate.
func validSpec() Spec {
	return Spec{
		Name:        "web",
		Image:       "registry.example.com:5000/team/web:1.2",
		Replicas:    3,
		Command:     []string{"/bin/web", "--port=80"},
		Env:         map[string]string{"MODE": "prod", "EMPTY": ""},
		Ports:       []Port{{Published: 8080, Target: 80, Protocol: "http"}, {Published: 9090, Target: 90}},
		Health:      &Health{HTTP: "/healthz", Interval: Duration(10 * time.Second), Timeout: Duration(time.Second)},
		Resources:   Resources{CPUs: 0.5, Memory: 256 * MiB},
		Constraints: map[string]string{"zone": "a", "example.com/disk": "ssd"},
		Network:     "bridge",
	}
}

// withBalance sets a valid Balance that uses every field, then edits it.
func withBalance(edit func(*Spec)) func(*Spec) {
	return func(s *Spec) {
		s.Balance = &Balance{Policy: "maglev", HashOn: "header:X-User", ProxyProtocol: true}
		edit(s)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*Spec)
		field string // "" = valid; else the Problem.Field expected
		want  string // substring of the reason
	}{
		{"valid", func(*Spec) {}, "", ""},
		{"minimal", func(s *Spec) { *s = Spec{Name: "a", Image: "a"} }, "", ""},
		{"default balance", func(s *Spec) { s.Balance = &Balance{} }, "", ""},
		{"every balance field", withBalance(func(*Spec) {}), "", ""},
		{"round robin", func(s *Spec) { s.Balance = &Balance{Policy: "round_robin"} }, "", ""},
		{"maglev on client ip", func(s *Spec) { s.Balance = &Balance{Policy: "maglev", HashOn: "client_ip"} }, "", ""},
		{"bad policy", withBalance(func(s *Spec) { s.Balance.Policy, s.Balance.HashOn = "random", "" }), "balance.policy", `got "random"`},
		{"hash_on without maglev", withBalance(func(s *Spec) { s.Balance.Policy = "round_robin" }), "balance.hash_on", "only applies to policy"},
		{"bad hash_on", withBalance(func(s *Spec) { s.Balance.HashOn = "cookie:x" }), "balance.hash_on", `got "cookie:x"`},
		{"bad header name", withBalance(func(s *Spec) { s.Balance.HashOn = "header:X User" }), "balance.hash_on", "bad header name"},
		{"header hash without http port", withBalance(func(s *Spec) { s.Ports = []Port{{Published: 1, Target: 1}} }), "balance.hash_on", "needs an http port"},
		{"proxy protocol without tcp port", withBalance(func(s *Spec) { s.Ports = s.Ports[:1] }), "balance.proxy_protocol", "applies to tcp ports"},
		{"zero replicas", func(s *Spec) { s.Replicas = 0 }, "", ""},
		{"max replicas", func(s *Spec) { s.Replicas = 1000 }, "", ""},
		{"too many replicas", func(s *Spec) { s.Replicas = 1001 }, "replicas", "must be between 0 and 1000, got 1001"},
		{"negative replicas", func(s *Spec) { s.Replicas = -1 }, "replicas", "got -1"},

		{"name missing", func(s *Spec) { s.Name = "" }, "name", "required"},
		{"name upper", func(s *Spec) { s.Name = "Web" }, "name", "lower-case"},
		{"name underscore", func(s *Spec) { s.Name = "my_web" }, "name", "lower-case"},
		{"name leading dash", func(s *Spec) { s.Name = "-web" }, "name", "start and end"},
		{"name trailing dash", func(s *Spec) { s.Name = "web-" }, "name", "start and end"},
		{"name 63", func(s *Spec) { s.Name = strings.Repeat("a", 63) }, "", ""},
		{"name 64", func(s *Spec) { s.Name = strings.Repeat("a", 64) }, "name", "at most 63"},
		{"name digits", func(s *Spec) { s.Name = "0-9" }, "", ""},

		{"image missing", func(s *Spec) { s.Image = "" }, "image", "required"},
		{"image simple", func(s *Spec) { s.Image = "nginx" }, "", ""},
		{"image tag", func(s *Spec) { s.Image = "demo:1" }, "", ""},
		{"image path", func(s *Spec) { s.Image = "library/nginx_x__y-z.w:Tag_1.0-rc" }, "", ""},
		{"image localhost port", func(s *Spec) { s.Image = "localhost:5000/foo" }, "", ""},
		{"image digest", func(s *Spec) { s.Image = "nginx@sha256:" + strings.Repeat("ab", 32) }, "", ""},
		{"image tag and digest", func(s *Spec) { s.Image = "nginx:1@sha256:" + strings.Repeat("0", 64) }, "", ""},
		{"image space", func(s *Spec) { s.Image = "ngi nx" }, "image", "whitespace"},
		{"image control", func(s *Spec) { s.Image = "nginx\x01" }, "image", "control"},
		{"image too long", func(s *Spec) { s.Image = strings.Repeat("a", 256) }, "image", "at most 255"},
		{"image upper name", func(s *Spec) { s.Image = "Nginx" }, "image", "not a valid image reference"},
		{"image empty tag", func(s *Spec) { s.Image = "nginx:" }, "image", "tag"},
		{"image bad tag", func(s *Spec) { s.Image = "nginx:-x" }, "image", "tag"},
		{"image short digest", func(s *Spec) { s.Image = "nginx@sha256:abc" }, "image", "digest"},
		{"image md5 digest", func(s *Spec) { s.Image = "nginx@md5:" + strings.Repeat("0", 64) }, "image", "digest"},
		{"image double slash", func(s *Spec) { s.Image = "a//b" }, "image", "not a valid"},
		{"image trailing sep", func(s *Spec) { s.Image = "a-" }, "image", "not a valid"},
		{"image unicode", func(s *Spec) { s.Image = "ngïnx" }, "image", "not a valid"},

		{"command empty program", func(s *Spec) { s.Command = []string{"", "x"} }, "command[0]", "program name"},
		{"command NUL", func(s *Spec) { s.Command = []string{"a", "b\x00"} }, "command[1]", "NUL"},

		{"env empty key", func(s *Spec) { s.Env = map[string]string{"": "x"} }, "env", "must not be empty"},
		{"env key with =", func(s *Spec) { s.Env = map[string]string{"A=B": "x"} }, "env", "'='"},
		{"env key NUL", func(s *Spec) { s.Env = map[string]string{"A\x00": "x"} }, "env", "NUL"},
		{"env value NUL", func(s *Spec) { s.Env = map[string]string{"A": "x\x00"} }, "env[A]", "NUL"},
		{"env value with =", func(s *Spec) { s.Env = map[string]string{"A": "b=c"} }, "", ""},

		{"port published 0", func(s *Spec) { s.Ports[0].Published = 0 }, "ports[0].published", "between 1 and 65535, got 0"},
		{"port published big", func(s *Spec) { s.Ports[1].Published = 65536 }, "ports[1].published", "got 65536"},
		{"port target 0", func(s *Spec) { s.Ports[0].Target = 0 }, "ports[0].target", "got 0"},
		{"port target big", func(s *Spec) { s.Ports[0].Target = 70000 }, "ports[0].target", "got 70000"},
		{"port protocol", func(s *Spec) { s.Ports[0].Protocol = "udp" }, "ports[0].protocol", `got "udp"`},
		{"port protocol case", func(s *Spec) { s.Ports[0].Protocol = "TCP" }, "ports[0].protocol", `got "TCP"`},
		{"port duplicate published", func(s *Spec) { s.Ports[1].Published = 8080 }, "ports[1].published", "already published by ports[0]"},
		{"port same target twice", func(s *Spec) { s.Ports[1].Target = 80 }, "", ""},

		{"network host one port", func(s *Spec) { s.Network = "host"; s.Ports = s.Ports[:1] }, "", ""},
		{"network host two ports", func(s *Spec) { s.Network = "host" }, "ports", "at most one port"},
		{"network unset", func(s *Spec) { s.Network = "" }, "", ""},
		{"network unknown", func(s *Spec) { s.Network = "overlay" }, "network", `got "overlay"`},

		{"health none", func(s *Spec) { s.Health = &Health{} }, "health", "got none"},
		{"health two", func(s *Spec) { s.Health.TCP = 80 }, "health", "got http and tcp"},
		{"health tcp", func(s *Spec) { s.Health = &Health{TCP: 80} }, "", ""},
		{"health tcp range", func(s *Spec) { s.Health = &Health{TCP: 65536} }, "health.tcp", "got 65536"},
		{"health tcp negative", func(s *Spec) { s.Health = &Health{TCP: -1} }, "health.tcp", "got -1"},
		{"health exec", func(s *Spec) { s.Health = &Health{Exec: []string{"true"}} }, "", ""},
		{"health exec empty program", func(s *Spec) { s.Health = &Health{Exec: []string{""}} }, "health.exec[0]", "program name"},
		{"health http no slash", func(s *Spec) { s.Health.HTTP = "healthz" }, "health.http", "start with '/'"},
		{"health http space", func(s *Spec) { s.Health.HTTP = "/a b" }, "health.http", "whitespace"},
		{"health http no port", func(s *Spec) { s.Ports = nil }, "health.http", "needs a port"},
		{"health interval 1s", func(s *Spec) { s.Health.Interval = Duration(time.Second) }, "", ""},
		{"health interval short", func(s *Spec) { s.Health.Interval = Duration(500 * time.Millisecond) }, "health.interval", "at least 1s, got 500ms"},
		{"health timeout equal interval", func(s *Spec) { s.Health.Timeout = s.Health.Interval }, "", ""},
		{"health timeout above interval", func(s *Spec) { s.Health.Timeout = Duration(11 * time.Second) }, "health.timeout", "must not exceed the interval (10s), got 11s"},
		{"health timeout negative", func(s *Spec) { s.Health.Timeout = Duration(-time.Second) }, "health.timeout", "positive"},
		{"health timeout above default interval", func(s *Spec) { s.Health.Interval = 0; s.Health.Timeout = Duration(6 * time.Second) }, "health.timeout", "(5s)"},
		{"health defaults", func(s *Spec) { s.Health.Interval, s.Health.Timeout = 0, 0 }, "", ""},

		{"cpus zero", func(s *Spec) { s.Resources.CPUs = 0 }, "", ""},
		{"cpus max", func(s *Spec) { s.Resources.CPUs = 1024 }, "", ""},
		{"cpus too many", func(s *Spec) { s.Resources.CPUs = 1024.5 }, "resources.cpus", "got 1024.5"},
		{"cpus negative", func(s *Spec) { s.Resources.CPUs = -1 }, "resources.cpus", "got -1"},
		{"cpus NaN", func(s *Spec) { s.Resources.CPUs = math.NaN() }, "resources.cpus", "NaN"},
		{"cpus Inf", func(s *Spec) { s.Resources.CPUs = math.Inf(1) }, "resources.cpus", "Inf"},
		{"memory zero", func(s *Spec) { s.Resources.Memory = 0 }, "", ""},
		{"memory 4Mi", func(s *Spec) { s.Resources.Memory = 4 * MiB }, "", ""},
		{"memory small", func(s *Spec) { s.Resources.Memory = 4*MiB - 1 }, "resources.memory", "at least 4Mi"},
		{"memory negative", func(s *Spec) { s.Resources.Memory = -1 }, "resources.memory", "got -1 bytes"},

		{"constraint prefixed key", func(s *Spec) { s.Constraints = map[string]string{"a.b-c/x_y.z": "V-1"} }, "", ""},
		{"constraint empty value", func(s *Spec) { s.Constraints = map[string]string{"zone": ""} }, "", ""},
		{"constraint empty key", func(s *Spec) { s.Constraints = map[string]string{"": "a"} }, "constraints", "must not be empty"},
		{"constraint key space", func(s *Spec) { s.Constraints = map[string]string{"a b": "a"} }, "constraints", `key "a b"`},
		{"constraint key long", func(s *Spec) { s.Constraints = map[string]string{strings.Repeat("k", 64): "a"} }, "constraints", "63"},
		{"constraint key upper prefix", func(s *Spec) { s.Constraints = map[string]string{"Example.com/a": "a"} }, "constraints", "prefix"},
		{"constraint key empty prefix", func(s *Spec) { s.Constraints = map[string]string{"/a": "a"} }, "constraints", "prefix"},
		{"constraint value bad", func(s *Spec) { s.Constraints = map[string]string{"zone": "-a"} }, "constraints[zone]", `value "-a"`},
		{"constraint value long", func(s *Spec) { s.Constraints = map[string]string{"zone": strings.Repeat("v", 64)} }, "constraints[zone]", "63"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := validSpec()
			tt.edit(&s)
			err := s.Validate()
			if tt.field == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v, want a *ValidationError", err)
			}
			if len(ve.Problems) != 1 {
				t.Fatalf("got %d problems (%v), want exactly 1", len(ve.Problems), err)
			}
			p := ve.Problems[0]
			if p.Field != tt.field || !strings.Contains(p.Reason, tt.want) {
				t.Fatalf("problem = %q, want field %q and reason containing %q", p, tt.field, tt.want)
			}
			// Normalize must not change the verdict.
			s.Normalize()
			if s.Validate() == nil {
				t.Fatalf("Validate() after Normalize = nil, want %v", err)
			}
		})
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	s := Spec{Name: "Bad_Name", Replicas: 1001, Network: "x"}
	err := s.Validate()
	want := `name: must contain only lower-case letters, digits and '-', got "Bad_Name"; image: required; ` +
		`replicas: must be between 0 and 1000, got 1001; network: must be "bridge" or "host", got "x"`
	if err == nil || err.Error() != want {
		t.Fatalf("Validate() = %v\nwant %s", err, want)
	}
}

func TestValidName(t *testing.T) {
	for name, ok := range map[string]bool{"web": true, "a": true, "a-1": true, "": false, "A": false, "a.b": false, "a-": false} {
		if err := ValidName(name); (err == nil) != ok {
			t.Errorf("ValidName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
	if err := ValidName("A"); err == nil || !strings.HasPrefix(err.Error(), `spec: invalid name "A": `) {
		t.Errorf("ValidName error = %v, want a spec: prefix and the name", err)
	}
}

func TestValidLabel(t *testing.T) {
	tests := []struct {
		key, value string
		ok         bool
	}{
		{"zone", "a", true},
		{"zone", "", true},
		{"Zone_1.x", "A.b-c_D", true},
		{"topology.example.com/zone", "eu-1", true},
		{strings.Repeat("k", 63), strings.Repeat("v", 63), true},
		{strings.Repeat("k", 64), "v", false},
		{"zone", strings.Repeat("v", 64), false},
		{"", "a", false},
		{"-zone", "a", false},
		{"zone.", "a", false},
		{"a/b/c", "a", false},
		{"example.com/", "a", false},
		{"zone", "a b", false},
		{"zone", "a=", false},
	}
	for _, tt := range tests {
		if err := ValidLabel(tt.key, tt.value); (err == nil) != tt.ok {
			t.Errorf("ValidLabel(%q, %q) = %v, want ok=%v", tt.key, tt.value, err, tt.ok)
		}
	}
}

func TestNormalize(t *testing.T) {
	s := Spec{
		Name: "web", Image: "web",
		Command:     []string{},
		Env:         map[string]string{},
		Constraints: map[string]string{},
		Ports:       []Port{{Published: 2, Target: 2}, {Published: 1, Target: 1, Protocol: "http"}},
		Health:      &Health{TCP: 2, Exec: []string{}},
	}
	s.Normalize()
	if s.Command != nil || s.Env != nil || s.Constraints != nil || s.Health.Exec != nil {
		t.Errorf("empty collections not nil: %+v", s)
	}
	if s.Network != "bridge" {
		t.Errorf("Network = %q, want bridge", s.Network)
	}
	if s.Ports[0] != (Port{2, 2, "tcp"}) || s.Ports[1] != (Port{1, 1, "http"}) {
		t.Errorf("Ports = %+v, want original order with tcp default", s.Ports)
	}
	if s.Health.Interval != Duration(5*time.Second) || s.Health.Timeout != Duration(2*time.Second) {
		t.Errorf("health = %s/%s, want 5s/2s", s.Health.Interval, s.Health.Timeout)
	}

	short := Spec{Health: &Health{TCP: 1, Interval: Duration(time.Second)}}
	short.Normalize()
	if short.Health.Timeout != Duration(time.Second) {
		t.Errorf("timeout with a 1s interval = %s, want 1s", short.Health.Timeout)
	}
	if short.Ports != nil {
		t.Errorf("Ports = %v, want nil", short.Ports)
	}

	again := s
	again.Normalize()
	if again.Network != s.Network || again.Health.Timeout != s.Health.Timeout {
		t.Error("Normalize is not idempotent")
	}
}
