package placement_test

import (
	"fmt"

	"github.com/shoalmesh/shoal/placement"
)

func ExampleCompute() {
	nodes := []placement.Node{
		{Name: "node-a", OS: "linux", Arch: "amd64", Labels: map[string]string{"zone": "eu"}, Schedulable: true},
		{Name: "node-b", OS: "linux", Arch: "amd64", Labels: map[string]string{"zone": "eu"}, Schedulable: true},
		{Name: "node-c", OS: "linux", Arch: "arm64", Labels: map[string]string{"zone": "us"}, Schedulable: true},
		{Name: "node-d", Schedulable: false, Reason: "runtime not ready"},
	}
	services := []placement.Service{
		{Name: "web", Replicas: 3},
		{Name: "db", Replicas: 2, Constraints: map[string]string{"zone": "eu"}, Memory: 1 << 30},
		{Name: "gpu", Replicas: 1, Constraints: map[string]string{"gpu": "yes"}},
	}
	r := placement.Compute(nodes, services, placement.Options{})
	for _, a := range r.Assignments {
		fmt.Println(a.Slot, "->", a.Node)
	}
	for _, u := range r.Unplaceable {
		fmt.Println(u.Slot, "unplaceable:", u.Reason)
	}
	fmt.Println(r.Owned("node-a"))
	// Output:
	// db/0 -> node-a
	// db/1 -> node-b
	// web/0 -> node-b
	// web/1 -> node-c
	// web/2 -> node-a
	// gpu/0 unplaceable: no eligible node: label gpu=yes (3 nodes), not schedulable: runtime not ready (1 node)
	// [db/0 web/2]
}

func ExampleExplain() {
	nodes := []placement.Node{
		{Name: "node-a", Labels: map[string]string{"zone": "eu"}, Schedulable: true},
		{Name: "node-b", Labels: map[string]string{"zone": "eu"}, Schedulable: true},
		{Name: "node-c", Labels: map[string]string{"zone": "us"}, Schedulable: true},
		{Name: "node-d", Schedulable: false, Reason: "runtime not ready"},
	}
	services := []placement.Service{{Name: "db", Replicas: 2, Constraints: map[string]string{"zone": "eu"}}}
	e, err := placement.Explain(nodes, services, placement.Options{}, "db", 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(e)
	// Output:
	// db/0 -> node-a (rank 1)
	// RANK  NODE    SCORE   SLOTS  STATUS
	// 0     node-b  0.9457  1/1    skipped: at load bound (1/1)
	// 1     node-a  0.2682  0/1    chosen
	// -     node-c  1.459   0/1    ineligible: label zone=eu != us
	// -     node-d  0.9751  -      ineligible: not schedulable: runtime not ready
}
