package system_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

// Every goroutine the system starts ends when it stops: the orchestrator's
// loops and handlers, the workers' watchers and log follows.
func TestMain(m *testing.M) {
	local.MaybeRunShim()
	// A fake container's program is the workload, not the system's: it
	// outlives its worker by design, as a process would.
	//
	// nats.go's async publisher starts a goroutine that waits on the
	// connection's status channel, read after it starts: when the
	// publisher's reply subscription is cleaned up first (a reconnection,
	// as the bus-outage test makes), it reads a nil channel and waits for
	// ever. It is the library's, holds nothing of ours, and is ignored.
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/openagent/orchestrator/pkg/driver/fake.program.run.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats.go/jetstream.(*jetStream).resetPendingAcksOnReconnect"))
}

type env struct {
	t      *testing.T
	nats   *natstest.Server
	sys    *system.System
	c      *client.Client
	local  *local.Driver
	tokens string // the HTTP API's token store, kept across restarts
	hosts  map[string]*system.System
	tracer trace.TracerProvider // what the systems trace with; nil traces nothing
	ctx    context.Context
	cancel context.CancelFunc
}

// localRoot returns a local driver root that containers running as other
// users can traverse.
func localRoot(t *testing.T) string {
	root, err := os.MkdirTemp("", "openagent-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(root, 0o711)
	t.Cleanup(func() { os.RemoveAll(root) })
	return root
}

// newEnv starts NATS, the orchestrator with its HTTP API, and two workers:
// host-a with the fake and local drivers, host-b with the fake driver.
func newEnv(t *testing.T) *env {
	t.Helper()
	return newTracedEnv(t, nil)
}

// newTracedEnv is newEnv with every system tracing with tp.
func newTracedEnv(t *testing.T, tp trace.TracerProvider) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), tokens: t.TempDir(), hosts: map[string]*system.System{}, tracer: tp}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(e.cancel)
	var err error
	if e.local, err = local.New(localRoot(t)); err != nil {
		t.Fatal(err)
	}
	// Containers outlive their workers by design: remove the test's own,
	// and the networks' bridges and filters.
	t.Cleanup(func() { e.local.Teardown(context.Background()) })
	e.startOrchestrator()
	e.addWorker("host-a", fake.New(), e.local)
	e.addWorker("host-b", fake.New())
	e.waitHosts(2)
	return e
}

// newEnvWith starts NATS, an orchestrator configured by orch (its NATS
// URL and HTTP filled in), and one worker, host, with the given driver;
// the system stops when the test ends.
func newEnvWith(t *testing.T, orch system.Config, host string, drv driver.Driver) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), tokens: t.TempDir(), hosts: map[string]*system.System{}}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(e.cancel)
	orch.NATSURL, orch.Orchestrator, orch.HTTPAddr, orch.TokensDir = e.nats.ClientURL(), true, "127.0.0.1:0", e.tokens
	sys, err := system.Start(e.ctx, orch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	e.sys, e.c = sys, client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	e.addWorker(host, drv)
	e.waitHosts(1)
	return e
}

func (e *env) startOrchestrator() {
	e.t.Helper()
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, HTTPAddr: "127.0.0.1:0", TokensDir: e.tokens,
		TracerProvider: e.tracer})
	if err != nil {
		e.t.Fatal(err)
	}
	e.sys, e.c = sys, client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	e.t.Cleanup(func() { sys.Stop() })
}

func (e *env) addWorker(host string, drivers ...driver.Driver) *system.System {
	e.t.Helper()
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), TracerProvider: e.tracer})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sys.AddWorker(e.ctx, worker.Config{HostID: host, Drivers: drivers, Capacity: api.Resources{CPU: 4, Memory: 8192, Pids: 10000}, Heartbeat: 200 * time.Millisecond,
		SampleEvery: 200 * time.Millisecond}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sys.Stop() })
	e.hosts[host] = sys
	return sys
}

func (e *env) waitHosts(n int) {
	e.t.Helper()
	e.eventually("hosts registered", func() bool {
		hosts, err := e.c.Hosts(e.ctx)
		live := 0
		for _, h := range hosts {
			if h.Live {
				live++
			}
		}
		return err == nil && live >= n
	})
}

func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fakeSpec(args ...string) api.CreateRequest {
	spec := driver.DefaultConfig()
	spec.Image = "fake"
	spec.Command = append([]string{"fake"}, args...)
	return api.CreateRequest{Driver: "fake", Spec: spec}
}

func TestLifecycleOverHTTP(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--stdout", "hello", "--forever")
	req.Start, req.Name = true, "web"
	c, err := e.c.Create(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != api.StatusRunning || c.Host == "" || c.Name != "web" || c.StartedAt.IsZero() {
		t.Fatalf("created %+v; want running on a host", c)
	}
	res, err := e.c.Exec(e.ctx, "web", api.ExecRequest{Command: []string{"fake", "--stdout", "in exec", "--exit", "3"}})
	if err != nil || res.ExitCode != 3 || res.Stdout != "in exec\n" {
		t.Fatalf("exec: %+v, %v", res, err)
	}
	var lines []string
	for l, err := range e.c.Logs(e.ctx, c.ID, client.LogOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l.Line)
	}
	if len(lines) != 1 || lines[0] != "hello" {
		t.Fatalf("logs %q; want [hello]", lines)
	}
	if err := e.c.Remove(e.ctx, c.ID, false); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("remove of a running container: %v; want conflict", err)
	}
	st, err := e.c.Stop(e.ctx, c.ID, time.Second, false)
	if err != nil || st.Status != api.StatusStopped {
		t.Fatalf("stop: %+v, %v", st, err)
	}
	st, err = e.c.Start(e.ctx, c.ID)
	if err != nil || st.Status != api.StatusRunning {
		t.Fatalf("start again: %+v, %v", st, err)
	}
	if err := e.c.Remove(e.ctx, c.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Get(e.ctx, c.ID); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get after remove: %v; want not found", err)
	}
}

// removeAll force-removes every container of a driver.
func removeAll(d driver.Driver) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	list, _ := d.List(ctx, driver.Filter{})
	for _, c := range list {
		_ = d.Remove(ctx, c.ID, driver.RemoveOptions{Force: true})
	}
}

// A container removed behind the system's back (docker rm, say) is
// reported removed, with the reason, and is no longer listed.
func TestContainerRemovedOutsideIsReported(t *testing.T) {
	drv := fake.New()
	e := newEnvWith(t, system.Config{}, "host-x", drv)
	req := fakeSpec("--forever")
	req.Start = true
	c, err := e.c.Create(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if err := drv.Remove(e.ctx, c.ID, driver.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the container is reported removed", func() bool {
		_, err := e.c.Get(e.ctx, c.ID)
		return errors.Is(err, driver.ErrNotFound)
	})
	found := false
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: c.ID, Type: "container.removed"}) {
		var d events.RemovedData
		if err == nil && events.Data(ev, &d) == nil && strings.Contains(d.Reason, "outside the system") {
			found = true
		}
	}
	if !found {
		t.Fatal("no container.removed event saying it was removed outside the system")
	}
}
