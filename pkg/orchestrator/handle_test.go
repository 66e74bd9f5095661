package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/openagent/orchestrator/internal/natstest"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/policy"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// The handler's decisions, driven through Handle on a real JetStream with
// no worker: the test puts host records in the hosts bucket and plays the
// worker's part by publishing state events, and reads what the handler
// published from the streams.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type harness struct {
	t   *testing.T
	ctx context.Context
	js  jetstream.JetStream
	pub *events.Publisher
	o   *Orchestrator
}

// host is a host record as a worker keeps it.
func host(id string, cpu float64, drivers ...events.DriverInfo) events.HostRecord {
	if len(drivers) == 0 {
		drivers = []events.DriverInfo{{Name: "fake"}}
	}
	return events.HostRecord{ID: id, Drivers: drivers, Capacity: events.Resources{CPU: cpu, MemoryMB: 8192, Pids: 4096},
		LastSeen: time.Now(), StartedAt: time.Now()}
}

// newHarness runs an orchestrator over the given hosts until the test ends.
func newHarness(t *testing.T, hosts ...events.HostRecord) *harness {
	t.Helper()
	return newHarnessWith(t, nil, hosts...)
}

// newHarnessWith is newHarness with admission policies.
func newHarnessWith(t *testing.T, engine *policy.Engine, hosts ...events.HostRecord) *harness {
	t.Helper()
	return newHarnessConfig(t, func(c *Config) { c.Policy = engine }, hosts...)
}

// newHarnessConfig is newHarness with the orchestrator's config changed.
func newHarnessConfig(t *testing.T, change func(*Config), hosts ...events.HostRecord) *harness {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect()
	if _, err := events.Provision(context.Background(), js, events.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	h := &harness{t: t, ctx: ctx, js: js}
	for _, hr := range hosts {
		h.putHost(hr)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	h.pub = events.NewPublisher(js, v)
	cfg := Config{JS: js, Validator: v, Protected: []string{"/srv/openagent"}, DriftInterval: 50 * time.Millisecond}
	change(&cfg)
	if h.o, err = New(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-h.o.Ready():
	case <-ctx.Done():
		t.Fatal("orchestrator not ready")
	}
	return h
}

// on returns the harness reporting to a subtest.
func (h *harness) on(t *testing.T) *harness {
	cp := *h
	cp.t = t
	return &cp
}

func (h *harness) putHost(hr events.HostRecord) {
	h.t.Helper()
	kv, err := h.js.KeyValue(h.ctx, events.BucketHosts)
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := json.Marshal(hr)
	if _, err := kv.Put(h.ctx, hr.ID, b); err != nil {
		h.t.Fatal(err)
	}
}

// request handles a request from source with id and data, and returns
// its outcome's data: accepted, or the rejection's error.
func (h *harness) request(typ, source, id string, data any) (api.Accepted, *api.Error) {
	h.t.Helper()
	e, err := events.New(typ, source, data, events.WithID(id))
	if err != nil {
		h.t.Fatal(err)
	}
	reply, err := h.o.Handle(h.ctx, e)
	if err != nil {
		h.t.Fatalf("handle %s: %v", typ, err)
	}
	if reply.Type() == events.RequestRejected {
		var d events.RejectedData
		if err := events.Data(reply, &d); err != nil {
			h.t.Fatal(err)
		}
		return api.Accepted{}, &d.Error
	}
	var acc api.Accepted
	if err := events.Data(reply, &acc); err != nil {
		h.t.Fatal(err)
	}
	return acc, nil
}

func (h *harness) mustAccept(typ, source, id string, data any) api.Accepted {
	h.t.Helper()
	acc, rej := h.request(typ, source, id, data)
	if rej != nil {
		h.t.Fatalf("%s %s rejected: %s %s: %s", typ, id, rej.Kind, rej.Field, rej.Message)
	}
	return acc
}

func (h *harness) mustReject(typ, source, id string, data any, kind api.ErrorKind, field string) *api.Error {
	h.t.Helper()
	acc, rej := h.request(typ, source, id, data)
	if rej == nil {
		h.t.Fatalf("%s %s accepted (%+v); want rejected %s", typ, id, acc, kind)
	}
	if rej.Kind != kind || rej.Field != field {
		h.t.Fatalf("%s %s rejected %s naming %q (%s); want %s naming %q", typ, id, rej.Kind, rej.Field, rej.Message, kind, field)
	}
	return rej
}

// report publishes a state event as the container's worker would.
func (h *harness) report(typ, id, hostID string, data any) {
	h.t.Helper()
	r, _ := h.o.state.Get(id)
	gen := uint64(0)
	if r != nil {
		gen = r.Generation
	}
	e, err := events.New(typ, "/tests/worker", data, events.WithContainer(id), events.WithHost(hostID), events.WithGeneration(gen))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.pub.Publish(h.ctx, e); err != nil {
		h.t.Fatal(err)
	}
}

// running reports a container created and started on its host, and waits
// until the projection has it running.
func (h *harness) running(id string) {
	h.t.Helper()
	r, ok := h.o.state.Get(id)
	if !ok {
		h.t.Fatalf("no container %s", id)
	}
	h.report(events.ContainerCreated, id, r.Host, events.CreatedData{ContainerID: id, HostID: r.Host, Driver: r.Driver})
	h.report(events.ContainerStarted, id, r.Host, events.StartedData{ContainerID: id, HostID: r.Host, StartedAt: time.Now()})
	h.waitStatus(id, api.StatusRunning)
}

func (h *harness) waitStatus(id string, st api.Status) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 10*time.Second)
	defer cancel()
	if _, err := h.o.state.WaitFor(ctx, id, func(r *record) bool { return r.Status == st }); err != nil {
		r, _ := h.o.state.Get(id)
		h.t.Fatalf("container %s never %s: %+v", id, st, r)
	}
}

// allocated is what the projection has allocated on a host.
func (h *harness) allocated(hostID string) (a scheduler.Resources) {
	h.o.state.Read(func(m *projection.Model) { a = m.Allocated[hostID] })
	return a
}

// count is how many messages a stream holds on subjects matching filter.
func (h *harness) count(stream, filter string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(h.ctx, stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(h.ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		h.t.Fatal(err)
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n
}

// lastCommand is the last command published for a host.
func (h *harness) lastCommand(hostID string) events.Event {
	h.t.Helper()
	s, err := h.js.Stream(h.ctx, events.StreamCommands)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(h.ctx, events.CommandsRoot+"."+hostID+".>")
	if err != nil {
		h.t.Fatalf("no command for %s: %v", hostID, err)
	}
	e, err := events.FromMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		h.t.Fatal(err)
	}
	return e
}

func spec(mutate ...func(*driver.ContainerConfig)) driver.ContainerConfig {
	s := driver.DefaultConfig()
	s.Image, s.Command = "fake", []string{"fake", "--forever"}
	for _, m := range mutate {
		m(&s)
	}
	return s
}

func createReq(mutate ...func(*api.CreateRequest)) api.CreateRequest {
	r := api.CreateRequest{Driver: "fake", Spec: spec()}
	for _, m := range mutate {
		m(&r)
	}
	return r
}

// A create that names no container gets one derived from its identity,
// placed on a fit host, announced with a placed event and a create
// command of one generation; handled again, it is answered the same and
// publishes nothing new.
func TestCreateIsPlacedOnceByIdentity(t *testing.T) {
	h := newHarness(t, host("host-a", 4))
	acc := h.mustAccept(events.ContainerCreateRequested, "/tests/svc", "req-1", createReq())
	key := "/tests/svc\x00req-1"
	if acc.ContainerID != events.ContainerIDFor(key) {
		t.Fatalf("container %s; want the one derived from the request, %s", acc.ContainerID, events.ContainerIDFor(key))
	}
	r, ok := h.o.state.Get(acc.ContainerID)
	if !ok || r.Host != "host-a" || r.Status != api.StatusPending || r.Driver != "fake" {
		t.Fatalf("record %+v; want pending on host-a with the fake driver", r)
	}
	cmd := h.lastCommand("host-a")
	if cmd.Type() != events.CommandCreate || events.Ext(cmd, events.ExtContainerID) != acc.ContainerID || events.Generation(cmd) == 0 {
		t.Fatalf("command %s for %s at generation %d; want a create of %s with a generation", cmd.Type(), events.Ext(cmd, events.ExtContainerID), events.Generation(cmd), acc.ContainerID)
	}
	if cmd.ID() != events.DeriveID(key, "command") {
		t.Fatalf("command id %s; want the one derived from the request", cmd.ID())
	}
	evs, cmds := h.count(events.StreamEvents, events.EventsRoot+".>"), h.count(events.StreamCommands, events.CommandsRoot+".>")

	again := h.mustAccept(events.ContainerCreateRequested, "/tests/svc", "req-1", createReq())
	if again != acc {
		t.Fatalf("handled again: %+v; want the first outcome %+v", again, acc)
	}
	// Once the worker reported, a redelivered request is answered from its
	// record: not even a deduplicated announcement goes out.
	h.running(acc.ContainerID)
	evs, cmds = h.count(events.StreamEvents, events.EventsRoot+".>"), h.count(events.StreamCommands, events.CommandsRoot+".>")
	if again := h.mustAccept(events.ContainerCreateRequested, "/tests/svc", "req-1", createReq()); again != acc {
		t.Fatalf("handled a third time: %+v; want %+v", again, acc)
	}
	if n, m := h.count(events.StreamEvents, events.EventsRoot+".>"), h.count(events.StreamCommands, events.CommandsRoot+".>"); n != evs || m != cmds {
		t.Fatalf("a request handled again published %d events and %d commands", n-evs, m-cmds)
	}
}

// Request identity is (source, id): the same id from another source is
// another request and places another container; the same identity with
// other data is a conflict naming the id, and changes nothing.
func TestRequestIdentity(t *testing.T) {
	h := newHarness(t, host("host-a", 4))
	first := h.mustAccept(events.ContainerCreateRequested, "/tests/svc-a", "same-id", createReq())
	other := h.mustAccept(events.ContainerCreateRequested, "/tests/svc-b", "same-id", createReq())
	if other.ContainerID == first.ContainerID {
		t.Fatalf("two sources' requests with one id share container %s", first.ContainerID)
	}
	before := len(h.o.state.List())
	rej := h.mustReject(events.ContainerCreateRequested, "/tests/svc-a", "same-id",
		createReq(func(r *api.CreateRequest) { r.Name = "changed" }), api.KindConflict, "id")
	if !strings.Contains(rej.Message, "same-id") {
		t.Fatalf("conflict %q does not name the id", rej.Message)
	}
	if after := len(h.o.state.List()); after != before {
		t.Fatalf("a conflicting request left %d records", after-before)
	}
	// The first keeps its outcome.
	if again := h.mustAccept(events.ContainerCreateRequested, "/tests/svc-a", "same-id", createReq()); again != first {
		t.Fatalf("after the conflict the first request's outcome is %+v; want %+v", again, first)
	}
}

// Each refusal of a create names its kind and field, and holds nothing.
func TestCreateRefusals(t *testing.T) {
	h := newHarness(t, host("host-a", 1, events.DriverInfo{Name: "fake"}, events.DriverInfo{Name: "local", MinCPU: 0.01}))
	h.mustAccept(events.ContainerCreateRequested, "/tests", "named", createReq(func(r *api.CreateRequest) { r.Name = "web" }))
	for _, tc := range []struct {
		name  string
		req   api.CreateRequest
		kind  api.ErrorKind
		field string
	}{
		{"a name in use", createReq(func(r *api.CreateRequest) { r.Name = "web" }), api.KindConflict, "name"},
		{"more cpu than any host has", createReq(func(r *api.CreateRequest) { r.Spec.Resources.CPU = 2 }), api.KindResourceLimit, ""},
		{"a driver no host offers", createReq(func(r *api.CreateRequest) { r.Driver = "docker"; r.Spec.Image = "alpine" }), api.KindUnavailable, ""},
		{"a host that does not exist", createReq(func(r *api.CreateRequest) { r.HostID = "host-z" }), api.KindUnavailable, ""},
		{"cpu under the driver's minimum", createReq(func(r *api.CreateRequest) {
			r.Driver, r.Spec.Image, r.Spec.Resources.CPU = "local", "host", 0.001
		}), api.KindInvalid, "spec.resources.cpu"},
		{"a dangerous capability", createReq(func(r *api.CreateRequest) { r.Spec.Security.CapAdd = []string{"SYS_ADMIN"} }), api.KindPermission, "spec.security.capAdd[0]"},
		{"the data directory mounted", createReq(func(r *api.CreateRequest) {
			r.Spec.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: "/srv/openagent", Target: "/x"}}
		}), api.KindPermission, "spec.volumes[0].source"},
		{"a bad environment variable (schema)", createReq(func(r *api.CreateRequest) { r.Spec.Env = map[string]string{"1X": "y"} }), api.KindInvalid, "data.spec.env.1X"},
		{"a mount over the root (config)", createReq(func(r *api.CreateRequest) {
			r.Spec.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: "/srv/work", Target: "/"}}
		}), api.KindInvalid, "spec.volumes[0].target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := h.on(t)
			before := h.allocated("host-a")
			h.mustReject(events.ContainerCreateRequested, "/tests", "refused "+tc.name, tc.req, tc.kind, tc.field)
			if after := h.allocated("host-a"); after != before {
				t.Fatalf("a refused create holds %+v on the host (before %+v)", after, before)
			}
		})
	}
	// A schema violation names the field too.
	e, err := events.New(events.ContainerCreateRequested, "/tests", map[string]any{"spec": map[string]any{"image": 5}}, events.WithID("garbled"))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := h.o.Handle(h.ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	var d events.RejectedData
	if err := events.Data(reply, &d); err != nil || reply.Type() != events.RequestRejected || d.Error.Kind != api.KindInvalid || !strings.HasPrefix(d.Error.Field, "data") {
		t.Fatalf("a schema violation: %s %+v; want rejected invalid naming a data field", reply.Type(), d.Error)
	}
	// Session requests are served elsewhere.
	h.mustReject(events.SessionCreateRequested, "/tests", "session", map[string]any{}, api.KindNotSupported, "type")
}

// The operations on a container decide on its state and its host's
// liveness, and each command carries a new generation.
func TestOperations(t *testing.T) {
	h := newHarness(t, host("host-a", 4), host("host-b", 4))
	req := func(id string, force bool) events.ContainerRequestedData {
		return events.ContainerRequestedData{ContainerID: id, Force: force}
	}
	h.mustReject(events.ContainerStartRequested, "/tests", "start nothing", req("nothing", false), api.KindNotFound, "containerId")

	c := h.mustAccept(events.ContainerCreateRequested, "/tests", "c", createReq(func(r *api.CreateRequest) { r.HostID = "host-a"; r.Start = true }))
	h.running(c.ContainerID)
	h.mustReject(events.ContainerRemoveRequested, "/tests", "remove running", req(c.ContainerID, false), api.KindConflict, "")

	r, _ := h.o.state.Get(c.ContainerID)
	created := r.Generation
	stop := h.mustAccept(events.ContainerStopRequested, "/tests", "stop", req(c.ContainerID, false))
	cmd := h.lastCommand("host-a")
	if cmd.Type() != events.CommandStop || events.Generation(cmd) <= created {
		t.Fatalf("stop published %s at generation %d; want a stop command after generation %d", cmd.Type(), events.Generation(cmd), created)
	}
	if stop.ContainerID != c.ContainerID {
		t.Fatalf("stop accepted for %s; want %s", stop.ContainerID, c.ContainerID)
	}

	x := h.mustAccept(events.ContainerExecRequested, "/tests", "exec", events.ExecRequestedData{ContainerID: c.ContainerID, Command: []string{"true"}})
	if x.ExecID != events.DeriveID("/tests\x00exec", "exec") {
		t.Fatalf("exec id %s; want the one derived from the request", x.ExecID)
	}
	h.report(events.ContainerStopped, c.ContainerID, "host-a", events.StoppedData{ContainerID: c.ContainerID, HostID: "host-a", FinishedAt: time.Now()})
	h.waitStatus(c.ContainerID, api.StatusStopped)
	h.mustReject(events.ContainerExecRequested, "/tests", "exec stopped", events.ExecRequestedData{ContainerID: c.ContainerID, Command: []string{"true"}}, api.KindConflict, "")

	// A host that stopped reporting: operations are refused, except a
	// forced removal, which forgets the container.
	d := h.mustAccept(events.ContainerCreateRequested, "/tests", "d", createReq(func(r *api.CreateRequest) { r.HostID = "host-b"; r.Start = true }))
	h.running(d.ContainerID)
	dead := host("host-b", 4)
	dead.LastSeen = time.Now().Add(-time.Hour)
	h.putHost(dead)
	deadline := time.Now().Add(10 * time.Second)
	for h.o.Live("host-b") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	commands := h.count(events.StreamCommands, events.CommandsRoot+".host-b.>")
	if c, ok := h.o.Container(d.ContainerID); !ok || c.Status != api.StatusLost {
		t.Fatalf("a running container on a dead host reads %+v; want lost", c)
	}
	h.mustReject(events.ContainerStopRequested, "/tests", "stop on dead", req(d.ContainerID, false), api.KindUnavailable, "")
	h.mustReject(events.ContainerStartRequested, "/tests", "start on dead", req(d.ContainerID, false), api.KindUnavailable, "")
	h.mustReject(events.ContainerRemoveRequested, "/tests", "remove on dead", req(d.ContainerID, false), api.KindConflict, "")
	h.mustAccept(events.ContainerRemoveRequested, "/tests", "forget on dead", req(d.ContainerID, true))
	h.waitStatus(d.ContainerID, api.StatusRemoved)
	if n := h.count(events.StreamCommands, events.CommandsRoot+".host-b.>"); n != commands {
		t.Fatalf("forgetting a container on a dead host sent it %d commands", n-commands)
	}
}

// Concurrent creates never place more on a host than it has: placement
// and reservation are one step.
func TestConcurrentCreatesFitTheHost(t *testing.T) {
	h := newHarness(t, host("host-a", 2))
	const n = 64 // 2 cores of 0.1 fit 20
	accepted := make(chan bool, n)
	for i := range n {
		go func() {
			_, rej := h.request(events.ContainerCreateRequested, "/tests", fmt.Sprintf("burst-%d", i),
				createReq(func(r *api.CreateRequest) { r.Spec.Resources.CPU, r.Spec.Resources.MemoryMB = 0.1, 64 }))
			accepted <- rej == nil
		}()
	}
	got := 0
	for range n {
		if <-accepted {
			got++
		}
	}
	if got != 20 {
		t.Fatalf("%d of %d creates of 0.1 cores accepted on a host of 2 cores; want 20", got, n)
	}
	if a := h.allocated("host-a"); a.CPU > 2+1e-9 {
		t.Fatalf("host-a has %g cores allocated of 2", a.CPU)
	}
}

// Someone who shortens the audit log's retention is reported: an error
// and a stream.drifted event naming the setting, once.
func TestAuditLogDriftIsReported(t *testing.T) {
	h := newHarness(t)
	s, err := h.js.Stream(h.ctx, events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.MaxAge = time.Hour
	if _, err := h.js.UpdateStream(h.ctx, cfg); err != nil {
		t.Fatal(err)
	}
	filter := events.EventsRoot + ".stream." + events.StreamEvents + ".>"
	deadline := time.Now().Add(10 * time.Second)
	for h.count(events.StreamEvents, filter) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a shortened audit log was not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	m, err := s.GetLastMsgForSubject(h.ctx, filter)
	if err != nil {
		t.Fatal(err)
	}
	e, err := events.FromMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	if err != nil {
		t.Fatal(err)
	}
	var d events.StreamDriftedData
	if err := events.Data(e, &d); err != nil {
		t.Fatal(err)
	}
	if e.Subject() != events.StreamEvents || d.Stream != events.StreamEvents || !strings.Contains(strings.Join(d.Problems, "; "), "max_age: 1h0m0s, want 0s") {
		t.Fatalf("reported %s %+v; want the events stream's max_age named", e.Subject(), d)
	}
	// Once: later looks at the same drift publish nothing.
	time.Sleep(300 * time.Millisecond)
	if n := h.count(events.StreamEvents, filter); n != 1 {
		t.Fatalf("the drift was reported %d times; want once", n)
	}
}

// A create that breaks a policy is refused naming the policy and the
// field, and the violation is an event; in dry-run mode it is admitted and
// the violation still recorded, not enforced.
func TestPolicyDenials(t *testing.T) {
	for _, dry := range []bool{false, true} {
		engine, err := policy.New(policy.Config{Params: policy.DefaultParams(), DryRun: dry})
		if err != nil {
			t.Fatal(err)
		}
		h := newHarnessWith(t, engine, host("host-a", 4))
		asRoot := createReq(func(r *api.CreateRequest) { r.Spec.Security.User = "0" })
		id := fmt.Sprintf("root-dry-%v", dry)
		if dry {
			h.mustAccept(events.ContainerCreateRequested, "/tests", id, asRoot)
		} else {
			rej := h.mustReject(events.ContainerCreateRequested, "/tests", id, asRoot, api.KindPermission, "spec.security.user")
			if rej.Policy != "no-root-user" || !strings.Contains(rej.Message, "no-root-user") {
				t.Fatalf("refusal %+v; want it to name the policy no-root-user", rej)
			}
		}
		s, err := h.js.Stream(h.ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		m, err := s.GetLastMsgForSubject(h.ctx, events.RequestFilter(id))
		if err != nil {
			t.Fatal(err)
		}
		// The outcome is the last of the request's events; find the
		// violation among them.
		found := false
		cons, err := h.js.OrderedConsumer(h.ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.RequestFilter(id)}})
		if err != nil {
			t.Fatal(err)
		}
		batch, err := cons.FetchNoWait(10)
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			e, err := events.FromMsg(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
			if err != nil || e.Type() != events.RequestPolicyViolated {
				continue
			}
			var d events.PolicyViolatedData
			if events.Data(e, &d) == nil && d.Policy == "no-root-user" && d.Enforced == !dry && d.Field == "spec.security.user" {
				found = true
			}
		}
		if !found {
			t.Fatalf("dry run %v: no policy.violated event for %s (last: %s)", dry, id, m.Subject)
		}
	}
}

// names is a resolver that knows a few names.
type names map[string][]netip.Addr

func (n names) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := n[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

// Egress rules by host name are resolved at admission: the command carries
// one rule per address, the name kept; a name that resolves to nothing is
// refused naming the rule; rules by address pass as they are.
func TestEgressNamesAreResolvedAtAdmission(t *testing.T) {
	resolver := names{"pypi.example": {netip.MustParseAddr("198.18.1.1"), netip.MustParseAddr("198.18.1.2")}}
	h := newHarnessConfig(t, func(c *Config) { c.Resolver = resolver }, host("host-a", 4))
	withEgress := func(rules ...driver.EgressRule) api.CreateRequest {
		return createReq(func(r *api.CreateRequest) { r.Spec.Egress = rules })
	}
	h.mustAccept(events.ContainerCreateRequested, "/tests", "egress-ok", withEgress(
		driver.EgressRule{To: "pypi.example", Ports: []int{443}}, driver.EgressRule{To: "10.9.0.0/16"}))
	var cmd api.CreateRequest
	if err := events.Data(h.lastCommand("host-a"), &cmd); err != nil {
		t.Fatal(err)
	}
	want := []driver.EgressRule{
		{To: "198.18.1.1", Ports: []int{443}, Host: "pypi.example"},
		{To: "198.18.1.2", Ports: []int{443}, Host: "pypi.example"},
		{To: "10.9.0.0/16"},
	}
	if diff := cmp.Diff(want, cmd.Spec.Egress); diff != "" {
		t.Fatalf("the command's egress rules (-want +got):\n%s", diff)
	}
	h.mustReject(events.ContainerCreateRequested, "/tests", "egress-unknown",
		withEgress(driver.EgressRule{To: "10.0.0.1"}, driver.EgressRule{To: "nowhere.example"}), api.KindInvalid, "spec.egress[1].to")
	h.mustReject(events.ContainerCreateRequested, "/tests", "egress-garbage",
		withEgress(driver.EgressRule{To: "not a host!"}), api.KindInvalid, "spec.egress[0].to")
	h.mustReject(events.ContainerCreateRequested, "/tests", "egress-port",
		withEgress(driver.EgressRule{To: "10.0.0.1", Ports: []int{70000}}), api.KindInvalid, "data.spec.egress[0].ports[0]")
}

// A cpu limit below what every host's driver can set is refused when it is
// asked for, not a minute later by the host.
func TestCPUBelowTheDriversMinimumIsRefused(t *testing.T) {
	h := newHarness(t, host("host-a", 4, events.DriverInfo{Name: "fake", MinCPU: 0.01}))
	tiny := createReq(func(r *api.CreateRequest) { r.Spec.Resources.CPU = 0.0001 })
	rej := h.mustReject(events.ContainerCreateRequested, "/tests", "tiny-cpu", tiny, api.KindInvalid, "spec.resources.cpu")
	if !strings.Contains(rej.Message, "0.01") {
		t.Fatalf("refusal %q; want it to say the smallest limit", rej.Message)
	}
	h.mustAccept(events.ContainerCreateRequested, "/tests", "enough-cpu", createReq(func(r *api.CreateRequest) { r.Spec.Resources.CPU = 0.01 }))
}

// Placement as requests ask for it: label expressions, anti-affinity by a
// label, capabilities, GPUs, the spread strategy and reserved capacity;
// what cannot be evaluated is refused naming the field.
func TestPlacementRequests(t *testing.T) {
	gpu := host("gpu-1", 8)
	gpu.Labels, gpu.Capacity.GPUs, gpu.Capabilities = map[string]string{"zone": "b", "accel": "h100"}, 4, []string{"pause", "gpu"}
	plain := host("plain-1", 8)
	plain.Labels, plain.Capabilities = map[string]string{"zone": "a"}, []string{"pause"}
	tight := host("tight-1", 8)
	tight.Labels, tight.Reserved = map[string]string{"zone": "c"}, events.Resources{CPU: 7.9}
	h := newHarness(t, gpu, plain, tight)
	placedOn := func(id string, mutate func(*api.CreateRequest)) string {
		t.Helper()
		acc := h.mustAccept(events.ContainerCreateRequested, "/tests", id, createReq(mutate))
		c, ok := h.o.Container(acc.ContainerID)
		if !ok {
			t.Fatalf("%s: not known after acceptance", id)
		}
		return c.Host
	}
	if got := placedOn("gpus", func(r *api.CreateRequest) { r.Spec.Resources.GPUs = 2 }); got != "gpu-1" {
		t.Errorf("a request for GPUs went to %s", got)
	}
	if got := placedOn("notin", func(r *api.CreateRequest) {
		r.Placement = &api.Placement{Expressions: []api.Expression{{Key: "zone", Op: "notin", Values: []string{"b", "c"}}}}
	}); got != "plain-1" {
		t.Errorf("zone notin (b, c) went to %s", got)
	}
	if got := placedOn("exists", func(r *api.CreateRequest) {
		r.Placement = &api.Placement{Expressions: []api.Expression{{Key: "accel", Op: "exists"}}, Capabilities: []string{"gpu"}}
	}); got != "gpu-1" {
		t.Errorf("accel exists with the gpu capability went to %s", got)
	}
	// Two replicas of one app, kept apart.
	first := placedOn("app-1", func(r *api.CreateRequest) {
		r.Spec.Labels = map[string]string{"app": "web"}
		r.Placement = &api.Placement{AntiAffinity: "app"}
	})
	second := placedOn("app-2", func(r *api.CreateRequest) {
		r.Spec.Labels = map[string]string{"app": "web"}
		r.Placement = &api.Placement{AntiAffinity: "app"}
	})
	if first == second {
		t.Errorf("two containers of app=web with anti-affinity on app share %s", first)
	}
	// The tight host's reserve leaves it room for nothing of 0.5 cores.
	for i := range 6 {
		if got := placedOn(fmt.Sprintf("spread-%d", i), func(r *api.CreateRequest) { r.Placement = &api.Placement{Strategy: "spread"} }); got == "tight-1" {
			t.Fatalf("a container was placed on capacity the host reserves")
		}
	}
	for field, p := range map[string]*api.Placement{
		"data.placement.strategy":  {Strategy: "random"}, // the schema says so first
		"placement.expressions[0]": {Expressions: []api.Expression{{Key: "zone", Op: "in"}}},
		"placement.antiAffinity":   {AntiAffinity: "team"},
	} {
		h.mustReject(events.ContainerCreateRequested, "/tests", "bad-"+field, createReq(func(r *api.CreateRequest) { r.Placement = p }), api.KindInvalid, field)
	}
	rej := h.mustReject(events.ContainerCreateRequested, "/tests", "too-many-gpus", createReq(func(r *api.CreateRequest) { r.Spec.Resources.GPUs = 8 }), api.KindResourceLimit, "")
	if !strings.Contains(rej.Message, "gpus: 8 requested, 2 free of 4") {
		t.Errorf("refusal %q; want it to say the GPUs free", rej.Message)
	}
}

// A host whose creates keep failing for reasons of its own is quarantined,
// with an event, and placement passes it by; creates refused for their own
// config do not count.
func TestFailingHostIsQuarantined(t *testing.T) {
	h := newHarness(t, host("host-a", 8), host("host-b", 8))
	fail := func(id string, kind events.ErrorKind) {
		h.report(events.ContainerFailed, id, "host-a", events.FailedData{ContainerID: id, HostID: "host-a", Operation: "create",
			Error: events.Error{Kind: kind, Message: "create: the runtime does not answer"}})
	}
	for i := range QuarantineAfter + 2 {
		fail(fmt.Sprintf("own-fault-%d", i), events.KindInvalid)
	}
	// Empty hosts tie, and the lower id wins: host-a, while it is healthy.
	before := h.mustAccept(events.ContainerCreateRequested, "/tests", "before", createReq())
	if c, _ := h.o.Container(before.ContainerID); c.Host != "host-a" {
		t.Fatalf("with only invalid requests failing, the container went to %q; want host-a", c.Host)
	}
	for i := range QuarantineAfter {
		fail(fmt.Sprintf("host-fault-%d", i), events.KindUnavailable)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.count(events.StreamEvents, events.EventsRoot+".host.host-a.>") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no host.quarantined event")
		}
		time.Sleep(20 * time.Millisecond)
	}
	acc := h.mustAccept(events.ContainerCreateRequested, "/tests", "after", createReq())
	if c, _ := h.o.Container(acc.ContainerID); c.Host != "host-b" {
		t.Fatalf("after the quarantine the container went to %q; want host-b", c.Host)
	}
	for _, hv := range h.o.Hosts() {
		if hv.ID == "host-a" && hv.QuarantinedUntil.IsZero() {
			t.Fatal("the hosts' view does not say host-a is quarantined")
		}
	}
}
