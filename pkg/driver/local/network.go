package local

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Networks. Without one, a container has a network namespace of its own
// with loopback only. A named network (CreateNetwork) is a Linux bridge on
// the host with a /24 of its own, and each container on it a namespace
// with a veth pair to the bridge. A container with egress rules but no
// named network joins the driver's egress network, a bridge whose ports
// are isolated from one another: its containers reach only what their
// rules list, not each other.
//
// The filters are one nftables table per driver (named after its root),
// rewritten whole and atomically from the state on disk whenever a
// container joins or leaves a network, so that a restarted worker, or one
// that crashed half way, converges on what the containers' files say:
//
//   - input: nothing from a bridge reaches the host itself: its addresses
//     (the control plane's ports among them) are unreachable;
//   - forward: containers of one network reach each other; a container
//     reaches beyond its network only what its egress rules list; nothing
//     from outside opens a connection into a network;
//   - postrouting: what leaves is masqueraded behind the host's address;
//   - bridge prerouting: a container's port carries only its own address,
//     so a container that rewrites its address gains no other's rules.
const (
	// egressNetwork is the hidden network of containers that have egress
	// rules and no named network.
	egressNetwork = "_egress"
	// subnetPool is where networks' /24s are taken from, skipping any
	// prefix a route of the host already covers.
	subnetPool = "10.213.0.0/16"
	netFile    = "net.json" // a container's place on its network
	netnsDir   = "/run/netns"
)

// NetworkNone names the default: loopback only, as Docker's "none".
const NetworkNone = "none"

// netRecord is a network's file.
type netRecord struct {
	record
	Bridge   string `json:"bridge,omitempty"`
	Subnet   string `json:"subnet,omitempty"`
	Isolated bool   `json:"isolated,omitempty"`
}

// netState is a container's place on its network.
type netState struct {
	Network  string              `json:"network"`
	Bridge   string              `json:"bridge"`
	HostLink string              `json:"hostLink"`
	Netns    string              `json:"netns"`
	Address  string              `json:"address"` // with the prefix length
	Gateway  string              `json:"gateway"`
	Egress   []driver.EgressRule `json:"egress,omitempty"`
}

// hashName is a short, stable name for something of this driver's: the
// kernel's interface names are at most 15 bytes.
func (d *Driver) hashName(prefix, name string) string {
	h := sha256.Sum256([]byte(d.root + "\x00" + name))
	return prefix + hex.EncodeToString(h[:4])
}

func (d *Driver) tableName() string { return d.hashName("openagent_", "") }

// networked says whether a container gets a network beyond loopback, and
// which.
func networked(cfg *driver.ContainerConfig) (string, bool) {
	switch {
	case cfg.Network != "" && cfg.Network != NetworkNone:
		return cfg.Network, true
	case len(cfg.Egress) > 0:
		return egressNetwork, true
	}
	return "", false
}

// networkTools says what is missing on this host for networks to work,
// "" when nothing is.
func networkTools() string {
	if !isRoot() {
		return "network namespaces, bridges and filters need root"
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return "the nft command is not installed (apt-get install nftables)"
	}
	return ""
}

// hostLock serialises what several drivers on one host share: the choice
// of subnets.
func hostLock() (func(), error) {
	f, err := os.OpenFile("/run/openagent-networks.lock", os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// makeNetwork gives a network record a bridge and a subnet no route of
// the host covers, and brings the bridge up.
func (d *Driver) makeNetwork(rec *netRecord) error {
	unlock, err := hostLock()
	if err != nil {
		return err
	}
	defer unlock()
	taken, err := takenPrefixes()
	if err != nil {
		return err
	}
	pool := netip.MustParsePrefix(subnetPool)
	for i := range 256 {
		b := pool.Addr().As4()
		b[2] = byte(i)
		p := netip.PrefixFrom(netip.AddrFrom4(b), 24)
		if !slices.ContainsFunc(taken, p.Overlaps) {
			rec.Subnet, rec.Bridge = p.String(), d.hashName("oab", rec.Name)
			_, err := ensureBridge(rec)
			return err
		}
	}
	return fmt.Errorf("no free /24 left in %s", subnetPool)
}

// takenPrefixes are the host's routes' destinations.
func takenPrefixes() ([]netip.Prefix, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, r := range routes {
		if r.Dst == nil {
			continue // the default route
		}
		if p, err := netip.ParsePrefix(r.Dst.String()); err == nil && p.Bits() > 0 {
			out = append(out, p)
		}
	}
	return out, nil
}

// ensureBridge makes the network's bridge if the host lacks it (after a
// reboot, say) and returns it.
func ensureBridge(rec *netRecord) (netlink.Link, error) {
	subnet, err := netip.ParsePrefix(rec.Subnet)
	if err != nil {
		return nil, fmt.Errorf("network %s: subnet %q: %w", rec.Name, rec.Subnet, err)
	}
	link, err := netlink.LinkByName(rec.Bridge)
	if err != nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: rec.Bridge}}
		if err := netlink.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("bridge %s: %w", rec.Bridge, err)
		}
		if link, err = netlink.LinkByName(rec.Bridge); err != nil {
			return nil, err
		}
	}
	// No IPv6 on the bridge: no link-local address of the host for a
	// container to reach.
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+rec.Bridge+"/disable_ipv6", []byte("1"), 0o644)
	gw := ipNet(gateway(subnet), 24)
	if err := netlink.AddrReplace(link, &netlink.Addr{IPNet: gw}); err != nil {
		return nil, fmt.Errorf("bridge %s address: %w", rec.Bridge, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return nil, err
	}
	return link, nil
}

func gateway(subnet netip.Prefix) netip.Addr { return subnet.Addr().Next() }

func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// loadNetwork reads a network's record, making the egress network the
// first time a container needs it.
func (d *Driver) loadNetwork(name string) (*netRecord, error) {
	var rec netRecord
	err := readJSON(d.networkFile(name), &rec)
	if errors.Is(err, os.ErrNotExist) && name == egressNetwork {
		rec = netRecord{record: record{Name: name}, Isolated: true}
		if err := d.makeNetwork(&rec); err != nil {
			return nil, err
		}
		return &rec, writeJSON(d.networkFile(name), rec)
	}
	if err != nil {
		return nil, err
	}
	if rec.Bridge == "" {
		// A record made without root (or before networks were bridges).
		if err := d.makeNetwork(&rec); err != nil {
			return nil, err
		}
		return &rec, writeJSON(d.networkFile(name), rec)
	}
	return &rec, nil
}

// attach puts a container on its network before its main process starts:
// a named network namespace (the init stage joins it), a veth pair to the
// bridge, an address, a default route only if there are egress rules, and
// the filters. Done again on every start, it mends what a crash left.
func (d *Driver) attach(id, dir string, cfg *driver.ContainerConfig) error {
	name, ok := networked(cfg)
	if !ok {
		return nil
	}
	if missing := networkTools(); missing != "" {
		return fmt.Errorf("network: %s", missing)
	}
	d.netMu.Lock()
	defer d.netMu.Unlock()
	rec, err := d.loadNetwork(name)
	if err != nil {
		return fmt.Errorf("network %s: %w", name, err)
	}
	br, err := ensureBridge(rec)
	if err != nil {
		return err
	}
	st := netState{Network: name, Bridge: rec.Bridge, HostLink: d.hashName("oav", id),
		Netns: filepath.Join(netnsDir, d.hashName("openagent-", id)), Egress: cfg.Egress}
	var old netState
	if readJSON(filepath.Join(dir, netFile), &old) == nil && old.Network == name {
		st.Address = old.Address
	}
	subnet := netip.MustParsePrefix(rec.Subnet)
	st.Gateway = gateway(subnet).String()
	if st.Address == "" {
		addr, err := d.freeAddress(name, subnet)
		if err != nil {
			return err
		}
		st.Address = netip.PrefixFrom(addr, subnet.Bits()).String()
	}
	// The address is written down first: the next container on the
	// network must not take it, even if what follows fails.
	if err := writeJSON(filepath.Join(dir, netFile), st); err != nil {
		return err
	}
	if err := plumb(&st, br, rec.Isolated); err != nil {
		return fmt.Errorf("network %s: %w", name, err)
	}
	if len(cfg.Egress) > 0 {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
			return fmt.Errorf("enable forwarding: %w", err)
		}
	}
	return d.refreshFilter()
}

// freeAddress returns the lowest address of the subnet that no container
// of this driver holds on the network.
func (d *Driver) freeAddress(network string, subnet netip.Prefix) (netip.Addr, error) {
	held := map[netip.Addr]bool{}
	for _, st := range d.netStates() {
		if p, err := netip.ParsePrefix(st.Address); err == nil && st.Network == network {
			held[p.Addr()] = true
		}
	}
	for a := gateway(subnet).Next(); subnet.Contains(a); a = a.Next() {
		if !held[a] && a != lastAddress(subnet) {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("network %s is full (%s)", network, subnet)
}

func lastAddress(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	b[3] |= 0xff >> (p.Bits() - 24)
	return netip.AddrFrom4(b)
}

// netStates reads every container's place on a network.
func (d *Driver) netStates() []netState {
	files, _ := filepath.Glob(filepath.Join(d.root, "containers", "*", netFile))
	var out []netState
	for _, f := range files {
		var st netState
		if readJSON(f, &st) == nil {
			out = append(out, st)
		}
	}
	return out
}

// plumb makes the namespace and the veth pair and configures both ends.
func plumb(st *netState, br netlink.Link, isolated bool) error {
	ns, err := namespace(st.Netns)
	if err != nil {
		return err
	}
	defer ns.Close()
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return err
	}
	defer inside.Close()
	if _, err := inside.LinkByName("eth0"); err != nil {
		if stale, err := netlink.LinkByName(st.HostLink); err == nil {
			_ = netlink.LinkDel(stale)
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: st.HostLink, MasterIndex: br.Attrs().Index, MTU: br.Attrs().MTU},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(ns),
		}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", st.HostLink, err)
		}
	}
	host, err := netlink.LinkByName(st.HostLink)
	if err != nil {
		return err
	}
	_ = os.WriteFile("/proc/sys/net/ipv6/conf/"+st.HostLink+"/disable_ipv6", []byte("1"), 0o644)
	if err := netlink.LinkSetMaster(host, br); err != nil {
		return err
	}
	if err := netlink.LinkSetIsolated(host, isolated); err != nil {
		return fmt.Errorf("isolate %s: %w", st.HostLink, err)
	}
	if err := netlink.LinkSetUp(host); err != nil {
		return err
	}
	eth, err := inside.LinkByName("eth0")
	if err != nil {
		return err
	}
	addr, err := netlink.ParseAddr(st.Address)
	if err != nil {
		return err
	}
	if err := inside.AddrReplace(eth, addr); err != nil {
		return fmt.Errorf("address %s: %w", st.Address, err)
	}
	for _, l := range []netlink.Link{eth, &netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: "lo"}}} {
		if l.Attrs().Index == 0 {
			if l, err = inside.LinkByName(l.Attrs().Name); err != nil {
				return err
			}
		}
		if err := inside.LinkSetUp(l); err != nil {
			return err
		}
	}
	if len(st.Egress) == 0 {
		return nil // the network's own subnet only: no route out
	}
	gw := net.ParseIP(st.Gateway)
	return inside.RouteReplace(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: gw})
}

// namespace opens the named network namespace at path, making it if it
// does not exist, without moving the caller.
func namespace(path string) (netns.NsHandle, error) {
	if ns, err := netns.GetFromPath(path); err == nil {
		var st unix.Statfs_t
		if unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC {
			return ns, nil
		}
		ns.Close() // a file left where a mount was: make it anew
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	_ = os.Remove(path)
	ns, err := netns.NewNamed(filepath.Base(path)) // moves this thread
	if serr := netns.Set(orig); serr != nil {
		// The thread stays in the new namespace; it must not be reused.
		runtime.Goexit()
	}
	if err != nil {
		return 0, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return ns, nil
}

// detach takes a removed container off its network.
func (d *Driver) detach(dir string) error {
	var st netState
	if err := readJSON(filepath.Join(dir, netFile), &st); err != nil {
		return nil // never on a network
	}
	d.netMu.Lock()
	defer d.netMu.Unlock()
	_ = netns.DeleteNamed(filepath.Base(st.Netns))
	if l, err := netlink.LinkByName(st.HostLink); err == nil {
		_ = netlink.LinkDel(l)
	}
	if err := os.Remove(filepath.Join(dir, netFile)); err != nil {
		return err
	}
	return d.refreshFilter()
}

// dropBridge deletes a removed network's bridge.
func (d *Driver) dropBridge(rec *netRecord) error {
	if rec.Bridge == "" {
		return nil
	}
	d.netMu.Lock()
	defer d.netMu.Unlock()
	if l, err := netlink.LinkByName(rec.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return err
		}
	}
	return d.refreshFilter()
}

// refreshFilter rewrites the driver's nftables table from the files of
// its networks and containers. The caller holds netMu.
func (d *Driver) refreshFilter() error {
	if networkTools() != "" {
		return nil
	}
	var nets []netRecord
	files, _ := filepath.Glob(filepath.Join(d.root, "networks", "*.json"))
	for _, f := range files {
		var rec netRecord
		if readJSON(f, &rec) == nil && rec.Bridge != "" {
			if _, err := netlink.LinkByName(rec.Bridge); err == nil {
				nets = append(nets, rec)
			}
		}
	}
	d.dockerOnce.Do(acceptInDockerChain)
	script := filterScript(d.tableName(), nets, d.netStates())
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: %v: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// filterScript is the nftables script that replaces the driver's table.
func filterScript(table string, nets []netRecord, members []netState) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\n", table, table)
	fmt.Fprintf(&b, "table bridge %s\ndelete table bridge %s\n", table, table)
	if len(nets) == 0 {
		return b.String()
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].Bridge < nets[j].Bridge })
	bridges := make([]string, len(nets))
	for i, n := range nets {
		bridges[i] = fmt.Sprintf("%q", n.Bridge)
	}
	set := "{ " + strings.Join(bridges, ", ") + " }"
	fmt.Fprintf(&b, "table inet %s {\n", table)
	fmt.Fprintf(&b, "\tchain input {\n\t\ttype filter hook input priority filter - 10; policy accept;\n")
	fmt.Fprintf(&b, "\t\tiifname %s drop comment \"the host's own addresses are not reachable from a container network\"\n\t}\n", set)
	fmt.Fprintf(&b, "\tchain forward {\n\t\ttype filter hook forward priority filter - 10; policy accept;\n")
	fmt.Fprintf(&b, "\t\toifname %s ct state established,related accept\n", set)
	for _, n := range nets {
		if !n.Isolated {
			fmt.Fprintf(&b, "\t\tiifname %q oifname %q accept comment \"network %s\"\n", n.Bridge, n.Bridge, n.Name)
		}
	}
	for _, m := range members {
		src, err := netip.ParsePrefix(m.Address)
		if err != nil || !slices.ContainsFunc(nets, func(n netRecord) bool { return n.Bridge == m.Bridge }) {
			continue
		}
		for _, r := range m.Egress {
			dst, err := r.Prefix()
			if err != nil || !dst.Addr().Is4() {
				continue
			}
			match := fmt.Sprintf("iifname %q ip saddr %s ip daddr %s", m.Bridge, src.Addr(), dst)
			if len(r.Ports) == 0 {
				fmt.Fprintf(&b, "\t\t%s accept\n", match)
				continue
			}
			ports := make([]string, len(r.Ports))
			for i, p := range r.Ports {
				ports[i] = fmt.Sprint(p)
			}
			list := "{ " + strings.Join(ports, ", ") + " }"
			fmt.Fprintf(&b, "\t\t%s tcp dport %s accept\n\t\t%s udp dport %s accept\n", match, list, match, list)
		}
	}
	fmt.Fprintf(&b, "\t\tiifname %s drop\n\t\toifname %s drop\n\t}\n", set, set)
	fmt.Fprintf(&b, "\tchain postrouting {\n\t\ttype nat hook postrouting priority srcnat - 10; policy accept;\n")
	for _, n := range nets {
		fmt.Fprintf(&b, "\t\tip saddr %s oifname != %q masquerade\n", n.Subnet, n.Bridge)
	}
	b.WriteString("\t}\n}\n")
	// A container's port carries its own address only.
	fmt.Fprintf(&b, "table bridge %s {\n\tchain prerouting {\n\t\ttype filter hook prerouting priority filter - 10; policy accept;\n", table)
	for _, m := range members {
		if src, err := netip.ParsePrefix(m.Address); err == nil {
			fmt.Fprintf(&b, "\t\tiifname %q ether type ip ip saddr != %s drop\n", m.HostLink, src.Addr())
			fmt.Fprintf(&b, "\t\tiifname %q ether type arp arp saddr ip != %s drop\n", m.HostLink, src.Addr())
			fmt.Fprintf(&b, "\t\tiifname %q ether type ip6 drop\n", m.HostLink)
		}
	}
	b.WriteString("\t}\n}\n")
	return b.String()
}

// acceptInDockerChain lets the containers' bridges through the Docker
// Engine's forward chain, whose policy is drop: a packet must pass every
// base chain on the hook, and the driver's own table (which runs first)
// is what filters. Without the engine's chain, nothing is needed.
func acceptInDockerChain() {
	if exec.Command("iptables", "-w", "-n", "-L", "DOCKER-USER").Run() != nil {
		return
	}
	for _, dir := range []string{"-i", "-o"} {
		rule := []string{"DOCKER-USER", dir, "oab+", "-j", "ACCEPT"}
		if exec.Command("iptables", append([]string{"-w", "-C"}, rule...)...).Run() != nil {
			_ = exec.Command("iptables", append([]string{"-w", "-I"}, rule...)...).Run()
		}
	}
}

// netnsOf is the namespace a container's main process joins, "" for one
// of its own with loopback only.
func netnsOf(dir string) string {
	var st netState
	if readJSON(filepath.Join(dir, netFile), &st) != nil {
		return ""
	}
	return st.Netns
}

// joinNamespace moves the calling (locked) thread into the namespace at path.
func joinNamespace(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("the container's network namespace: %w", err)
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWNET)
}

// Teardown removes what the driver set up on the host beyond its root:
// every container (forced), every network's bridge and namespace, and its
// filter table. For uninstalling a worker, and for tests.
func (d *Driver) Teardown(ctx context.Context) error {
	all, err := d.List(ctx, driver.Filter{})
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range all {
		if err := d.Remove(ctx, c.ID, driver.RemoveOptions{Force: true}); err != nil {
			errs = append(errs, err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(d.root, "networks", "*.json"))
	for _, f := range files {
		var rec netRecord
		if readJSON(f, &rec) == nil {
			_ = os.Remove(f)
			errs = append(errs, d.dropBridge(&rec))
		}
	}
	return errors.Join(errs...)
}
