package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/shoalmesh/shoal/node/api"
	"github.com/shoalmesh/shoal/testenv"
)

// ps and logs against a real in-process cluster.
func TestPsAndLogsVerbs(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 2})
	addr := "--addr=" + c.Nodes[0].Agent().APIAddr()
	cli(t, nil, nil, addr, "run", "web", "--image", "demo:1", "--replicas", "2", "-p", "8080:80").ok(t)

	var reps []api.Replica
	c.Eventually(15*time.Second, func() error {
		r := cli(t, nil, nil, addr, "ps", "web", "-o", "json")
		if r.code != 0 {
			return fmt.Errorf("exit %d: %s", r.code, r.stderr)
		}
		reps = nil
		if err := json.Unmarshal([]byte(r.stdout), &reps); err != nil {
			return err
		}
		healthy := 0
		for _, rep := range reps {
			if rep.Healthy && rep.State == "running" && rep.Endpoint != "" {
				healthy++
			}
		}
		if healthy != 2 || len(reps) != 2 {
			return fmt.Errorf("%d healthy of %d: %+v", healthy, len(reps), reps)
		}
		return nil
	})

	table := cli(t, nil, nil, addr, "ps").ok(t).stdout
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "SERVICE SLOT NODE STATE HEALTHY ENDPOINT RESTARTS AGE" {
		t.Fatalf("ps table:\n%s", table)
	}
	for i, rep := range reps {
		f := strings.Fields(lines[i+1])
		if len(f) != 8 || f[0] != "web" || f[1] != fmt.Sprint(rep.Slot) || f[2] != rep.Node || f[3] != "running" ||
			f[4] != "yes" || f[5] != rep.Endpoint || f[6] != "0" {
			t.Errorf("ps row %q for %+v", lines[i+1], rep)
		}
	}

	out := cli(t, nil, nil, addr, "logs", "web", "--tail", "5").ok(t).stdout
	for _, rep := range reps {
		want := fmt.Sprintf("[web/%d@%s] started web/%d", rep.Slot, rep.Node, rep.Slot)
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
	cli(t, nil, nil, addr, "logs", "nope").failed(t, `service "nope" not found`)
	cli(t, nil, nil, addr, "ps", "nope").failed(t, `service "nope" not found`)
	cli(t, nil, nil, addr, "logs").failed(t, "one SERVICE")
	cli(t, nil, nil, addr, "logs", "web", "--tail", "-5").failed(t, "--tail")
}

func TestPrintReplicasTable(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	reps := []api.Replica{
		{Service: "web", Slot: 0, Node: "n1", State: "running", Healthy: true, Endpoint: "10.0.0.1:30000", Restarts: 2, StartedAt: now.Add(-3 * time.Minute)},
		{Service: "web", Slot: 1, Node: "n2", State: "pending", LastError: "image demo:1: runtime: not found\nmore"},
		{Service: "web", Slot: 2, Node: "n3", State: "running", Healthy: true, Leaving: true, StartedAt: now.Add(-time.Hour)},
	}
	var b strings.Builder
	if err := printReplicas(&b, false, reps, now); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", b.String())
	}
	if f := strings.Fields(lines[1]); strings.Join(f, " ") != "web 0 n1 running yes 10.0.0.1:30000 2 3m" {
		t.Errorf("row 1: %q", lines[1])
	}
	if !strings.Contains(lines[2], "pending (image demo:1: runtime: not found more)") || !strings.Contains(lines[2], " no ") {
		t.Errorf("row 2: %q", lines[2])
	}
	if !strings.Contains(lines[3], "running (leaving)") {
		t.Errorf("row 3: %q", lines[3])
	}
	b.Reset()
	if err := printReplicas(&b, true, nil, now); err != nil || strings.TrimSpace(b.String()) != "[]" {
		t.Fatalf("json of none: %q, %v", b.String(), err)
	}
}
