package system_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

// lossEnv is an orchestrator with a short liveness TTL and grace, and
// hosts whose workers can be stopped and started again on the same
// runtime (a fake driver each, whose containers outlive their worker).
type lossEnv struct {
	*env
	drivers map[string]*fake.Driver
}

const (
	lossTTL   = 600 * time.Millisecond
	lossGrace = 600 * time.Millisecond
)

func newLossEnv(t *testing.T, hosts ...string) *lossEnv {
	return newLossEnvWith(t, lossTTL, lossGrace, hosts...)
}

func newLossEnvWith(t *testing.T, ttl, grace time.Duration, hosts ...string) *lossEnv {
	t.Helper()
	e := &lossEnv{env: &env{t: t, nats: natstest.Start(t), tokens: t.TempDir(), hosts: map[string]*system.System{}}, drivers: map[string]*fake.Driver{}}
	e.ctx, e.cancel = context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(e.cancel)
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, HTTPAddr: "127.0.0.1:0", TokensDir: e.tokens,
		HostTTL: ttl, HostGrace: grace})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	e.sys, e.c = sys, client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	for _, h := range hosts {
		e.drivers[h] = fake.New()
		e.startHost(h)
	}
	e.waitHosts(len(hosts))
	return e
}

// startHost starts a host's worker on its runtime.
func (e *lossEnv) startHost(h string) {
	e.t.Helper()
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL()})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := sys.AddWorker(e.ctx, worker.Config{HostID: h, Drivers: []driver.Driver{e.drivers[h]}, Capacity: api.Resources{CPU: 4, Memory: 8192, Pids: 10000},
		Heartbeat: 100 * time.Millisecond}); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sys.Stop() })
	e.hosts[h] = sys
}

// stopHost stops a host's worker; its containers go on running.
func (e *lossEnv) stopHost(h string) { e.hosts[h].Stop() }

func (e *lossEnv) run(n int, policy string) []*api.Container {
	e.t.Helper()
	var out []*api.Container
	for range n {
		req := fakeSpec("--forever")
		req.Start, req.Reschedule = true, &api.ReschedulePolicy{Policy: policy}
		c, err := e.c.Create(e.ctx, req)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// running counts, per request, the containers running for it.
func (e *lossEnv) running() map[string][]string {
	e.t.Helper()
	list, err := e.c.List(e.ctx, client.ListOptions{All: true})
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string][]string{}
	for _, c := range list {
		if c.Status == api.StatusRunning {
			out[c.RequestID] = append(out[c.RequestID], c.ID)
		}
	}
	return out
}

// A host that stops reporting is lost after its TTL and grace: each of its
// containers is lost and, by its policy, replaced once on the other host.
// When the host comes back, its worker removes its stale copies, saying
// why, and every request has one container running.
func TestHostLossReschedulesOnce(t *testing.T) {
	e := newLossEnv(t, "host-a", "host-b")
	cs := e.run(4, api.RescheduleAlways)
	never := e.run(1, api.RescheduleNever)[0]
	byHost := map[string][]*api.Container{}
	for _, c := range append(cs, never) {
		byHost[c.Host] = append(byHost[c.Host], c)
	}
	lostHost := cs[0].Host // binpack: all on one host
	if len(byHost[lostHost]) != 5 {
		t.Fatalf("placed %v; want all five on one host", byHost)
	}
	other := "host-a"
	if lostHost == other {
		other = "host-b"
	}
	stopped := time.Now()
	e.stopHost(lostHost)
	for _, c := range cs {
		e.eventually("container "+c.ID+" replaced", func() bool {
			got, err := e.c.Get(e.ctx, c.ID)
			return err == nil && got.Status == api.StatusLost && got.ReplacedBy != ""
		})
	}
	t.Logf("all replaced %v after the host stopped (ttl %v, grace %v)", time.Since(stopped).Round(time.Millisecond), lossTTL, lossGrace)
	for _, c := range cs {
		got, _ := e.c.Get(e.ctx, c.ID)
		rep := e.waitStatus(got.ReplacedBy, api.StatusRunning)
		if rep.Host != other || rep.Replaces != c.ID || rep.RequestID != c.RequestID {
			t.Fatalf("the replacement of %s: %+v; want it on %s, naming the original and its request", c.ID, rep, other)
		}
		if n := len(e.eventsOf(c.ID, events.ContainerRescheduled)); n != 1 {
			t.Fatalf("%s rescheduled %d times, want once", c.ID, n)
		}
	}
	if got, _ := e.c.Get(e.ctx, never.ID); got.Status != api.StatusLost || got.ReplacedBy != "" {
		t.Fatalf("a container whose policy is never: %s replaced by %q; want lost, not replaced", got.Status, got.ReplacedBy)
	}
	if hosts, _ := e.c.Hosts(e.ctx); !lostIn(hosts, lostHost) {
		t.Fatalf("hosts %+v; want %s lost", hosts, lostHost)
	}

	// The host returns: its worker removes the stale copies.
	e.startHost(lostHost)
	for _, c := range append(cs, never) {
		e.eventually("the stale copy "+c.ID+" removed", func() bool {
			for _, r := range e.eventsOf(c.ID, events.ContainerRemoved) {
				var d events.RemovedData
				if events.Data(r, &d) == nil && strings.Contains(d.Reason, "stale copy") {
					return true
				}
			}
			return false
		})
		if _, err := e.drivers[lostHost].Get(e.ctx, c.ID); err == nil {
			t.Fatalf("the stale copy %s is still on %s's runtime", c.ID, lostHost)
		}
	}
	for req, ids := range e.running() {
		if len(ids) != 1 {
			t.Fatalf("request %s has %d containers running: %v", req, len(ids), ids)
		}
	}
	if len(e.running()) != 4 {
		t.Fatalf("running %v; want the four replacements", e.running())
	}
}

func lostIn(hosts []api.Host, id string) bool {
	for _, h := range hosts {
		if h.ID == id {
			return !h.LostAt.IsZero() && !h.Live
		}
	}
	return false
}

// A host that goes away and comes back twenty times: every container is
// replaced at most once per loss, and in the end every request has one
// container running.
func TestHostFlapsLeaveNoDuplicates(t *testing.T) {
	e := newLossEnv(t, "host-a", "host-b")
	cs := e.run(3, api.RescheduleAlways)
	for i := range 20 {
		// The host holding the containers now goes away, and comes back
		// once they are replaced.
		held := map[string]int{}
		for _, c := range e.running() {
			got, _ := e.c.Get(e.ctx, c[0])
			held[got.Host]++
		}
		var h string
		for host := range held {
			h = host
		}
		e.stopHost(h)
		e.eventually("the containers moved off "+h, func() bool {
			for _, ids := range e.running() {
				got, _ := e.c.Get(e.ctx, ids[0])
				if got.Host == h {
					return false
				}
			}
			return len(e.running()) == len(cs)
		})
		e.startHost(h)
		e.eventually("host "+h+" back", func() bool {
			hosts, _ := e.c.Hosts(e.ctx)
			return !lostIn(hosts, h)
		})
		t.Logf("flap %d: %s lost and back", i+1, h)
	}
	// Over the audit log: no container replaced twice, no replacement
	// placed twice.
	rescheduled, placed := map[string]int{}, map[string]int{}
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "container."}) {
		if err != nil {
			t.Fatal(err)
		}
		switch ev.Type() {
		case events.ContainerRescheduled:
			rescheduled[events.Ext(ev, events.ExtContainerID)]++
		case events.ContainerPlaced:
			placed[events.Ext(ev, events.ExtContainerID)]++
		}
	}
	for id, n := range rescheduled {
		if n != 1 {
			t.Fatalf("container %s rescheduled %d times", id, n)
		}
	}
	for id, n := range placed {
		if n != 1 {
			t.Fatalf("container %s placed %d times", id, n)
		}
	}
	if len(rescheduled) < 20 {
		t.Fatalf("%d containers rescheduled over 20 flaps; want one per container per flap", len(rescheduled))
	}
	running := e.running()
	if len(running) != len(cs) {
		t.Fatalf("after the flaps, %d requests have containers running, want %d: %v", len(running), len(cs), running)
	}
	for req, ids := range running {
		if len(ids) != 1 {
			t.Fatalf("request %s has %d containers running: %v", req, len(ids), ids)
		}
	}
}

// The control plane's own outage is not the hosts' fault: after the bus
// was down for longer than the hosts' TTL, no host is lost and creates
// sent the moment it is back are placed, not refused as "not live" (the
// workers take a few seconds to reconnect; the grace is for them).
func TestBusOutageIsNotAHostLoss(t *testing.T) {
	e := newLossEnvWith(t, 2*time.Second, 6*time.Second, "host-a", "host-b")
	e.nats.Down()
	time.Sleep(3 * time.Second)
	e.nats.Up()
	for i := range 20 {
		req := fakeSpec("--forever")
		req.Start, req.Spec.Resources.CPU = true, 0.1
		if _, err := e.c.Create(e.ctx, req); err != nil {
			t.Fatalf("create %d after the outage: %v", i, err)
		}
	}
	time.Sleep(8 * time.Second) // past the TTL and grace, counted from the reconnection
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "host.lost"}) {
		if err != nil {
			t.Fatal(err)
		}
		t.Fatalf("a host was declared lost for the bus's outage: %s", ev.Data())
	}
}

// Most hosts silent at once is taken for the control plane's partition,
// not theirs: none is declared lost. One host of three going is lost.
func TestMostHostsSilentIsAPartition(t *testing.T) {
	e := newLossEnv(t, "host-a", "host-b", "host-c")
	e.stopHost("host-b")
	e.stopHost("host-c")
	time.Sleep(4 * (lossTTL + lossGrace))
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "host.lost"}) {
		if err != nil {
			t.Fatal(err)
		}
		t.Fatalf("two hosts of three silent at once, and one was declared lost: %s", ev.Data())
	}
	e.startHost("host-b")
	e.eventually("host-c, alone silent now, lost", func() bool {
		hosts, _ := e.c.Hosts(e.ctx)
		return lostIn(hosts, "host-c") && !lostIn(hosts, "host-b")
	})
}
