package system_test

import (
	"context"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

// restartEnv is an orchestrator and one worker whose restarts wait 40ms,
// doubling up to 320ms.
func restartEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), tokens: t.TempDir(), hosts: map[string]*system.System{}}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(e.cancel)
	e.startOrchestrator()
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.AddWorker(e.ctx, worker.Config{HostID: "host-r", Drivers: []driver.Driver{fake.New()}, Capacity: api.Resources{CPU: 4, Memory: 8192, Pids: 10000},
		Heartbeat: 200 * time.Millisecond, RestartBackoff: 40 * time.Millisecond, RestartBackoffMax: 320 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	e.waitHosts(1)
	return e
}

func (e *env) started(id string) []events.StartedData {
	e.t.Helper()
	var out []events.StartedData
	for _, ev := range e.eventsOf(id, events.ContainerStarted) {
		var d events.StartedData
		if err := events.Data(ev, &d); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// The worker carries out restart policies, for every driver: a container
// that fails is started again (on-failure) with a backoff that doubles,
// each restart a started event counting it, the API showing the count; a
// stop holds it; one that succeeds is left (on-failure) or started again
// (always).
func TestRestartPolicies(t *testing.T) {
	e := restartEnv(t)
	run := func(policy driver.RestartPolicy, args ...string) *api.Container {
		req := fakeSpec(args...)
		req.Start, req.Spec.RestartPolicy = true, policy
		c, err := e.c.Create(e.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	failing := run(driver.RestartOnFailure, "--sleep", "20ms", "--exit", "3")
	e.eventually("four restarts", func() bool { return len(e.started(failing.ID)) >= 5 })
	runs := e.started(failing.ID)
	for i, d := range runs[:5] {
		if d.Restarts != i {
			t.Fatalf("run %d counts %d restarts; want %d", i, d.Restarts, i)
		}
	}
	// The waits double: 40, 80, 160, 320 ms, less the runs' 20ms.
	for i := 2; i < 5; i++ {
		gap, before := runs[i].StartedAt.Sub(runs[i-1].StartedAt), runs[i-1].StartedAt.Sub(runs[i-2].StartedAt)
		if gap < before {
			t.Fatalf("restart %d came %v after the one before, which came %v after its own: the backoff does not grow", i, gap, before)
		}
	}
	e.eventually("the API counts the restarts", func() bool {
		c, err := e.c.Get(e.ctx, failing.ID)
		return err == nil && c.Restarts >= 4
	})
	if _, err := e.c.Stop(e.ctx, failing.ID, time.Second, true); err != nil {
		t.Fatal(err)
	}
	n := len(e.started(failing.ID))
	time.Sleep(time.Second) // past the longest backoff
	if m := len(e.started(failing.ID)); m != n {
		t.Fatalf("a stopped container was restarted: %d runs, then %d", n, m)
	}

	ok := run(driver.RestartOnFailure, "--exit", "0")
	always := run(driver.RestartAlways, "--sleep", "20ms", "--exit", "0")
	e.eventually("an always container restarted", func() bool { return len(e.started(always.ID)) >= 3 })
	e.waitStatus(ok.ID, api.StatusExited)
	time.Sleep(300 * time.Millisecond)
	if n := len(e.started(ok.ID)); n != 1 {
		t.Fatalf("an on-failure container that succeeded ran %d times; want once", n)
	}
	if c, _ := e.c.Get(e.ctx, ok.ID); c.Restarts != 0 {
		t.Fatalf("it counts %d restarts", c.Restarts)
	}
}
