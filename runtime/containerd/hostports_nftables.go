package containerd

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

// The CNI plugins attach a bridge-mode replica (bridge, host-local,
// loopback); everything else of its network is programmed here, because
// the standard plugins that would do it (bridge's ipMasq, portmap,
// firewall) exec iptables 30 to 60 times per replica, which took 0.6 to
// 2.5 s of every start on a busy 2-core machine (strace of the agents
// during a failover), most of the time a node needs to replace a dead
// node's replicas.
//
// Host ports and masquerading are an nftables table of the driver's own,
// "ip shoal-<bridge>", programmed over netlink in one transaction per
// replica:
//
//	chain prerouting  { type nat hook prerouting priority dstnat - 10
//	    ip daddr HOSTIP tcp dport HP dnat to IP:CP comment "shoal:ID HP" }
//	chain output      { type nat hook output priority dstnat - 10
//	    (the same rules, for connections from the host itself) }
//	chain postrouting { type nat hook postrouting priority srcnat - 10
//	    ct status dnat oifname BRIDGE ip saddr 127.0.0.0/8 masquerade
//	    ct status dnat oifname BRIDGE ip saddr SUBNET masquerade
//	    oifname != BRIDGE ip saddr SUBNET ip daddr != 224.0.0.0/4 masquerade }
//
// Without HostIP the match is "fib daddr type local", every host
// address. The first two postrouting rules make a host port work from the
// host's loopback addresses (with route_localnet on the bridge) and from
// the containers on the bridge (hairpin), as portmap's snat option does;
// the third gives the containers the outside world, as bridge's ipMasq.
// The table lives beside any iptables-nft tables: its chains run just
// before theirs.
//
// Forwarding: a host whose iptables FORWARD policy drops (Docker sets
// it so) would drop the replicas' traffic, and an nftables accept cannot
// overrule an iptables drop, so two iptables rules (the only iptables
// calls, once per driver) accept what enters from the bridge and what
// leaves to it when it is a reply or a host port connection:
//
//	-A FORWARD -i BRIDGE -m comment --comment shoal:BRIDGE -j ACCEPT
//	-A FORWARD -o BRIDGE -m conntrack --ctstate RELATED,ESTABLISHED,DNAT -m comment --comment shoal:BRIDGE -j ACCEPT
//
// Close removes the table and the rules when no replica's rules are left.

// Chain names of the host port table.
const (
	nftPrerouting  = "prerouting"
	nftOutput      = "output"
	nftPostrouting = "postrouting"
)

// nftCommentPrefix starts the comment of a replica's DNAT rules,
// "shoal:<id> <host port>".
const nftCommentPrefix = "shoal:"

// ipsDstNAT is the conntrack status bit of a destination-NATed connection.
const ipsDstNAT = 1 << 5

// nftTableName is the name of the host port table of the driver's bridge.
func (d *Driver) nftTableName() string { return "shoal-" + d.cfg.Bridge }

func (d *Driver) nftTable() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyIPv4, Name: d.nftTableName()}
}

// nftChains returns the three chains of the host port table.
func (d *Driver) nftChains(t *nftables.Table) (pre, out, post *nftables.Chain) {
	nat := func(name string, hook *nftables.ChainHook, prio nftables.ChainPriority) *nftables.Chain {
		return &nftables.Chain{Name: name, Table: t, Type: nftables.ChainTypeNAT, Hooknum: hook, Priority: nftables.ChainPriorityRef(prio)}
	}
	return nat(nftPrerouting, nftables.ChainHookPrerouting, *nftables.ChainPriorityNATDest-10),
		nat(nftOutput, nftables.ChainHookOutput, *nftables.ChainPriorityNATDest-10),
		nat(nftPostrouting, nftables.ChainHookPostrouting, *nftables.ChainPriorityNATSource-10)
}

// mapHostPorts adds the DNAT rules of replica id (container port -> host
// port) to container address ip. The same transaction (re)creates the
// table, its chains and the masquerade rules, so a table removed behind
// the driver's back comes back; it runs for replicas without host ports
// too, for their masquerading.
func (d *Driver) mapHostPorts(id string, ip netip.Addr, ports map[int]int) error {
	if err := d.ensureForward(); err != nil {
		return fmt.Errorf("containerd: network of %s: %w", id, err)
	}
	if !ip.Is4() {
		return fmt.Errorf("containerd: host ports of %s: %s is not an IPv4 address", id, ip)
	}
	// Connections from the host's loopback addresses leave through the
	// bridge with a 127/8 source until masqueraded; without
	// route_localnet the kernel drops them as martians.
	sysctl := "/proc/sys/net/ipv4/conf/" + d.cfg.Bridge + "/route_localnet"
	if err := os.WriteFile(sysctl, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("containerd: host ports of %s: %w", id, err)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("containerd: nftables: %w", err)
	}
	t := c.AddTable(d.nftTable())
	pre, out, post := d.nftChains(t)
	c.AddChain(pre)
	c.AddChain(out)
	c.AddChain(post)
	c.FlushChain(post)
	for _, src := range []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), d.cfg.Subnet} {
		c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: d.masqExprs(src)})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: d.outboundMasqExprs()})
	for _, cp := range slices.Sorted(maps.Keys(ports)) {
		hp := ports[cp]
		ud := userdata.AppendString(nil, userdata.TypeComment, fmt.Sprintf("%s%s %d", nftCommentPrefix, id, hp))
		for _, ch := range []*nftables.Chain{pre, out} {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: d.dnatExprs(hp, ip, cp), UserData: ud})
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("containerd: host ports of %s: nftables: %w", id, err)
	}
	return nil
}

// forwardRules are the iptables FORWARD rules of the driver's bridge
// (without -A/-D/-C).
func (d *Driver) forwardRules() [][]string {
	comment := []string{"-m", "comment", "--comment", "shoal:" + d.cfg.Bridge}
	return [][]string{
		append([]string{"FORWARD", "-i", d.cfg.Bridge}, append(comment, "-j", "ACCEPT")...),
		append([]string{"FORWARD", "-o", d.cfg.Bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED,DNAT"}, append(comment, "-j", "ACCEPT")...),
	}
}

// ensureForward adds the FORWARD rules once per Driver (and again after
// a failure): -C first, so a restarted agent does not add them twice.
func (d *Driver) ensureForward() error {
	d.fwdMu.Lock()
	defer d.fwdMu.Unlock()
	if d.fwdDone {
		return nil
	}
	for _, r := range d.forwardRules() {
		if exec.Command("iptables", append([]string{"-w", "-C"}, r...)...).Run() == nil {
			continue
		}
		if out, err := exec.Command("iptables", append([]string{"-w", "-I"}, r...)...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables -I %s: %v: %s", strings.Join(r, " "), err, strings.TrimSpace(string(out)))
		}
	}
	d.fwdDone = true
	return nil
}

// dropForward removes the FORWARD rules (every copy).
func (d *Driver) dropForward() error {
	d.fwdMu.Lock()
	defer d.fwdMu.Unlock()
	var errs []error
	for _, r := range d.forwardRules() {
		for exec.Command("iptables", append([]string{"-w", "-C"}, r...)...).Run() == nil {
			if out, err := exec.Command("iptables", append([]string{"-w", "-D"}, r...)...).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("iptables -D %s: %v: %s", strings.Join(r, " "), err, strings.TrimSpace(string(out))))
				break
			}
		}
	}
	d.fwdDone = false
	return errors.Join(errs...)
}

// unmapHostPorts removes the DNAT rules of replica id. No table or no
// rules is fine.
func (d *Driver) unmapHostPorts(id string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("containerd: nftables: %w", err)
	}
	t := d.nftTable()
	pre, out, _ := d.nftChains(t)
	n := 0
	for _, ch := range []*nftables.Chain{pre, out} {
		rules, err := c.GetRules(t, ch)
		if nftNotExist(err) {
			return nil // no table or chain: no rules
		}
		if err != nil {
			return fmt.Errorf("containerd: unmap host ports of %s: nftables: %w", id, err)
		}
		for _, r := range rules {
			if owner, _, ok := ruleOwner(r); ok && owner == id {
				if err := c.DelRule(r); err != nil {
					return fmt.Errorf("containerd: unmap host ports of %s: %w", id, err)
				}
				n++
			}
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("containerd: unmap host ports of %s: nftables: %w", id, err)
	}
	return nil
}

// dropIdleNetwork deletes the table and the FORWARD rules when the table
// holds no replica's rules (Close: nothing of the driver is left then).
func (d *Driver) dropIdleNetwork() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("containerd: nftables: %w", err)
	}
	t := d.nftTable()
	pre, out, _ := d.nftChains(t)
	for _, ch := range []*nftables.Chain{pre, out} {
		rules, err := c.GetRules(t, ch)
		if nftNotExist(err) {
			continue
		}
		if err != nil {
			return fmt.Errorf("containerd: nftables: %w", err)
		}
		if len(rules) > 0 {
			return nil
		}
	}
	if err := d.dropForward(); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err != nil {
		return nil // no table
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil && !nftNotExist(err) {
		return fmt.Errorf("containerd: delete nftables table %s: %w", t.Name, err)
	}
	return nil
}

// nftNotExist reports whether err says that a table or chain does not
// exist (the library formats the netlink error into its own, unwrapped).
func nftNotExist(err error) bool {
	return err != nil && (errors.Is(err, syscall.ENOENT) || strings.Contains(err.Error(), syscall.ENOENT.Error()))
}

// ruleOwner decodes the comment of a DNAT rule: replica ID and host port.
func ruleOwner(r *nftables.Rule) (id string, hostPort int, ok bool) {
	comment, ok := userdata.GetString(r.UserData, userdata.TypeComment)
	if !ok || !strings.HasPrefix(comment, nftCommentPrefix) {
		return "", 0, false
	}
	id, hp, ok := strings.Cut(strings.TrimPrefix(comment, nftCommentPrefix), " ")
	if !ok {
		return "", 0, false
	}
	p, err := strconv.Atoi(hp)
	if err != nil {
		return "", 0, false
	}
	return id, p, true
}

// dnatExprs is "ip daddr HOSTIP tcp dport HP dnat to IP:CP" (or
// "fib daddr type local" instead of the address match).
func (d *Driver) dnatExprs(hp int, ip netip.Addr, cp int) []expr.Any {
	var ex []expr.Any
	if d.cfg.HostIP.IsValid() && d.cfg.HostIP.Is4() {
		ex = append(ex,
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: d.cfg.HostIP.AsSlice()})
	} else {
		ex = append(ex,
			&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(syscall.RTN_LOCAL)})
	}
	return append(ex,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{syscall.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(hp))},
		&expr.Immediate{Register: 1, Data: ip.AsSlice()},
		&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(uint16(cp))},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: syscall.AF_INET, RegAddrMin: 1, RegProtoMin: 2},
	)
}

// masqExprs is "ct status dnat oifname BRIDGE ip saddr SRC masquerade".
func (d *Driver) masqExprs(src netip.Prefix) []expr.Any {
	ifname := make([]byte, syscall.IFNAMSIZ)
	copy(ifname, d.cfg.Bridge)
	maskBytes := prefixMask(src.Bits())
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: maskBytes, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Masked().Addr().AsSlice()},
		&expr.Masq{},
	}
}

// outboundMasqExprs is "oifname != BRIDGE ip saddr SUBNET ip daddr !=
// 224.0.0.0/4 masquerade".
func (d *Driver) outboundMasqExprs() []expr.Any {
	ifname := make([]byte, syscall.IFNAMSIZ)
	copy(ifname, d.cfg.Bridge)
	src := d.cfg.Subnet.Masked()
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: prefixMask(src.Bits()), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: src.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: prefixMask(4), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{224, 0, 0, 0}},
		&expr.Masq{},
	}
}

// prefixMask is the 4-byte network mask of a prefix length.
func prefixMask(bits int) []byte {
	m := make([]byte, 4)
	for i := 0; i < bits; i++ {
		m[i/8] |= 0x80 >> (i % 8)
	}
	return m
}

// RemoveBridge removes everything a Driver on bridge set up on the host
// besides its containers: the bridge itself, the nftables table and the
// iptables FORWARD rules. For tests and uninstalling; the containers
// attached to it lose their network.
func RemoveBridge(bridge string) error {
	d := &Driver{cfg: Config{Bridge: bridge}}
	var errs []error
	if err := d.dropForward(); err != nil {
		errs = append(errs, err)
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("containerd: nftables: %w", err)
	}
	t := d.nftTable()
	if _, err := c.ListTableOfFamily(t.Name, t.Family); err == nil {
		c.DelTable(t)
		if err := c.Flush(); err != nil && !nftNotExist(err) {
			errs = append(errs, fmt.Errorf("containerd: delete nftables table %s: %w", t.Name, err))
		}
	}
	if out, err := exec.Command("ip", "link", "del", bridge).CombinedOutput(); err != nil && !strings.Contains(string(out), "Cannot find device") {
		errs = append(errs, fmt.Errorf("containerd: ip link del %s: %v: %s", bridge, err, strings.TrimSpace(string(out))))
	}
	return errors.Join(errs...)
}
