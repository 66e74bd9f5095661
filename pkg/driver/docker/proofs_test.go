package docker_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
)

func start(t *testing.T, d *docker.Driver, id string, cfg driver.ContainerConfig) {
	t.Helper()
	ctx := context.Background()
	if _, err := d.Create(ctx, id, cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(context.Background(), id, driver.RemoveOptions{Force: true}) })
	if err := d.Start(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func shell(image, script string) driver.ContainerConfig {
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "proofs", image, []string{"/bin/sh", "-c", script}
	return cfg
}

func run(t *testing.T, d *docker.Driver, id, script string) *driver.ExecResult {
	t.Helper()
	res, err := d.Exec(context.Background(), id, driver.ExecOptions{Command: []string{"/bin/sh", "-c", script}, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestProofSecurity(t *testing.T) {
	d := newDriver(t)
	start(t, d, "sec", shell(docker.ImagePython, "exec sleep 600"))
	for name, tc := range map[string]struct{ script, want string }{
		"/tmp writable":       {"touch /tmp/probe && echo ok", "ok\n"},
		"chown refused":       {"touch /tmp/c && chown 0 /tmp/c 2>&1 || echo refused", "refused"},
		"raw socket refused":  {`python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)' 2>&1 || echo refused`, "refused"},
		"no new privileges":   {"grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t1\n"},
		"no capabilities":     {"grep CapEff /proc/self/status", "CapEff:\t0000000000000000\n"},
		"empty bounding set":  {"grep CapBnd /proc/self/status", "CapBnd:\t0000000000000000\n"},
		"init is docker-init": {"cat /proc/1/comm", "docker-init\n"},
	} {
		t.Run(name, func(t *testing.T) {
			res := run(t, d, "sec", tc.script)
			if !strings.Contains(string(res.Stdout), tc.want) {
				t.Fatalf("%s: stdout %q stderr %q; want %q", tc.script, res.Stdout, res.Stderr, tc.want)
			}
		})
	}
}

// docker inspect shows each setting as configured.
func TestProofInspectShowsSettings(t *testing.T) {
	d := newDriver(t)
	cfg := shell(docker.ImageShell, "exec sleep 600")
	cfg.Resources = driver.Resources{CPU: 0.25, MemoryMB: 96, DiskMB: 512, Pids: 42}
	cfg.Labels = map[string]string{"team": "ml"}
	cfg.Env = map[string]string{"GREETING": "hi"}
	cfg.WorkingDir = "/tmp"
	start(t, d, "inspected", cfg)
	in, err := d.Client().ContainerInspect(context.Background(), "oa-inspected")
	if err != nil {
		t.Fatal(err)
	}
	h := in.HostConfig
	checks := map[string]bool{
		"NanoCPUs 0.25":            h.NanoCPUs == 250_000_000,
		"Memory 96 MB":             h.Memory == 96<<20,
		"MemorySwap = Memory":      h.MemorySwap == h.Memory,
		"PidsLimit 42":             h.PidsLimit != nil && *h.PidsLimit == 42,
		"ReadonlyRootfs":           h.ReadonlyRootfs,
		"tmpfs /tmp":               h.Tmpfs["/tmp"] != "",
		"no-new-privileges":        slices.Contains(h.SecurityOpt, "no-new-privileges:true"),
		"CapDrop ALL":              slices.Equal(h.CapDrop, []string{"ALL"}),
		"Init":                     h.Init != nil && *h.Init,
		"User 65534:65534":         in.Config.User == "65534:65534",
		"WorkingDir":               in.Config.WorkingDir == "/tmp",
		"Env":                      slices.Contains(in.Config.Env, "GREETING=hi"),
		"label team":               in.Config.Labels["team"] == "ml",
		"label container id":       in.Config.Labels[docker.LabelContainerID] == "inspected",
		"label session id":         in.Config.Labels[docker.LabelSessionID] == "proofs",
		"name derived from the id": in.Name == "/oa-inspected",
	}
	for what, ok := range checks {
		if !ok {
			t.Errorf("inspect does not show %s", what)
		}
	}
	h2, err := d.Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h2.Enforcement {
		if e.Setting == "resources.diskMB" && !e.Enforced && !strings.Contains(e.How, "cannot cap") {
			t.Errorf("disk not enforced without saying why: %s", e.How)
		}
	}
}

// A create whose answer was lost is retried: the retry finds the first
// container by its derived name instead of making a second.
func TestCreateRetryAdopts(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	cfg := shell(docker.ImageShell, "exec sleep 600")
	if _, err := d.Create(ctx, "twice", cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(context.Background(), "twice", driver.RemoveOptions{Force: true}) })
	_, err := d.Create(ctx, "twice", cfg)
	if !errors.Is(err, driver.ErrAlreadyExists) {
		t.Fatalf("second create: %v; want ErrAlreadyExists (the worker then adopts)", err)
	}
	list, _ := d.List(ctx, driver.Filter{SessionID: "proofs"})
	if len(list) != 1 {
		t.Fatalf("%d containers; want 1", len(list))
	}
}

// A restarted driver (worker) finds running containers without restarting
// them, and reports a stop made before the restart as a stop.
func TestReattach(t *testing.T) {
	ctx := context.Background()
	d := newDriver(t)
	start(t, d, "keeps", shell(docker.ImageShell, "exec sleep 600"))
	start(t, d, "stopped", shell(docker.ImageShell, "exec sleep 600"))
	before, _ := d.Get(ctx, "keeps")
	if err := d.Stop(ctx, "stopped", driver.StopOptions{Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	again := newDriverLike(t, d)
	found, err := again.Reattach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*driver.Container{}
	for _, c := range found {
		got[c.ID] = c
	}
	if k := got["keeps"]; k == nil || k.Status != driver.StatusRunning || !k.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("keeps: %+v; want still running since %v", k, before.StartedAt)
	}
	if s := got["stopped"]; s == nil || s.Status != driver.StatusStopped {
		t.Fatalf("stopped: %+v; want stopped, remembered across the restart", s)
	}
}

// Address says where the host reaches a container, for the worker's http
// and tcp probes: its address on the network it is on, none on none.
func TestAddress(t *testing.T) {
	d := newDriver(t)
	ctx := context.Background()
	start(t, d, "no-net", shell(docker.ImageShell, "exec sleep 600"))
	if _, err := d.Address(ctx, "no-net"); !errors.Is(err, driver.ErrNotSupported) {
		t.Fatalf("the address of a container on network none: %v; want not supported", err)
	}
	cfg := shell(docker.ImagePython, `exec python3 -c "import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 8080))
s.listen()
while True:
    s.accept()[0].close()"`)
	cfg.Network = "bridge"
	start(t, d, "on-bridge", cfg)
	addr, err := d.Address(ctx, "on-bridge")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(addr, "8080"), time.Second)
		if err == nil {
			conn.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container's address %s does not take a connection on 8080: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
