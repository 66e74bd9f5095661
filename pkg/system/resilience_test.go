package system_test

import (
	"context"
	"sync/atomic"
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

// A runtime that fails for a moment is retried, and the container runs;
// one that keeps failing opens the driver's circuit breaker, which the
// host's record shows and which spares the runtime while it is open (the
// commands wait for its trial rather than using up their deliveries);
// once the runtime answers again, the trial closes it and every create
// sent meanwhile runs.
func TestDriverRetriesAndBreaker(t *testing.T) {
	var failing atomic.Int32 // creates still to fail; -1: all of them
	var calls atomic.Int32
	drv := fake.New(fake.WithHook(func(ctx context.Context, op, id string) error {
		if op != "create" {
			return nil
		}
		calls.Add(1)
		if n := failing.Load(); n < 0 || n > 0 && failing.CompareAndSwap(n, n-1) {
			return driver.Errorf("create", id, driver.ErrUnavailable, "the runtime does not answer")
		}
		return nil
	}))
	e := &env{t: t, nats: natstest.Start(t), tokens: t.TempDir(), hosts: map[string]*system.System{}}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(e.cancel)
	e.startOrchestrator()
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	const reset = 3 * time.Second
	if err := sys.AddWorker(e.ctx, worker.Config{HostID: "flaky", Drivers: []driver.Driver{drv}, Capacity: api.Resources{CPU: 4, Memory: 8192, Pids: 10000},
		Heartbeat:  100 * time.Millisecond,
		Resilience: worker.Resilience{MaxRetries: 3, BaseDelay: 10 * time.Millisecond, MaxDelay: 40 * time.Millisecond, FailureThreshold: 4, ResetTimeout: reset}}); err != nil {
		t.Fatal(err)
	}
	e.waitHosts(1)
	breaker := func() string {
		hosts, err := e.c.Hosts(e.ctx)
		if err != nil || len(hosts) != 1 || len(hosts[0].Drivers) != 1 {
			return ""
		}
		return hosts[0].Drivers[0].Breaker
	}
	e.eventually("the breaker reported closed", func() bool { return breaker() == "closed" })
	create := func(id string) {
		req := fakeSpec("--forever")
		req.Start, req.ContainerID = true, id
		ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
		defer cancel()
		_, _ = e.c.Create(ctx, req) // accepted; the outcome is awaited below
	}

	// Two failures, retried: the container runs, nothing failed.
	failing.Store(2)
	create("retried")
	e.waitStatus("retried", api.StatusRunning)
	if n := len(e.eventsOf("retried", events.ContainerFailed)); n != 0 || failing.Load() != 0 {
		t.Fatalf("%d failed events, %d failures left; want the two failures retried away", n, failing.Load())
	}

	// Failing on: four failures in a row open the breaker, which shows.
	failing.Store(-1)
	create("broken")
	e.eventually("the breaker open", func() bool { return breaker() == "open" })
	// While it is open the runtime is spared: another create does not reach it.
	before := calls.Load()
	create("waiting")
	time.Sleep(reset / 3)
	if n := calls.Load() - before; n != 0 {
		t.Fatalf("the runtime was called %d times while its breaker was open", n)
	}

	// The runtime is back: the trial closes the breaker, and both creates
	// sent meanwhile run, once each, nothing failed.
	failing.Store(0)
	for _, id := range []string{"broken", "waiting"} {
		e.waitStatus(id, api.StatusRunning)
		if n := len(e.eventsOf(id, events.ContainerFailed)); n != 0 {
			t.Fatalf("%s: %d failed events; want none", id, n)
		}
		if n := len(e.eventsOf(id, events.ContainerStarted)); n != 1 {
			t.Fatalf("%s started %d times", id, n)
		}
	}
	e.eventually("the breaker closed", func() bool { return breaker() == "closed" })
}
