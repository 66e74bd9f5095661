package local_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/local"
)

// needRoot reports why the limits cannot bite here, if they cannot; CI
// runs as root on a machine with cgroups, where these tests must run.
func needCgroups(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("the local driver's enforcement tests need root, and CI runs as root")
		}
		t.Skip("enforcement needs root; run the tests as root to check it")
	}
	h, err := newDriver(t).Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(h.Version, "no cgroups") {
		t.Fatalf("no usable cgroups: %s", h.Version)
	}
}

func run(t *testing.T, d *local.Driver, id string, cfg driver.ContainerConfig) {
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

func sh(script string) driver.ContainerConfig {
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "limits", local.Image, []string{"/bin/sh", "-c", script}
	return cfg
}

func execSh(t *testing.T, d *local.Driver, id, script string) *driver.ExecResult {
	t.Helper()
	res, err := d.Exec(context.Background(), id, driver.ExecOptions{Command: []string{"/bin/sh", "-c", script}, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestCPUQuotaThrottles(t *testing.T) {
	needCgroups(t)
	d := newDriver(t)
	cfg := sh("while :; do :; done")
	cfg.Resources.CPU = 0.25
	run(t, d, "busy", cfg)
	time.Sleep(300 * time.Millisecond)
	// Samples a few CFS periods apart; the median, since one sample over
	// a short window on a loaded machine can catch a whole period's burst.
	var samples []float64
	for range 5 {
		time.Sleep(200 * time.Millisecond)
		st, err := d.Stats(context.Background(), "busy")
		if err != nil {
			t.Fatal(err)
		}
		samples = append(samples, st.CPUPercent)
	}
	slices.Sort(samples)
	// A busy loop takes a whole core when nothing holds it back.
	if median := samples[2]; median > 40 || median < 5 {
		t.Fatalf("a busy loop used a median %.1f%% of a core (samples %v); want about the 25%% quota", median, samples)
	}
}

func TestSecurityDefaultsHold(t *testing.T) {
	needCgroups(t)
	d := newDriver(t)
	volSrc := t.TempDir()
	cfg := sh("exec sleep 600")
	cfg.Volumes = []driver.VolumeMount{
		{Source: volSrc, Target: "/srv/openagent-ro", ReadOnly: true},
	}
	run(t, d, "sec", cfg)
	for name, tc := range map[string]struct {
		script, want string
	}{
		"no supplementary groups":   {"id -G", "65534\n"},
		"/tmp writable":             {"touch /tmp/probe && echo ok", "ok\n"},
		"work dir writable":         {"cd && touch probe && echo ok", "ok\n"},
		"read-only volume":          {"touch /srv/openagent-ro/probe 2>&1 || echo refused", "refused"},
		"no new privileges":         {"grep NoNewPrivs /proc/self/status", "NoNewPrivs:\t1\n"},
		"empty bounding set":        {"grep CapBnd /proc/self/status", "CapBnd:\t0000000000000000\n"},
		"no effective capability":   {"grep CapEff /proc/self/status", "CapEff:\t0000000000000000\n"},
		"environment is not leaked": {"env | grep -c GOPATH || true", "0\n"},
	} {
		t.Run(name, func(t *testing.T) {
			res := execSh(t, d, "sec", tc.script)
			if !strings.Contains(string(res.Stdout), tc.want) {
				t.Fatalf("%s: stdout %q stderr %q; want %q", tc.script, res.Stdout, res.Stderr, tc.want)
			}
		})
	}
	if _, err := os.Stat("/etc/openagent-probe"); err == nil {
		os.Remove("/etc/openagent-probe")
		t.Fatal("the container wrote to the host's /etc")
	}
	if entries, _ := os.ReadDir(volSrc); len(entries) != 0 {
		t.Fatal("the container wrote to a read-only volume")
	}
}

func TestExecTimeoutKillsTree(t *testing.T) {
	d := newDriver(t)
	run(t, d, "tree", sh("exec sleep 600"))
	begin := time.Now()
	res, err := d.Exec(context.Background(), "tree", driver.ExecOptions{
		// A child in a session of its own (setsid, Python's
		// start_new_session) is no longer in the exec's process group: the
		// exec's cgroup is what ends it.
		Command: []string{"/bin/sh", "-c", "echo started; (sleep 3; echo alive) & setsid sleep 30 & python3 -c 'import subprocess; subprocess.Popen([\"sleep\", \"31\"], start_new_session=True)'; sleep 3; echo finished"},
		Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || string(res.Stdout) != "started\n" || time.Since(begin) > 2500*time.Millisecond {
		t.Fatalf("got %+v after %v; want timed out with the output so far, well before the children would finish", res, time.Since(begin))
	}
	// The exec'd shell and the child it put in the background are gone:
	// the container holds its main process only.
	if os.Geteuid() == 0 {
		// Killed processes linger a moment until reaped; the background
		// sleep, had it survived, would live until 3s after the start.
		var pids uint64
		for time.Since(begin) < 2500*time.Millisecond {
			st, err := d.Stats(context.Background(), "tree")
			if err != nil {
				t.Fatal(err)
			}
			if pids = st.Pids; pids == 1 {
				return
			}
		}
		t.Fatalf("%d processes in the container after the timeout; want only the main one", pids)
	}
}

// A new driver on the same root, as after a worker restart, finds the
// running container without restarting it, and the output it wrote while
// nobody watched.
func TestReattachAfterWorkerRestart(t *testing.T) {
	ctx := context.Background()
	first := newDriver(t)
	run(t, first, "survivor", sh("echo before; sleep 1; echo during; exec sleep 600"))
	run(t, first, "quitter", sh("sleep 1; exit 4"))
	before, _ := first.Get(ctx, "survivor")

	second, err := local.New(first.Root())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	found, err := second.Reattach(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*driver.Container{}
	for _, c := range found {
		got[c.ID] = c
	}
	s, q := got["survivor"], got["quitter"]
	if s == nil || s.Status != driver.StatusRunning || s.RuntimeID != before.RuntimeID || !s.StartedAt.Equal(before.StartedAt) {
		t.Fatalf("survivor %+v; want still running as pid %s, not restarted", s, before.RuntimeID)
	}
	if q == nil || q.Status != driver.StatusExited || q.ExitCode != 4 {
		t.Fatalf("quitter %+v; want exited 4 while the worker was away", q)
	}
	seq, _ := second.Logs(ctx, "survivor", driver.LogOptions{})
	var lines []string
	for e := range seq {
		lines = append(lines, e.Line)
	}
	if strings.Join(lines, ",") != "before,during" {
		t.Fatalf("logs %q; want before and during", lines)
	}
}

func TestRefusesWhatItCannotDo(t *testing.T) {
	d := newDriver(t)
	for name, tc := range map[string]struct {
		mutate func(*driver.ContainerConfig)
		kind   error
		field  string
	}{
		"image":   {func(c *driver.ContainerConfig) { c.Image = "python:3" }, driver.ErrNotSupported, "image"},
		"ports":   {func(c *driver.ContainerConfig) { c.Ports = []driver.PortMapping{{ContainerPort: 80}} }, driver.ErrNotSupported, "ports"},
		"restart": {func(c *driver.ContainerConfig) { c.RestartPolicy = driver.RestartAlways }, driver.ErrNotSupported, "restartPolicy"},
		"command": {func(c *driver.ContainerConfig) { c.Command = nil }, driver.ErrInvalid, "command"},
		"volume": {func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountVolume, Source: "nope", Target: "/v"}}
		}, driver.ErrNotFound, "volumes[0]"},
		"network": {func(c *driver.ContainerConfig) { c.Network = "nope" }, driver.ErrNotFound, "network"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := sh("true")
			tc.mutate(&cfg)
			_, err := d.Create(context.Background(), "refused-"+name, cfg)
			if !errors.Is(err, tc.kind) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v; want %v naming %s", err, tc.kind, tc.field)
			}
		})
	}
	// A command that does not exist fails the start, and the container
	// stays created.
	if _, err := d.Create(context.Background(), "missing", func() driver.ContainerConfig {
		c := sh("")
		c.Command = []string{"/no/such/binary"}
		return c
	}()); err != nil {
		t.Fatal(err)
	}
	err := d.Start(context.Background(), "missing")
	if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "/no/such/binary") {
		t.Fatalf("start of a missing binary: %v; want ErrInvalid naming it", err)
	}
	if c, _ := d.Get(context.Background(), "missing"); c.Status != driver.StatusCreated {
		t.Fatalf("status %v after a failed start; want created", c.Status)
	}
}

func TestHealthReportsEnforcement(t *testing.T) {
	h, err := newDriver(t).Health(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]driver.Enforcement{}
	for _, e := range h.Enforcement {
		got[e.Setting] = e
	}
	for _, s := range driver.Settings {
		if _, ok := got[s]; !ok {
			t.Errorf("no word on %s", s)
		}
	}
	// Never pretended: these cannot hold for host processes.
	for _, s := range []string{"resources.diskMB", "ports"} {
		if got[s].Enforced {
			t.Errorf("%s claimed enforced: %s", s, got[s].How)
		}
	}
	if os.Geteuid() == 0 {
		for _, s := range []string{"resources.cpu", "resources.memoryMB", "resources.pids", "security.readOnlyRoot", "security.user"} {
			if !got[s].Enforced {
				t.Errorf("%s not enforced as root: %s", s, got[s].How)
			}
		}
	}
}

// A root directory its containers' user cannot reach is refused at create,
// naming the directory, rather than failing at start.
func TestRefusesUnreachableRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root runs containers as other users")
	}
	private := t.TempDir() // 0700
	d, err := local.New(private + "/state")
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.Create(context.Background(), "c", sh("true"))
	if !errors.Is(err, driver.ErrPermission) || !strings.Contains(err.Error(), "not searchable") {
		t.Fatalf("got %v; want ErrPermission naming the directory", err)
	}
}

// A container's network is its own loopback: the host's listeners, on
// loopback or on its addresses, are unreachable from inside, there is no
// route out, and the container's own processes reach each other.
func TestNetworkIsLoopbackOnly(t *testing.T) {
	needCgroups(t)
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatalf("python3 is needed to probe the network from inside (apt-get install python3-minimal): %v", err)
	}
	port := hostListener(t) // as the control plane's ports would be
	d := newDriver(t)
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "net", local.Image, server(7777, "inside")
	cfg.Network = local.NetworkNone // the default, named as Docker names it
	run(t, d, "net", cfg)
	waitFor(t, "an exec reaches the container's own loopback server", func() string { return dial(t, d, "net", "127.0.0.1", 7777, "") }, "inside")
	for _, h := range hostAddresses(t) {
		if got := dial(t, d, "net", h, port, ""); got == "host" {
			t.Errorf("the container reached the host's listener on %s:%d", h, port)
		}
	}
	if res := execSh(t, d, "net", "grep -c . /proc/net/route"); strings.TrimSpace(string(res.Stdout)) != "1" {
		t.Errorf("routes inside: %q; want none (the header line only)", res.Stdout)
	}
}

// What a container sees of the host is what programs need, read-only:
// not the host's users, home directories, /root, /srv, /var, the driver's
// state or other containers, nor a file the host keeps elsewhere.
func TestFilesystemViewIsMinimal(t *testing.T) {
	needCgroups(t)
	secretDir, err := os.MkdirTemp("/var/tmp", "openagent-host-only-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(secretDir)
	secret := filepath.Join(secretDir, "project.txt")
	if err := os.WriteFile(secret, []byte("host only"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t)
	run(t, d, "view", sh("exec sleep 600"))
	run(t, d, "other", sh("exec sleep 601"))
	hostUsers, _ := os.ReadFile("/etc/passwd")
	for name, tc := range map[string]struct{ script, want string }{
		"programs run":                 {"python3 -c 'print(6*7)'", "42\n"},
		"the host's file is not there": {"cat " + secret + " 2>/dev/null || echo absent", "absent\n"},
		"no /home, /root, /srv, /var":  {"for d in /home /root /srv /var /opt; do [ -e $d ] && echo $d; done; echo done", "done\n"},
		"/dev/null takes writes":       {"echo x > /dev/null && echo ok", "ok\n"},
		"/usr is read-only":            {"touch /usr/probe 2>/dev/null || echo refused", "refused\n"},
		"the work dir is writable":     {"cd && echo hi > f && cat f", "hi\n"},
		"no host process listed":       {"ls /proc/1 >/dev/null 2>&1 && echo listed || echo hidden", "hidden\n"},
	} {
		t.Run(name, func(t *testing.T) {
			res := execSh(t, d, "view", tc.script)
			if string(res.Stdout) != tc.want {
				t.Fatalf("%s: stdout %q stderr %q; want %q", tc.script, res.Stdout, res.Stderr, tc.want)
			}
		})
	}
	inside := string(execSh(t, d, "view", "cat /etc/passwd").Stdout)
	for _, line := range strings.Split(string(hostUsers), "\n") {
		if name, _, ok := strings.Cut(line, ":"); ok && name != "root" && name != "nobody" && strings.Contains(inside, name+":") {
			t.Errorf("the host's user %s is in the container's /etc/passwd", name)
		}
	}
	// Each container has a PID namespace of its own: another container of
	// the same user is not listed, so neither its processes nor its files
	// through /proc/PID/root are within reach.
	procs := string(execSh(t, d, "view", `for p in /proc/[0-9]*; do tr '\0' ' ' < $p/cmdline; echo; done`).Stdout)
	if !strings.Contains(procs, "sleep 600") || strings.Contains(procs, "sleep 601") {
		t.Errorf("processes listed inside: %q; want the container's own (sleep 600) and not the other's (sleep 601)", procs)
	}
	if pid := strings.TrimSpace(string(execSh(t, d, "view", "echo $$").Stdout)); len(pid) > 3 {
		t.Errorf("an exec's pid is %s: not counted in a namespace of the container's own", pid)
	}
	otherWork := string(execSh(t, d, "other", "cd && pwd").Stdout)
	if res := execSh(t, d, "view", "ls "+strings.TrimSpace(otherWork)+" 2>/dev/null || echo absent"); string(res.Stdout) != "absent\n" {
		t.Errorf("another container's directory is visible: %q", res.Stdout)
	}
}

// A host path is mounted as it was resolved and checked: swapped for a
// symbolic link after the container was made (to /etc, say), it is
// refused at start, not followed.
func TestVolumeSwappedForALinkIsRefused(t *testing.T) {
	needCgroups(t)
	d := newDriver(t)
	parent := t.TempDir()
	src := filepath.Join(parent, "data")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := sh("cat /mnt/shadow 2>/dev/null && echo read; exec sleep 600")
	cfg.Volumes = []driver.VolumeMount{{Source: src, Target: "/mnt"}}
	ctx := context.Background()
	if _, err := d.Create(ctx, "swap", cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Remove(context.Background(), "swap", driver.RemoveOptions{Force: true}) })
	for _, swap := range []struct{ name, link string }{{"the source", src}, {"a parent", parent}} {
		t.Run(swap.name, func(t *testing.T) {
			moved := swap.link + ".real"
			if err := os.Rename(swap.link, moved); err != nil {
				t.Fatal(err)
			}
			defer os.Rename(moved, swap.link)
			target := "/etc"
			if swap.link == parent {
				target = moved // the path still leads to a directory, through a link
			}
			if err := os.Symlink(target, swap.link); err != nil {
				t.Fatal(err)
			}
			defer os.Remove(swap.link)
			err := d.Start(ctx, "swap")
			if err == nil || !strings.Contains(err.Error(), "symbolic link") {
				t.Fatalf("start after the swap: %v; want a refusal naming the symbolic link", err)
			}
		})
	}
	if err := d.Start(ctx, "swap"); err != nil {
		t.Fatalf("start with the source as it was checked: %v", err)
	}
}
