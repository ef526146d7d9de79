package containerd_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	shoalrt "github.com/shoalmesh/shoal/runtime"
)

// hostPortTable is the driver's nftables table.
func hostPortTable(e *env) *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: "shoal-" + e.cfg.Bridge}
}

// hostPortRules lists the DNAT rules of replica id in the driver's
// nftables table ("chain: comment").
func hostPortRules(t *testing.T, e *env, id string) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	table := hostPortTable(e)
	var out []string
	for _, chain := range []string{"prerouting", "output"} {
		rules, err := c.GetRules(table, &nftables.Chain{Name: chain, Table: table})
		if err != nil {
			if strings.Contains(err.Error(), "no such file or directory") {
				continue // no table
			}
			t.Fatalf("nftables rules of %s: %v", chain, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			if strings.HasPrefix(comment, "shoal:"+id+" ") {
				out = append(out, chain+": "+comment)
			}
		}
	}
	return out
}

// hostPortTableExists reports whether the driver's nftables table is there.
func hostPortTableExists(t *testing.T, e *env) bool {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	table := hostPortTable(e)
	_, err = c.ListTableOfFamily(table.Name, table.Family)
	return err == nil
}

// forwardRules returns the iptables FORWARD rules that name the bridge.
func forwardRules(t *testing.T, e *env) []string {
	t.Helper()
	out, err := exec.Command("iptables", "-w", "-S", "FORWARD").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables -S FORWARD: %v: %s", err, out)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " "+e.cfg.Bridge+" ") {
			rules = append(rules, line)
		}
	}
	return rules
}

// outsideListener is an HTTP server in a network namespace of the test's
// own, reached over a veth pair from the host (root namespace): a stand-in
// for the world beyond the machine. It sends the source address of every
// request to seen. It returns the server's address and the host's address
// on the pair.
func outsideListener(t *testing.T) (server netip.AddrPort, host netip.Addr, seen <-chan netip.Addr) {
	t.Helper()
	id := fmt.Sprintf("%06x", rand.IntN(1<<24))
	ns, hostIf, nsIf := "shoaltest-out-"+id, "shoh"+id, "shon"+id
	third := byte(rand.IntN(250))
	host = netip.AddrFrom4([4]byte{10, 251, third, 1})
	peer := netip.AddrFrom4([4]byte{10, 251, third, 2})
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostIf).Run() })
	run("link", "set", nsIf, "netns", ns)
	run("addr", "add", host.String()+"/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	run("-n", ns, "addr", "add", peer.String()+"/30", "dev", nsIf)
	run("-n", ns, "link", "set", nsIf, "up")
	run("-n", ns, "link", "set", "lo", "up")

	// A socket belongs to the namespace of the thread that made it: make
	// the listener on a locked thread moved into ns, then move it back.
	ln, err := func() (net.Listener, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		self, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			return nil, err
		}
		defer self.Close()
		target, err := os.Open("/run/netns/" + ns)
		if err != nil {
			return nil, err
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			return nil, err
		}
		ln, lerr := net.Listen("tcp", netip.AddrPortFrom(peer, 0).String())
		if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
			panic(fmt.Sprintf("cannot return to the host network namespace: %v", err)) // the thread is unusable
		}
		return ln, lerr
	}()
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan netip.Addr, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			select {
			case ch <- ap.Addr():
			default:
			}
		}
		fmt.Fprintln(w, "outside")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().(*net.TCPAddr).AddrPort(), host, ch
}

// TestBridgeNetworkRules checks the rules a bridge-mode replica gets
// besides its veth: a replica reaches the outside world masqueraded
// behind the host's address (the outside has no route to the bridge
// subnet), its host port is one DNAT rule per chain in the driver's
// nftables table, the iptables FORWARD accepts of the bridge are in place,
// and once the last replica is stopped, Close removes the table and the
// FORWARD rules.
func TestBridgeNetworkRules(t *testing.T) {
	e := newEnv(t)
	e.importImage(t, "shoal-test:1")
	ctx := context.Background()
	server, host, seen := outsideListener(t)

	spec := shoalrt.ReplicaSpec{ID: "egress-0-v1", Service: "egress", Image: "shoal-test:1", Network: "bridge", Ports: []int{80}}
	r, err := e.d.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = e.d.Stop(ctx, spec.ID, time.Second)
		}
	})
	waitHello(t, fmt.Sprintf("http://127.0.0.1:%d/", r.HostPorts[80]))

	if rules := hostPortRules(t, e, spec.ID); len(rules) != 2 {
		t.Errorf("DNAT rules of %s = %v, want one in prerouting and one in output", spec.ID, rules)
	}
	if rules := forwardRules(t, e); len(rules) != 2 {
		t.Errorf("FORWARD rules of %s = %v, want 2", e.cfg.Bridge, rules)
	}

	// Egress: the outside server sees the host's address, not the
	// replica's.
	// Without masquerading the answer has no way back: wget hangs until
	// the deadline. (The test image's wget crashes on -T.)
	xctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	code, err := e.d.Exec(xctx, spec.ID, []string{"wget", "-q", "-O", "/dev/null", "http://" + server.String() + "/"})
	if err != nil || code != 0 {
		t.Fatalf("wget from the replica to %s = %d, %v", server, code, err)
	}
	select {
	case src := <-seen:
		if src != host {
			t.Errorf("outside server saw %s, want the host's %s (masquerade)", src, host)
		}
	default:
		t.Error("wget succeeded but the outside server saw no request")
	}

	if err := e.d.Stop(ctx, spec.ID, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	stopped = true
	if rules := hostPortRules(t, e, spec.ID); len(rules) != 0 {
		t.Errorf("DNAT rules left after Stop: %v", rules)
	}
	if err := e.d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if hostPortTableExists(t, e) {
		t.Errorf("nftables table %s left after Close without replicas", hostPortTable(e).Name)
	}
	if rules := forwardRules(t, e); len(rules) != 0 {
		t.Errorf("FORWARD rules left after Close without replicas: %v", rules)
	}
}
