package local_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/local"
)

// needNetworks is needCgroups plus what probing the network from inside
// takes.
func needNetworks(t *testing.T) {
	t.Helper()
	needCgroups(t)
	for _, cmd := range []string{"python3", "nft", "ip"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Fatalf("%s is needed (apt-get install python3-minimal nftables iproute2): %v", cmd, err)
		}
	}
}

// dial connects from inside a container and returns what the other end
// sent, or the name of the error.
func dial(t *testing.T, d *local.Driver, id, host string, port int, source string) string {
	t.Helper()
	src := "None"
	if source != "" {
		src = fmt.Sprintf("(%q, 0)", source)
	}
	res := execSh(t, d, id, fmt.Sprintf(`python3 -c 'import socket
try:
    c = socket.create_connection(("%s", %d), timeout=1, source_address=%s)
    print(c.recv(16).decode())
except Exception as e:
    print(type(e).__name__)'`, host, port, src))
	return strings.TrimSpace(string(res.Stdout)) + strings.TrimSpace(string(res.Stderr))
}

// hostListener listens on all of the host's addresses, as the control
// plane's ports would, and answers "host".
func hostListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("host"))
			c.Close()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// hostAddresses are 127.0.0.1 and the host's IPv4 addresses.
func hostAddresses(t *testing.T) []string {
	out := []string{"127.0.0.1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && !ip.IP.IsLoopback() && ip.IP.To4() != nil {
			out = append(out, ip.IP.String())
		}
	}
	return out
}

// server answers every connection on port with word.
func server(port int, word string) []string {
	return []string{"python3", "-c", fmt.Sprintf(`import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d))
s.listen()
while True:
    c, _ = s.accept()
    c.send(b"%s")
    c.close()`, port, word)}
}

// address is the container's IPv4 address on eth0, read from inside.
func address(t *testing.T, d *local.Driver, id string) string {
	t.Helper()
	res := execSh(t, d, id, "ip -4 -o addr show dev eth0")
	f := strings.Fields(string(res.Stdout))
	for i, w := range f {
		if w == "inet" && i+1 < len(f) {
			return strings.Split(f[i+1], "/")[0]
		}
	}
	t.Fatalf("no address on eth0 in %s: %q %q", id, res.Stdout, res.Stderr)
	return ""
}

func waitFor(t *testing.T, what string, try func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for got := try(); got != want; got = try() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %q, want %q", what, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func defaultRoutes(t *testing.T, d *local.Driver, id string) int {
	t.Helper()
	// Destination 00000000 is the default route.
	res := execSh(t, d, id, "awk 'NR > 1 && $2 == \"00000000\"' /proc/net/route | wc -l")
	var n int
	fmt.Sscan(string(res.Stdout), &n)
	return n
}

// Containers of a named network reach each other and nothing else: not the
// host's listeners (on loopback, on the host's addresses, on the bridge's
// gateway), not the outside (no default route).
func TestNamedNetworkReachesOnlyItsMembers(t *testing.T) {
	needNetworks(t)
	ctx := context.Background()
	d := newDriver(t)
	if _, err := d.CreateNetwork(ctx, "team", nil); err != nil {
		t.Fatal(err)
	}
	port := hostListener(t)
	a := driver.DefaultConfig()
	a.SessionID, a.Image, a.Network, a.Command = "net", local.Image, "team", server(7000, "member")
	run(t, d, "a", a)
	b := sh("exec sleep 600")
	b.Network = "team"
	run(t, d, "b", b)
	alone := sh("exec sleep 600")
	run(t, d, "alone", alone)

	addrA, addrB := address(t, d, "a"), address(t, d, "b")
	if addrA == addrB {
		t.Fatalf("both containers have %s", addrA)
	}
	waitFor(t, "b reaches a on the network", func() string { return dial(t, d, "b", addrA, 7000, "") }, "member")
	if got := dial(t, d, "alone", addrA, 7000, ""); got == "member" {
		t.Error("a container on no network reached a member of one")
	}
	gw := addrB[:strings.LastIndex(addrB, ".")] + ".1"
	for _, h := range append(hostAddresses(t), gw) {
		if got := dial(t, d, "b", h, port, ""); got == "host" {
			t.Errorf("a container on a network reached the host's listener on %s:%d", h, port)
		}
	}
	if n := defaultRoutes(t, d, "b"); n != 0 {
		t.Errorf("%d default routes inside; want none without egress rules", n)
	}

	if err := d.RemoveNetwork(ctx, "team"); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("removing a network in use: %v; want ErrConflict", err)
	}
	for _, id := range []string{"a", "b"} {
		if err := d.Remove(ctx, id, driver.RemoveOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	nets, _ := d.ListNetworks(ctx)
	if len(nets) != 1 || nets[0].ID == "" {
		t.Fatalf("networks: %+v", nets)
	}
	bridge := nets[0].ID
	if err := d.RemoveNetwork(ctx, "team"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("the bridge outlived its network: %s", out)
	}
}

// peer is a host of its own on this machine: a network namespace with a
// veth to the host, serving "allowed" and "denied" on two TCP ports and
// writing down the datagrams it gets on UDP port 7001 in the file udp.
// Egress tests reach it and nothing beyond this machine.
func peer(t *testing.T) (host, peerAddr, udp string) {
	t.Helper()
	name := fmt.Sprintf("oatest%d", os.Getpid()%100000)
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	sh("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	sh("link", "add", name+"h", "type", "veth", "peer", "name", "eth0", "netns", name)
	t.Cleanup(func() { exec.Command("ip", "link", "del", name+"h").Run() })
	host, peerAddr = "198.18.77.1", "198.18.77.2"
	sh("addr", "add", host+"/30", "dev", name+"h")
	sh("link", "set", name+"h", "up")
	sh("-n", name, "addr", "add", peerAddr+"/30", "dev", "eth0")
	sh("-n", name, "link", "set", "eth0", "up")
	sh("-n", name, "link", "set", "lo", "up")
	udp = t.TempDir() + "/udp"
	receiver := []string{"python3", "-c", fmt.Sprintf(`import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7001))
while True:
    b, a = s.recvfrom(64)
    with open(%q, "a") as f:
        f.write(a[0] + " " + b.decode() + "\n")`, udp)}
	for _, argv := range [][]string{server(7001, "allowed"), server(7002, "denied"), receiver} {
		cmd := exec.Command("ip", append([]string{"netns", "exec", name}, argv...)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	return host, peerAddr, udp
}

// sendUDP sends one datagram from inside a container.
func sendUDP(t *testing.T, d *local.Driver, id, host string, port int, source, word string) {
	t.Helper()
	execSh(t, d, id, fmt.Sprintf(`python3 -c 'import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("%s", 0))
s.sendto(b"%s", ("%s", %d))'`, source, word, host, port))
}

// Egress reaches what the rules list, by address or by the name the
// policy resolved, and nothing else: not another port of the same
// address, not the host's own addresses, not another container with
// egress rules, not with a borrowed source address.
func TestEgressReachesOnlyWhatIsListed(t *testing.T) {
	needNetworks(t)
	hostAddr, peerAddr, udp := peer(t)
	port := hostListener(t)
	d := newDriver(t)

	out := driver.DefaultConfig()
	out.SessionID, out.Image, out.Command = "net", local.Image, server(7100, "neighbour")
	out.Egress = []driver.EgressRule{{To: peerAddr, Ports: []int{7001}, Host: "allowed.example"}}
	run(t, d, "out", out)
	// A root container that may change its own addresses, as hostile
	// code with NET_ADMIN would.
	other := sh("exec sleep 600")
	other.Security.User, other.Security.CapDrop, other.Security.CapAdd = "0", nil, []string{"NET_ADMIN", "NET_RAW"}
	other.Egress = []driver.EgressRule{{To: "198.18.77.0/30", Ports: []int{7002}}}
	run(t, d, "other", other)

	waitFor(t, "the listed port, by the resolved name", func() string { return dial(t, d, "out", "allowed.example", 7001, "") }, "allowed")
	if got := dial(t, d, "out", peerAddr, 7002, ""); got == "denied" {
		t.Error("reached a port the rules do not list")
	}
	for _, h := range append(hostAddresses(t), hostAddr) {
		if got := dial(t, d, "out", h, port, ""); got == "host" {
			t.Errorf("a container with egress reached the host's listener on %s:%d", h, port)
		}
	}
	if n := defaultRoutes(t, d, "out"); n != 1 {
		t.Errorf("%d default routes inside; want one with egress rules", n)
	}
	waitFor(t, "the other container's own rule", func() string { return dial(t, d, "other", peerAddr, 7002, "") }, "denied")
	addrOut := address(t, d, "out")
	if got := dial(t, d, "other", addrOut, 7100, ""); got == "neighbour" {
		t.Error("a container reached another on the egress network")
	}
	if got := dial(t, d, "other", peerAddr, 7001, ""); got == "allowed" {
		t.Error("a container reached what only another's rules list")
	}
	// Borrow the first container's address: its rules must not follow.
	if res := execSh(t, d, "other", "ip addr add "+addrOut+"/32 dev eth0 && echo ok"); !strings.Contains(string(res.Stdout), "ok") {
		t.Fatalf("the root container could not add an address (the test needs NET_ADMIN inside): %q %q", res.Stdout, res.Stderr)
	}
	if got := dial(t, d, "other", peerAddr, 7001, addrOut); got == "allowed" {
		t.Error("a container with a borrowed source address reached what the owner's rules list")
	}
	// TCP fails anyway (the answers go to the address's owner); a
	// datagram needs no answer.
	sendUDP(t, d, "other", peerAddr, 7001, addrOut, "borrowed")
	waitFor(t, "the owner's datagram", func() string {
		sendUDP(t, d, "out", peerAddr, 7001, addrOut, "owner")
		b, _ := os.ReadFile(udp)
		return fmt.Sprint(strings.Contains(string(b), "owner"))
	}, "true")
	if b, _ := os.ReadFile(udp); strings.Contains(string(b), "borrowed") {
		t.Errorf("a datagram with a borrowed source address went out: %q", b)
	}
}
