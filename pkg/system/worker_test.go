package system_test

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

func localSpec(script string) api.CreateRequest {
	spec := driver.DefaultConfig()
	spec.Image, spec.Command = local.Image, []string{"/bin/sh", "-c", script}
	return api.CreateRequest{Driver: "local", Start: true, Spec: spec}
}

// A restarted worker re-adopts its running local container: same process,
// no second start in the audit log; and it reports the container that
// exited while it was away.
func TestWorkerRestartReadopts(t *testing.T) {
	e := newEnv(t)
	req := localSpec("echo up; exec sleep 600")
	req.ContainerID = "adoptee"
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	quitter := localSpec("sleep 1; exit 5")
	quitter.ContainerID = "quitter"
	if _, err := e.c.Create(e.ctx, quitter); err != nil {
		t.Fatal(err)
	}
	before, err := e.local.Get(e.ctx, "adoptee")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.hosts["host-a"].Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the quitter exits meanwhile
	again, err := local.New(e.local.Root())
	if err != nil {
		t.Fatal(err)
	}
	e.addWorker("host-a", fake.New(), again)

	c := e.waitStatus("quitter", api.StatusExited)
	if c.ExitCode != 5 {
		t.Fatalf("quitter exit code %d; want 5", c.ExitCode)
	}
	after, err := again.Get(e.ctx, "adoptee")
	if err != nil {
		t.Fatal(err)
	}
	if after.Status != driver.StatusRunning || after.RuntimeID != before.RuntimeID {
		t.Fatalf("adoptee %v pid %s; want still running as pid %s", after.Status, after.RuntimeID, before.RuntimeID)
	}
	if c, _ := e.c.Get(e.ctx, "adoptee"); c.Status != api.StatusRunning {
		t.Fatalf("orchestrator says %s; want running", c.Status)
	}
	started := 0
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: "adoptee"}) {
		if err != nil {
			t.Fatal(err)
		}
		if ev.Type() == events.ContainerStarted {
			started++
		}
	}
	if started != 1 {
		t.Fatalf("%d started events for the adopted container; want 1", started)
	}
	// The adopted container is watched again: its end is noticed.
	if _, err := e.c.Stop(e.ctx, "adoptee", time.Second, false); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("adoptee", api.StatusStopped)
}

// A container that exits by itself is reported with its exit code; one
// that runs out of memory is reported as OOM-killed.
func TestExitsAreNoticed(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--sleep", "200ms", "--exit", "9")
	req.ContainerID, req.Start = "short", true
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	if c := e.waitStatus("short", api.StatusExited); c.ExitCode != 9 {
		t.Fatalf("exit code %d; want 9", c.ExitCode)
	}
}

// After the NATS server restarts, everything carries on: the workers'
// command consumers, kept in memory by the server, are created again.
func TestNATSRestart(t *testing.T) {
	e := newEnv(t)
	before := fakeSpec("--forever")
	before.ContainerID, before.Start = "before", true
	if _, err := e.c.Create(e.ctx, before); err != nil {
		t.Fatal(err)
	}
	e.nats.Restart()
	after := fakeSpec("--forever")
	after.ContainerID, after.Start = "after", true
	deadline := time.Now().Add(45 * time.Second)
	for {
		c, err := e.c.Create(e.ctx, after)
		if err == nil && c.Status == api.StatusRunning {
			break
		}
		if err == nil {
			e.waitStatus("after", api.StatusRunning)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no container runs after the restart: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if c, _ := e.c.Get(e.ctx, "before"); c == nil || c.Status != api.StatusRunning {
		t.Fatalf("the container from before the restart: %+v", c)
	}
}

// The reaper removes containers the orchestrator never knew, with an event
// saying why; in dry-run mode it only logs.
func TestReaper(t *testing.T) {
	e := newEnv(t)
	reaped, dry := fake.New(), fake.New()
	for host, d := range map[string]*fake.Driver{"reaping": reaped, "dry": dry} {
		sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sys.Stop() })
		if err := sys.AddWorker(e.ctx, worker.Config{HostID: host, Drivers: []driver.Driver{d}, Capacity: api.Resources{CPU: 1, Memory: 1024, Pids: 100},
			Heartbeat: 200 * time.Millisecond, ReapAfter: 300 * time.Millisecond, ReapDryRun: host == "dry"}); err != nil {
			t.Fatal(err)
		}
	}
	e.waitHosts(4)
	stray := driver.DefaultConfig()
	stray.SessionID, stray.Image, stray.Labels = "s", "fake", map[string]string{worker.LabelContainerID: "stray"}
	for _, d := range []*fake.Driver{reaped, dry} {
		if _, err := d.Create(e.ctx, "stray", stray); err != nil {
			t.Fatal(err)
		}
	}
	// A container the orchestrator knows is left alone.
	known := fakeSpec("--forever")
	known.ContainerID, known.Start, known.HostID = "known", true, "reaping"
	if _, err := e.c.Create(e.ctx, known); err != nil {
		t.Fatal(err)
	}
	e.eventually("the stray reaped", func() bool {
		_, err := reaped.Get(e.ctx, "stray")
		return errors.Is(err, driver.ErrNotFound)
	})
	// The worker's event reaches the audit log through the orchestrator's
	// relay, a moment after the removal.
	var reason string
	e.eventually("the reaping reported", func() bool {
		for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: "stray"}) {
			var d struct{ Reason string }
			if err == nil && ev.Type() == events.ContainerRemoved && events.Data(ev, &d) == nil {
				reason = d.Reason
			}
		}
		return reason != ""
	})
	if !strings.HasPrefix(reason, "reaped: unknown to the orchestrator") {
		t.Fatalf("removal event reason %q", reason)
	}
	time.Sleep(time.Second)
	if _, err := dry.Get(e.ctx, "stray"); err != nil {
		t.Fatalf("the dry run removed the stray: %v", err)
	}
	if _, err := reaped.Get(e.ctx, "known"); err != nil {
		t.Fatalf("the reaper removed a known container: %v", err)
	}
}

// A worker whose state was wiped finds no record of its containers: the
// local driver stops the processes it can no longer follow and reports
// them lost, and whatever else the orchestrator knew on the host (here a
// fake container, whose driver kept it in memory) is lost too. Nothing is
// shown running that no driver has.
func TestWorkerStateWiped(t *testing.T) {
	e := newEnv(t)
	req := localSpec("exec sleep 600")
	req.ContainerID, req.HostID = "orphan", "host-a"
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	mem := fakeSpec("--forever")
	mem.ContainerID, mem.HostID, mem.Start = "forgotten", "host-a", true
	if _, err := e.c.Create(e.ctx, mem); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("orphan", api.StatusRunning)
	e.waitStatus("forgotten", api.StatusRunning)
	ct, err := e.local.Get(e.ctx, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(ct.RuntimeID)
	if err := e.hosts["host-a"].Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(e.local.Root(), "containers")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(e.local.Root(), "containers"), 0o711); err != nil {
		t.Fatal(err)
	}
	again, err := local.New(e.local.Root())
	if err != nil {
		t.Fatal(err)
	}
	e.addWorker("host-a", fake.New(), again)

	for _, id := range []string{"orphan", "forgotten"} {
		c := e.waitStatus(id, api.StatusLost)
		if c.Error == nil || c.Error.Message == "" {
			t.Fatalf("%s lost without a reason: %+v", id, c)
		}
		if n := len(e.eventsOf(id, events.ContainerLost)); n != 1 {
			t.Fatalf("%d lost events for %s; want 1", n, id)
		}
	}
	e.eventually("the orphan's process killed", func() bool {
		return pid > 0 && syscall.Kill(pid, 0) != nil
	})
	hosts, err := e.c.Hosts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if h.ID == "host-a" && (h.Allocated.CPU != 0 || h.Containers != 0) {
			t.Fatalf("host-a still holds %+v for %d containers", h.Allocated, h.Containers)
		}
	}
}
