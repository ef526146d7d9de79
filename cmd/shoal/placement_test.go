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

// The placement verb against a real in-process cluster.
func TestPlacementVerb(t *testing.T) {
	c := testenv.New(t, testenv.Options{Nodes: 3})
	addr := "--addr=" + c.Nodes[0].Agent().APIAddr()
	cli(t, nil, nil, addr, "run", "web", "--image", "demo:1", "--replicas", "2").ok(t)

	// The placement may still move while the new nodes fill up (a slot
	// goes to a node once it stops filling): the JSON, the table and the
	// explanation are read together until they agree.
	c.Eventually(10*time.Second, func() error {
		r := cli(t, nil, nil, addr, "placement", "web", "-o", "json")
		if r.code != 0 {
			return fmt.Errorf("exit %d: %s", r.code, r.stderr)
		}
		var p api.Placement
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			return err
		}
		if len(p.Slots) != 2 {
			return fmt.Errorf("%d slots placed", len(p.Slots))
		}
		table := cli(t, nil, nil, addr, "placement").ok(t).stdout
		for _, s := range p.Slots {
			if !strings.Contains(table, fmt.Sprintf("web/%d", s.Slot)) || !strings.Contains(table, s.Node) {
				return fmt.Errorf("table does not show web/%d on %s:\n%s", s.Slot, s.Node, table)
			}
		}
		ex := cli(t, nil, nil, addr, "placement", "web", "--slot", "1", "--explain").ok(t).stdout
		if !strings.Contains(ex, "web/1 -> "+p.Slots[1].Node) || !strings.Contains(ex, "chosen") || strings.Count(ex, "node-") < 4 {
			return fmt.Errorf("explain output does not show web/1 on %s:\n%s", p.Slots[1].Node, ex)
		}
		return nil
	})
	cli(t, nil, nil, addr, "placement", "nope").failed(t, "not found")
	cli(t, nil, nil, addr, "placement", "--explain").failed(t, "needs a SERVICE")
	cli(t, nil, nil, addr, "placement", "web", "--slot", "7", "--explain").failed(t, "out of range")
}
