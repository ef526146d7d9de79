package main

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/node/spec"
)

func TestRunBuildsSpec(t *testing.T) {
	f := newFakeAPI(t)
	r := cli(t, f, nil, "run", "web",
		"--image", "registry.local:5000/web:1.2",
		"--replicas", "3",
		"--publish", "8080:80/http", "-p", "9090:90", "-p", "53",
		"--env", "MODE=prod", "-e", "DSN=a=b", "-e", "EMPTY=",
		"--constraint", "zone=a", "--constraint", "example.com/disk=ssd",
		"--network", "bridge",
		"--health-exec", `sh -c "curl -f localhost/healthz"`,
		"--health-interval", "10s", "--health-timeout", "3s",
		"--cpus", "1.5", "--memory", "512Mi",
		"--", "/bin/web", "--port", "80",
	).ok(t)

	puts := f.reqsOf("PUT")
	if len(puts) != 1 || puts[0].Path != "/v1/services/web" {
		t.Fatalf("PUTs = %+v, want one to /v1/services/web", puts)
	}
	if h := puts[0].Header.Get("If-Match"); h != "" {
		t.Errorf("run sent If-Match %q, want none", h)
	}
	got, err := spec.Decode(puts[0].Body) // strict: the body must be a clean spec
	if err != nil {
		t.Fatalf("sent body %s: %v", puts[0].Body, err)
	}
	want := spec.Spec{
		Name:     "web",
		Image:    "registry.local:5000/web:1.2",
		Replicas: 3,
		Command:  []string{"/bin/web", "--port", "80"},
		Env:      map[string]string{"MODE": "prod", "DSN": "a=b", "EMPTY": ""},
		Ports:    []spec.Port{{Published: 8080, Target: 80, Protocol: "http"}, {Published: 9090, Target: 90, Protocol: "tcp"}, {Published: 53, Target: 53, Protocol: "tcp"}},
		Health: &spec.Health{
			Exec:     []string{"sh", "-c", "curl -f localhost/healthz"},
			Interval: spec.Duration(10 * time.Second),
			Timeout:  spec.Duration(3 * time.Second),
		},
		Resources:   spec.Resources{CPUs: 1.5, Memory: 512 * spec.MiB},
		Constraints: map[string]string{"zone": "a", "example.com/disk": "ssd"},
		Network:     "bridge",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("sent spec\n%+v\nwant\n%+v", got, want)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "NAME") || !strings.HasPrefix(lines[1], "web ") || !strings.Contains(lines[1], "8080->80/http,9090->90/tcp,53->53/tcp") {
		t.Fatalf("table output:\n%s", r.stdout)
	}
}

func TestRunHealthFlags(t *testing.T) {
	tests := []struct {
		args []string
		want spec.Health
	}{
		{[]string{"--health-http", "/healthz"}, spec.Health{HTTP: "/healthz", Interval: spec.Duration(5 * time.Second), Timeout: spec.Duration(2 * time.Second)}},
		{[]string{"--health-tcp", "80", "--health-interval", "1s"}, spec.Health{TCP: 80, Interval: spec.Duration(time.Second), Timeout: spec.Duration(time.Second)}},
		{[]string{"--health-exec", "pg_isready -U 'my user'"}, spec.Health{Exec: []string{"pg_isready", "-U", "my user"}, Interval: spec.Duration(5 * time.Second), Timeout: spec.Duration(2 * time.Second)}},
	}
	for _, tt := range tests {
		f := newFakeAPI(t)
		args := append([]string{"run", "web", "--image", "demo:1", "-p", "80", "-o", "json"}, tt.args...)
		r := cli(t, f, nil, args...).ok(t)
		var svc api.Service
		if err := json.Unmarshal([]byte(r.stdout), &svc); err != nil {
			t.Fatalf("%v: -o json output %q: %v", tt.args, r.stdout, err)
		}
		if svc.Health == nil || !reflect.DeepEqual(*svc.Health, tt.want) {
			t.Errorf("%v: health = %+v, want %+v", tt.args, svc.Health, tt.want)
		}
		if svc.Version == "" || svc.Name != "web" || svc.Replicas != 1 {
			t.Errorf("%v: printed service %+v lacks name, default replicas or version", tt.args, svc)
		}
	}
}

func TestRunDefaults(t *testing.T) {
	f := newFakeAPI(t)
	cli(t, f, nil, "run", "web", "--image", "demo:1").ok(t)
	got, ok := f.service("web")
	want := spec.Spec{Name: "web", Image: "demo:1", Replicas: 1, Network: "bridge"}
	if !ok || !reflect.DeepEqual(got.Spec, want) {
		t.Fatalf("stored %+v, want %+v", got.Spec, want)
	}
}

func TestRunReplacesExisting(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 5, Env: map[string]string{"OLD": "1"}})
	cli(t, f, nil, "run", "web", "--image", "demo:2").ok(t)
	got, _ := f.service("web")
	if got.Image != "demo:2" || got.Replicas != 1 || got.Env != nil {
		t.Fatalf("stored %+v, want the old spec replaced", got.Spec)
	}
}

func TestBadInputSendsNothing(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no image", []string{"run", "web"}, `required flag(s) "image" not set`},
		{"bad publish", []string{"run", "web", "--image", "a", "--publish", "80:http"}, `--publish: spec: invalid publish "80:http"`},
		{"bad publish proto", []string{"run", "web", "--image", "a", "-p", "80/udp"}, `protocol must be "tcp" or "http", got "udp"`},
		{"negative replicas", []string{"run", "web", "--image", "a", "--replicas", "-1"}, "replicas: must be between 0 and 1000, got -1"},
		{"replicas not a number", []string{"run", "web", "--image", "a", "--replicas", "x"}, `invalid argument "x" for "--replicas"`},
		{"unknown network", []string{"run", "web", "--image", "a", "--network", "overlay"}, `network: must be "bridge" or "host", got "overlay"`},
		{"bad memory", []string{"run", "web", "--image", "a", "--memory", "lots"}, `--memory: spec: invalid size "lots"`},
		{"small memory", []string{"run", "web", "--image", "a", "--memory", "1k"}, "resources.memory: must be 0 (unlimited) or at least 4Mi"},
		{"bad env", []string{"run", "web", "--image", "a", "--env", "NOVALUE"}, `--env: spec: invalid "NOVALUE": want KEY=VALUE`},
		{"bad constraint", []string{"run", "web", "--image", "a", "--constraint", "zone"}, "--constraint"},
		{"bad constraint key", []string{"run", "web", "--image", "a", "--constraint", "a b=c"}, `constraints: key "a b"`},
		{"contradicting constraints", []string{"run", "web", "--image", "a", "--constraint", "z=a", "--constraint", "z=b"}, "contradicts"},
		{"bad name", []string{"run", "Web", "--image", "a"}, `invalid service "Web": name: must contain only lower-case`},
		{"bad image", []string{"run", "web", "--image", "Bad Image"}, "image: must not contain whitespace"},
		{"two probes", []string{"run", "web", "--image", "a", "--health-http", "/", "--health-tcp", "80"}, "none of the others can be"},
		{"interval without probe", []string{"run", "web", "--image", "a", "--health-interval", "3s"}, "need a probe"},
		{"short interval", []string{"run", "web", "--image", "a", "--health-tcp", "80", "--health-interval", "100ms"}, "health.interval: must be at least 1s"},
		{"timeout above interval", []string{"run", "web", "--image", "a", "--health-tcp", "80", "--health-timeout", "9s"}, "health.timeout: must not exceed the interval (5s)"},
		{"bad health tcp", []string{"run", "web", "--image", "a", "--health-tcp", "0"}, "--health-tcp: must be a port"},
		{"bad health exec", []string{"run", "web", "--image", "a", "--health-exec", `sh -c "x`}, "unterminated"},
		{"empty health exec", []string{"run", "web", "--image", "a", "--health-exec", "  "}, "--health-exec: must not be empty"},
		{"health http needs port", []string{"run", "web", "--image", "a", "--health-http", "/"}, "health.http: needs a port"},
		{"host two ports", []string{"run", "web", "--image", "a", "--network", "host", "-p", "80", "-p", "81"}, "host network allows at most one port"},
		{"too many cpus", []string{"run", "web", "--image", "a", "--cpus", "2000"}, "resources.cpus"},
		{"command without dash", []string{"run", "web", "--image", "a", "sleep"}, "put the container's command after --"},
		{"empty command", []string{"run", "web", "--image", "a", "--"}, "no command after --"},
		{"no name", []string{"run", "--image", "a", "--", "x"}, "exactly one NAME before --"},
		{"unknown flag", []string{"run", "web", "--image", "a", "--replica", "2"}, "unknown flag: --replica (see 'shoal run --help')"},
		{"bad output", []string{"-o", "yaml", "run", "web", "--image", "a"}, `invalid --output "yaml": want table or json`},
		{"scale not a number", []string{"scale", "web", "many"}, `invalid replica count "many"`},
		{"scale too many", []string{"scale", "web", "1001"}, `invalid replica count "1001"`},
		{"scale args", []string{"scale", "web"}, "scale wants a service NAME and a REPLICAS count, got 1 argument(s) (usage: shoal scale NAME REPLICAS [flags])"},
		{"inspect bad name", []string{"inspect", "../nodes"}, `invalid name "../nodes"`},
		{"rm nothing", []string{"rm"}, "rm wants at least one service NAME"},
		{"unknown command", []string{"lss"}, `unknown command "lss" for "shoal" Did you mean this? ls`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakeAPI(t)
			cli(t, f, nil, tt.args...).failed(t, tt.want)
			if reqs := f.reqs(); len(reqs) != 0 {
				t.Fatalf("sent %d request(s), want none: %+v", len(reqs), reqs[0])
			}
		})
	}
}

func TestServerRejection(t *testing.T) {
	f := newFakeAPI(t)
	f.set(func(f *fakeAPI) { f.reject = "spec: image: not allowed here" })
	cli(t, f, nil, "run", "web", "--image", "demo:1").failed(t, "run web: spec: image: not allowed here (400 Bad Request)")
	if _, ok := f.service("web"); ok {
		t.Fatal("rejected service stored")
	}
}

func TestScaleSendsIfMatch(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 1, Env: map[string]string{"KEEP": "me"}})
	r := cli(t, f, nil, "scale", "web", "4", "-o", "json").ok(t)
	var svc api.Service
	if err := json.Unmarshal([]byte(r.stdout), &svc); err != nil || svc.Replicas != 4 {
		t.Fatalf("output %q: %+v, %v", r.stdout, svc, err)
	}
	puts := f.reqsOf("PUT")
	if len(puts) != 1 || puts[0].Header.Get("If-Match") != `"v1"` {
		t.Fatalf("PUTs %+v, want one with If-Match \"v1\"", puts)
	}
	got, _ := f.service("web")
	if got.Replicas != 4 || got.Env["KEEP"] != "me" {
		t.Fatalf("stored %+v, want replicas 4 and the rest unchanged", got.Spec)
	}
}

func TestScaleRetriesOnConflict(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 1})
	f.set(func(f *fakeAPI) { f.conflicts = 3 })
	cli(t, f, nil, "scale", "web", "7").ok(t)
	got, _ := f.service("web")
	if got.Replicas != 7 {
		t.Fatalf("replicas = %d, want 7", got.Replicas)
	}
	puts, gets := f.reqsOf("PUT"), f.reqsOf("GET")
	if len(puts) != 4 || len(gets) != 4 {
		t.Fatalf("%d PUTs and %d GETs, want 4 of each (3 conflicts, then success)", len(puts), len(gets))
	}
	// Every PUT carries the version that was current when it was read:
	// v1, then the versions the simulated writer created (v2, v3, v4).
	for i, p := range puts {
		want := `"v` + string(rune('1'+i)) + `"`
		if p.Header.Get("If-Match") != want {
			t.Errorf("PUT %d If-Match = %q, want %s", i, p.Header.Get("If-Match"), want)
		}
	}
}

func TestScaleGivesUp(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 1})
	f.set(func(f *fakeAPI) { f.conflicts = 100 })
	cli(t, f, nil, "scale", "web", "2").failed(t, "still conflicting with other writers after 5 retries")
	if n := len(f.reqsOf("PUT")); n != 6 {
		t.Fatalf("%d PUTs, want 6 (1 + 5 retries)", n)
	}
	if got, _ := f.service("web"); got.Replicas != 1 {
		t.Fatalf("replicas = %d, want 1 (nothing written)", got.Replicas)
	}
}

func TestScaleMissing(t *testing.T) {
	f := newFakeAPI(t)
	cli(t, f, nil, "scale", "ghost", "2").failed(t, `service "ghost" not found`)
	if n := len(f.reqsOf("PUT")); n != 0 {
		t.Fatalf("%d PUTs for a missing service", n)
	}
}

func TestScaleNoop(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 2})
	cli(t, f, nil, "scale", "web", "2").ok(t)
	if n := len(f.reqsOf("PUT")); n != 0 {
		t.Fatalf("%d PUTs for an unchanged count, want 0", n)
	}
}

func TestRm(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "a", Image: "x"})
	f.add(spec.Spec{Name: "c", Image: "x"})
	r := cli(t, f, nil, "rm", "a", "ghost", "c")
	r.failed(t, `could not remove 1 of 3 service(s): service "ghost" not found`)
	if r.stdout != "a\nc\n" {
		t.Fatalf("stdout = %q, want the removed names", r.stdout)
	}
	if n := len(f.reqsOf("DELETE")); n != 3 {
		t.Fatalf("%d DELETEs, want 3 (every name tried)", n)
	}
	if _, ok := f.service("c"); ok {
		t.Fatal("c not removed after the missing one")
	}

	f.add(spec.Spec{Name: "b", Image: "x"})
	r = cli(t, f, nil, "rm", "b", "-o", "json").ok(t)
	var out []api.Service
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out) != 1 || out[0].Name != "b" || !out[0].Deleted {
		t.Fatalf("rm -o json = %q (%v)", r.stdout, err)
	}
}

func TestLs(t *testing.T) {
	f := newFakeAPI(t)
	f.add(spec.Spec{Name: "web", Image: "demo:1", Replicas: 3, Ports: []spec.Port{{Published: 8080, Target: 80}}})
	f.add(spec.Spec{Name: "db", Image: "postgres:16", Replicas: 1})

	r := cli(t, f, nil, "ls").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "NAME IMAGE REPLICAS PORTS VERSION UPDATED PROBLEMS" {
		t.Fatalf("ls table:\n%s", r.stdout)
	}
	if f := strings.Fields(lines[1]); f[0] != "db" || f[1] != "postgres:16" || f[2] != "1" || f[3] != "-" || f[4] != "v2" {
		t.Fatalf("db row %q", lines[1])
	}
	if f := strings.Fields(lines[2]); f[0] != "web" || f[3] != "8080->80/tcp" || !strings.Contains(lines[2], " ago ") || f[len(f)-1] != "-" {
		t.Fatalf("web row %q", lines[2])
	}

	r = cli(t, f, nil, "ls", "-o", "json").ok(t)
	var svcs []api.Service
	if err := json.Unmarshal([]byte(r.stdout), &svcs); err != nil || len(svcs) != 2 {
		t.Fatalf("ls -o json = %q (%v)", r.stdout, err)
	}
	for _, s := range svcs {
		if s.Name == "" || s.Image == "" || s.Version == "" || s.UpdatedAt.IsZero() {
			t.Errorf("ls -o json entry lacks fields: %+v", s)
		}
	}

	empty := newFakeAPI(t)
	if r := cli(t, empty, nil, "ls", "-o", "json").ok(t); strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("empty ls -o json = %q, want []", r.stdout)
	}
}

func TestInspect(t *testing.T) {
	f := newFakeAPI(t)
	want := f.add(spec.Spec{
		Name: "web", Image: "demo:1", Replicas: 2,
		Command: []string{"sh", "-c", "echo hi"},
		Env:     map[string]string{"A": "1"},
		Ports:   []spec.Port{{Published: 8080, Target: 80, Protocol: "http"}},
		Health:  &spec.Health{HTTP: "/healthz"},
	})

	r := cli(t, f, nil, "inspect", "web").ok(t) // JSON by default
	var got api.Service
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("inspect output %q: %v", r.stdout, err)
	}
	if !reflect.DeepEqual(got.Spec, want.Spec) || got.Version != want.Version || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Fatalf("inspect = %+v, want %+v", got, want)
	}

	r = cli(t, f, nil, "inspect", "web", "-o", "table").ok(t)
	for _, line := range []string{
		"Name:", "web",
		"Command:", `sh -c "echo hi"`,
		"Ports:", "8080->80/http",
		"Health:", "http /healthz every 5s, timeout 2s",
		"Env:", "A=1",
		"Network:", "bridge",
		"Version:", want.Version,
	} {
		if !strings.Contains(r.stdout, line) {
			t.Errorf("inspect -o table lacks %q:\n%s", line, r.stdout)
		}
	}
	cli(t, f, nil, "inspect", "ghost").failed(t, `service "ghost" not found`)
}

func TestNodes(t *testing.T) {
	f := newFakeAPI(t)
	nodes := []api.Node{
		{Name: "n2", Address: "10.0.0.2", GossipPort: 7946, Status: "failed", Runtime: api.RuntimeStatus{Reason: "containerd unreachable"}},
		{Name: "n1", Address: "10.0.0.1", GossipPort: 7946, Status: "alive", API: "10.0.0.1:7070", Labels: map[string]string{"zone": "a", "disk": "ssd"}, Runtime: api.RuntimeStatus{Ready: true}, Self: true},
		{Name: "n3", Address: "10.0.0.3", GossipPort: 7946, Status: "alive", Runtime: api.RuntimeStatus{Ready: true}, Filling: true},
	}
	f.set(func(f *fakeAPI) { f.nodes = nodes })
	r := cli(t, f, nil, "nodes").ok(t)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 4 || strings.Join(strings.Fields(lines[0]), " ") != "NAME ADDRESS STATUS API LABELS RUNTIME" {
		t.Fatalf("nodes table:\n%s", r.stdout)
	}
	if got := strings.Join(strings.Fields(lines[1]), " "); got != "n1 10.0.0.1 alive 10.0.0.1:7070 disk=ssd,zone=a ready" {
		t.Errorf("n1 row = %q", got)
	}
	if got := strings.Join(strings.Fields(lines[2]), " "); got != "n2 10.0.0.2 failed - - not ready: containerd unreachable" {
		t.Errorf("n2 row = %q", got)
	}
	if got := strings.Join(strings.Fields(lines[3]), " "); got != "n3 10.0.0.3 alive, filling - - ready" {
		t.Errorf("n3 row = %q", got)
	}

	r = cli(t, f, nil, "nodes", "-o", "json").ok(t)
	nodes = nil
	if err := json.Unmarshal([]byte(r.stdout), &nodes); err != nil || len(nodes) != 3 || !nodes[2].Filling {
		t.Fatalf("nodes -o json = %q (%v)", r.stdout, err)
	}
	for _, n := range nodes {
		if n.Name == "" || n.Address == "" || n.Status == "" {
			t.Errorf("node lacks name, address or status: %+v", n)
		}
	}
}

func TestAddrAndEnv(t *testing.T) {
	f := newFakeAPI(t)
	f.set(func(f *fakeAPI) { f.token = "s3cret" })
	bare := strings.TrimPrefix(f.srv.URL, "http://")

	// Bare host:port in --addr, token from the environment.
	cli(t, f, map[string]string{envToken: "s3cret"}, "--addr", bare, "ls").ok(t)
	// Address and token from the environment.
	cli(t, f, map[string]string{envAddr: bare, envToken: "s3cret"}, "ls").ok(t)
	// Flags win over the environment.
	cli(t, f, map[string]string{envAddr: "127.0.0.1:1", envToken: "wrong"}, "--addr", f.srv.URL, "--token", "s3cret", "ls").ok(t)

	reqs := f.reqs()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for _, r := range reqs {
		if got := r.Header.Get("Authorization"); got != "Bearer s3cret" {
			t.Errorf("Authorization = %q, want the token", got)
		}
		if ua := r.Header.Get("User-Agent"); ua != "shoal/"+version {
			t.Errorf("User-Agent = %q", ua)
		}
	}
}

func TestUnauthorized(t *testing.T) {
	f := newFakeAPI(t)
	f.set(func(f *fakeAPI) { f.token = "s3cret" })
	cli(t, f, nil, "ls").failed(t, "unauthorized: missing or wrong bearer token; set --token or SHOAL_TOKEN")
	cli(t, f, map[string]string{envToken: "nope"}, "nodes").failed(t, "unauthorized: ")
	f.add(spec.Spec{Name: "a", Image: "x"})
	r := cli(t, f, nil, "rm", "a", "b")
	r.failed(t, "unauthorized: ")
	if n := len(f.reqsOf(http.MethodDelete)); n != 1 {
		t.Fatalf("rm kept going after a 401: %d DELETEs", n)
	}
}

func TestBadAddr(t *testing.T) {
	cli(t, nil, nil, "--addr", "ftp://x", "ls").failed(t, "scheme must be http or https")
	cli(t, nil, map[string]string{envAddr: "http://:7070"}, "ls").failed(t, "missing host")
}

func TestUnreachable(t *testing.T) {
	f := newFakeAPI(t)
	url := f.srv.URL
	f.srv.Close()
	cli(t, nil, nil, "--addr", url, "ls").failed(t, "(is `shoal agent` running there? set --addr or SHOAL_ADDR)")
}

func TestKeygen(t *testing.T) {
	a := cli(t, nil, nil, "keygen").ok(t)
	b := cli(t, nil, nil, "keygen").ok(t)
	for _, r := range []result{a, b} {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(r.stdout, "\n"))
		if err != nil || len(key) != 32 {
			t.Fatalf("keygen printed %q: %d bytes, %v", r.stdout, len(key), err)
		}
	}
	if a.stdout == b.stdout {
		t.Fatal("two keygen runs printed the same key")
	}
	j := cli(t, nil, nil, "keygen", "-o", "json").ok(t)
	var out struct{ Key string }
	if err := json.Unmarshal([]byte(j.stdout), &out); err != nil || len(out.Key) != 44 {
		t.Fatalf("keygen -o json = %q (%v)", j.stdout, err)
	}
}

func TestVersion(t *testing.T) {
	r := cli(t, nil, nil, "version").ok(t)
	if !strings.HasPrefix(r.stdout, "shoal "+version+" (go") {
		t.Fatalf("version = %q", r.stdout)
	}
	r = cli(t, nil, nil, "version", "-o", "json").ok(t)
	var v map[string]string
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v["version"] != version || v["go"] == "" || v["os"] == "" || v["arch"] == "" {
		t.Fatalf("version -o json = %q (%v)", r.stdout, err)
	}
	if r := cli(t, nil, nil, "--version").ok(t); r.stdout != "shoal "+version+"\n" {
		t.Fatalf("--version = %q", r.stdout)
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		r := cli(t, nil, nil, "completion", shell).ok(t)
		if !strings.Contains(r.stdout, "shoal") || len(r.stdout) < 500 {
			t.Errorf("completion %s printed %d bytes", shell, len(r.stdout))
		}
	}
}

func TestDescribeOneLine(t *testing.T) {
	if got := describe(errString("a\n\nb\tc")); got != "a b c" {
		t.Fatalf("describe = %q", got)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
