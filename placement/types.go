package placement

import (
	"errors"
	"sort"
	"strconv"
)

// DefaultEpsilon is the load bound slack used when Options.Epsilon is not a
// positive number: no node takes more than ceil(1.25 x its fair share).
const DefaultEpsilon = 0.25

// Sentinel errors returned (wrapped) by Explain.
var (
	// ErrUnknownService means the service named in Explain is not in the
	// services passed to it.
	ErrUnknownService = errors.New("placement: unknown service")
	// ErrSlotOutOfRange means the slot index is negative or not below the
	// service's replica count.
	ErrSlotOutOfRange = errors.New("placement: slot out of range")
)

// Node is one cluster member as the placement sees it: an alive member of
// the gossip membership, with the tags it advertises.
//
// Names must be unique (they are in a gossip membership). If two nodes share
// a name anyway, one of them is kept by a canonical comparison of all fields,
// so the result still does not depend on the input order.
type Node struct {
	// Name identifies the node cluster-wide and is hashed into every score.
	Name string
	// Labels are matched against Service.Constraints (string equality).
	Labels map[string]string
	// Arch is the node's CPU architecture in GOARCH spelling ("amd64",
	// "arm64"). Compared case-insensitively with Service.Platforms.
	Arch string
	// OS is the node's operating system in GOOS spelling ("linux").
	OS string
	// CPUs is the capacity in cores that replicas' requests may use.
	// 0 (or any value that is not a positive finite number) means not
	// limited. CPUs are accounted in thousandths of a core.
	CPUs float64
	// Memory is the capacity in bytes that replicas' requests may use.
	// 0 or negative means not limited.
	Memory int64
	// Weight scales the node's share of slots (a node of weight 2 gets
	// twice the slots of a node of weight 1). 0, negative, NaN or infinite
	// mean 1.
	Weight float64
	// Schedulable says the node may own slots. A node that is alive but
	// cannot run containers (runtime not ready, draining) sets it false.
	Schedulable bool
	// Reason says why the node is not schedulable ("runtime not ready");
	// shown in unplaceable reasons and explanations.
	Reason string
	// Filling says the node has just joined or come back, and announces
	// it (the agent sets it from the node's own membership tags, so every
	// node sees the same value): the slots it brought back
	// (Service.Adopted) stay on it before any other holder's, and while
	// it holds fewer than its fair share it takes slots from others, up
	// to that share. The node clears it once
	// it alone runs every slot it owns. It has no effect without holders.
	// See the package doc, "Holders".
	Filling bool
}

// Service is the part of one service spec that matters to placement.
//
// Names must be unique (they are keys of the desired-state store); a
// duplicate is resolved canonically like a duplicate Node.
type Service struct {
	// Name identifies the service; slots are named "Name/index".
	Name string
	// Replicas is the number of slots, Name/0 to Name/Replicas-1. Negative
	// means 0. Compute allocates memory in proportion to the total number
	// of replicas: callers bound it (node/spec allows at most 1000).
	Replicas int
	// Constraints restrict the service to nodes whose Labels hold every
	// key with exactly this value.
	Constraints map[string]string
	// Platforms lists the "os/arch" (or "os/arch/variant", the variant is
	// ignored, or just "os" for any arch) the image can run on. Empty
	// means any. Compared case-insensitively; empty entries are ignored;
	// an entry with an empty os matches no node.
	Platforms []string
	// CPUs is each replica's CPU request in cores; counted against
	// Node.CPUs. 0 (or not a positive finite number) requests nothing.
	CPUs float64
	// Memory is each replica's memory request in bytes; counted against
	// Node.Memory. 0 or negative requests nothing.
	Memory int64
	// Holders maps a slot index to the nodes that hold the slot now: run
	// a replica of it (the replica status view). A slot stays on a holder
	// while the rules allow, so that a join or leave moves few slots; see
	// the package doc, "Holders". Indices out of range, unknown names and
	// nodes that may not hold the slot (ineligible, not schedulable) are
	// ignored. nil (the default) makes placement a function of nodes and
	// specs alone.
	Holders map[int][]string
	// Adopted names, per slot, the holders whose copy was already running
	// when their node (re)started: the copies a filling node brought
	// back. Such a holder keeps the slot before any other holder while it
	// is filling, so that an agent restarted while its containers ran
	// keeps them, though others started copies meanwhile. Names that are
	// not holders are ignored.
	Adopted map[int][]string
}

// Options tune Compute and Explain. The zero value is the default.
type Options struct {
	// Epsilon is the load bound slack: no node takes more than
	// ceil((1+Epsilon) x its fair share) of the slots, unless constraints
	// or spread leave a slot no eligible node below its bound. Smaller
	// values balance better and move more slots on joins and leaves.
	// Values that are not positive (and NaN) mean DefaultEpsilon; +Inf
	// disables the bound.
	Epsilon float64
}

// Slot is one replica slot of a service: Service/Index.
type Slot struct {
	// Service is the service name.
	Service string
	// Index is the replica index, 0 <= Index < Replicas.
	Index int
}

// String returns the slot as "service/index", for example "web/2".
func (s Slot) String() string { return s.Service + "/" + strconv.Itoa(s.Index) }

// Assignment says which node owns a slot.
type Assignment struct {
	Slot
	// Node is the owner's name.
	Node string
	// Rank is the number of eligible nodes ranked above Node for this slot:
	// 0 means the slot got its first choice; more means it spilled past
	// nodes that were at their bound, held a replica of the service
	// already, or had no capacity left.
	Rank int
}

// Unplaced is a slot that no node can take, and why.
type Unplaced struct {
	Slot
	// Reason is human readable, for example
	// "no eligible node: label zone=eu (3 nodes)" or
	// "insufficient capacity: ...".
	Reason string
}

// Load is what Compute placed on one schedulable node.
type Load struct {
	// Node is the node's name.
	Node string
	// Slots is the number of slots the node owns.
	Slots int
	// Limit is the node's load bound: (1+ε) x its fair share, rounded down
	// or up per node (see the package doc, "Load bounds"). Slots exceeds
	// it only when a slot had no eligible node below its bound, through
	// constraints or spread.
	Limit int
	// CPUs is the sum of the CPU requests of the node's slots, in cores.
	CPUs float64
	// Memory is the sum of the memory requests of the node's slots.
	Memory int64
}

// Result is the placement of every slot. A Result is never modified after
// Compute returns it and is safe for concurrent reads.
type Result struct {
	// Assignments holds one entry per placed slot, sorted by service name
	// then index.
	Assignments []Assignment
	// Unplaceable holds one entry per slot that no node can take, sorted
	// like Assignments. Every slot of every service is in exactly one of
	// the two lists.
	Unplaceable []Unplaced
	// Loads holds one entry per schedulable node, sorted by node name.
	Loads []Load
}

// Owner returns the node that owns slot service/index, and false if the slot
// is unplaceable or does not exist. It runs in O(log slots).
func (r *Result) Owner(service string, index int) (string, bool) {
	a := r.Assignments
	i := sort.Search(len(a), func(i int) bool {
		if a[i].Service != service {
			return a[i].Service > service
		}
		return a[i].Index >= index
	})
	if i < len(a) && a[i].Service == service && a[i].Index == index {
		return a[i].Node, true
	}
	return "", false
}

// Owned returns the slots that node owns, sorted by service then index, or
// nil if it owns none. It runs in O(slots).
func (r *Result) Owned(node string) []Slot {
	var out []Slot
	for _, a := range r.Assignments {
		if a.Node == node {
			out = append(out, a.Slot)
		}
	}
	return out
}
