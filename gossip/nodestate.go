package gossip

import (
	"reflect"
	"sync"
	"unsafe"

	"github.com/hashicorp/memberlist"
)

// Serf reports a member as alive until memberlist declares it dead; only
// memberlist knows that a member is suspect (probes failed, not yet declared
// dead). memberlist v0.7.0 has no safe way to read that:
//
//   - Memberlist.Members returns *Node pointers into its live table, and
//     the exported Node.State is never written (nodeState has its own State
//     field that shadows it), so it always reads StateAlive;
//   - the real state, nodeState.State, is unexported and is written in place
//     under the unexported Memberlist.nodeLock, so reading it without that
//     lock is a data race (hashicorp/memberlist#306, #250).
//
// So this file reads nodeState.State through the *Node pointers (Node is
// nodeState's first field) while holding nodeLock for reading, both located
// by reflection once at start-up. If memberlist's layout is not the one
// expected (a different version), suspectSupported is false and members are
// never reported suspect; TestMemberlistLayout fails so the upgrade is
// noticed. Nothing is written through these pointers.
var (
	// suspectSupported is true if the layout checks below passed.
	suspectSupported bool
	// nodeLockOffset is the offset of Memberlist.nodeLock.
	nodeLockOffset uintptr
	// nodeStateOffset is the offset of nodeState.State from the start of
	// nodeState, which is also the start of its embedded Node.
	nodeStateOffset uintptr
)

func init() {
	nodeLockOffset, nodeStateOffset, suspectSupported = memberlistLayout()
}

// memberlistLayout locates Memberlist.nodeLock and nodeState.State and checks
// their types and the position of the embedded Node.
func memberlistLayout() (lockOff, stateOff uintptr, ok bool) {
	mt := reflect.TypeFor[memberlist.Memberlist]()
	lock, found := mt.FieldByName("nodeLock")
	if !found || lock.Type != reflect.TypeFor[sync.RWMutex]() || len(lock.Index) != 1 {
		return 0, 0, false
	}
	nodes, found := mt.FieldByName("nodes")
	if !found || nodes.Type.Kind() != reflect.Slice ||
		nodes.Type.Elem().Kind() != reflect.Pointer ||
		nodes.Type.Elem().Elem().Kind() != reflect.Struct {
		return 0, 0, false
	}
	ns := nodes.Type.Elem().Elem() // nodeState
	if ns.NumField() == 0 {
		return 0, 0, false
	}
	if f := ns.Field(0); !f.Anonymous || f.Type != reflect.TypeFor[memberlist.Node]() || f.Offset != 0 {
		return 0, 0, false
	}
	state, found := ns.FieldByName("State")
	if !found || len(state.Index) != 1 || state.Type != reflect.TypeFor[memberlist.NodeStateType]() {
		return 0, 0, false
	}
	return lock.Offset, state.Offset, true
}

// memberlistStates returns memberlist's own state of each node it does not
// consider dead or left, by name; nil if the layout is not supported.
func memberlistStates(ml *memberlist.Memberlist) map[string]memberlist.NodeStateType {
	if !suspectSupported || ml == nil {
		return nil
	}
	nodes := ml.Members() // pointers to the embedded Node of each nodeState
	states := make(map[string]memberlist.NodeStateType, len(nodes))
	mu := (*sync.RWMutex)(unsafe.Add(unsafe.Pointer(ml), nodeLockOffset))
	mu.RLock()
	defer mu.RUnlock()
	for _, n := range nodes {
		// Node.Name is never rewritten, but read it under the lock anyway.
		states[n.Name] = *(*memberlist.NodeStateType)(unsafe.Add(unsafe.Pointer(n), nodeStateOffset))
	}
	return states
}
