package system_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// ask sends a request by request/reply and returns the outcome event.
func (e *env) ask(ev events.Event) events.Event {
	e.t.Helper()
	nc, _ := e.nats.Connect()
	m, err := events.ToMsg(events.SubjectRequest, ev)
	if err != nil {
		e.t.Fatal(err)
	}
	reply, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	out, err := events.FromMsg(reply)
	if err != nil {
		e.t.Fatalf("reply is not a CloudEvent: %v: %s", err, reply.Data)
	}
	return out
}

func outcomeError(t *testing.T, out events.Event) api.Error {
	t.Helper()
	var d struct{ Error api.Error }
	if err := events.Data(out, &d); err != nil {
		t.Fatal(err)
	}
	return d.Error
}

// eventsOf returns the events of a type about a container, from the log.
func (e *env) eventsOf(containerID, typ string) []events.Event {
	e.t.Helper()
	var out []events.Event
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: containerID}) {
		if err != nil {
			e.t.Fatal(err)
		}
		if ev.Type() == typ {
			out = append(out, ev)
		}
	}
	return out
}

// A request is its source and id: the same id from another source is
// another request, and the same identity with other data is refused
// without a trace.
func TestRequestIdentity(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--forever")
	req.Start = true
	newReq := func(source string, r api.CreateRequest) events.Event {
		ev, err := events.New(events.ContainerCreateRequested, source, r, events.WithID("same-id"))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	fromA := e.ask(newReq("/service-a", req))
	fromB := e.ask(newReq("/service-b", req))
	for _, out := range []events.Event{fromA, fromB} {
		if out.Type() != events.RequestAccepted {
			t.Fatalf("got %s %s; want accepted", out.Type(), out.Data())
		}
	}
	a, b := events.Ext(fromA, events.ExtContainerID), events.Ext(fromB, events.ExtContainerID)
	if a == b {
		t.Fatalf("two sources' requests with one id placed one container %s", a)
	}
	e.waitStatus(a, api.StatusRunning)
	e.waitStatus(b, api.StatusRunning)
	if again := e.ask(newReq("/service-a", req)); again.ID() != fromA.ID() {
		t.Fatalf("a retried request got outcome %s; want the first, %s", again.ID(), fromA.ID())
	}

	other := fakeSpec("--exit", "3")
	out := e.ask(newReq("/service-a", other))
	got := outcomeError(t, out)
	if out.Type() != events.RequestRejected || got.Kind != "conflict" || got.ID != "same-id" || !strings.Contains(got.Message, "same-id") {
		t.Fatalf("the same identity with other data got %s %+v; want rejected, conflict, naming same-id", out.Type(), got)
	}
	// The first request keeps its outcome, and nothing else exists.
	if again := e.ask(newReq("/service-a", req)); again.ID() != fromA.ID() {
		t.Fatalf("after a conflict the first request's outcome is %s; want %s", again.ID(), fromA.ID())
	}
	// On the durable stream too, past the dedupe window (a new message
	// id): the conflict is an outcome in the log, and leaves no record.
	_, js := e.nats.Connect()
	again := newReq("/service-a", fakeSpec("--exit", "4"))
	m := mustMsg(t, again)
	m.Header.Set(jetstream.MsgIDHeader, "another-message")
	if _, err := js.PublishMsg(e.ctx, m); err != nil {
		t.Fatal(err)
	}
	e.eventually("the durable conflict rejected too", func() bool {
		conflicts := 0
		for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "request.rejected"}) {
			var d struct{ Error api.Error }
			if err == nil && events.CorrelationID(ev) == "same-id" && events.Data(ev, &d) == nil && d.Error.Kind == api.KindConflict {
				conflicts++
			}
		}
		return conflicts == 2 // the one over request/reply and this one
	})
	all, err := e.c.List(e.ctx, client.ListOptions{All: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 {
		t.Fatalf("%d containers: %+v; want the two accepted", len(all), all)
	}
	for _, c := range all {
		if c.Status != api.StatusRunning {
			t.Fatalf("container %s is %s; want running", c.ID, c.Status)
		}
	}
}

// commandTap records the commands published to a host, as an attacker or a
// buggy tool could, to replay them later.
type commandTap struct {
	mu   sync.Mutex
	msgs []*nats.Msg
}

func (e *env) tap(host string) *commandTap {
	e.t.Helper()
	nc, _ := e.nats.Connect()
	tap := &commandTap{}
	sub, err := nc.Subscribe(events.CommandFilter(host), func(m *nats.Msg) {
		tap.mu.Lock()
		tap.msgs = append(tap.msgs, m)
		tap.mu.Unlock()
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		e.t.Fatal(err)
	}
	return tap
}

// replay publishes the recorded command of a type for a container again,
// as a new message: past the dedupe window, as the server sees it.
func (e *env) replay(tap *commandTap, typ, containerID string) {
	e.t.Helper()
	_, js := e.nats.Connect()
	tap.mu.Lock()
	defer tap.mu.Unlock()
	for _, m := range tap.msgs {
		if m.Header.Get("ce-type") != typ || m.Header.Get("ce-"+events.ExtContainerID) != containerID {
			continue
		}
		again := nats.NewMsg(m.Subject)
		again.Data = m.Data
		for k, v := range m.Header {
			again.Header[k] = v
		}
		again.Header.Set(jetstream.MsgIDHeader, "replay-"+m.Header.Get("ce-id"))
		if _, err := js.PublishMsg(e.ctx, again); err != nil {
			e.t.Fatal(err)
		}
		return
	}
	e.t.Fatalf("no %s command for %s was recorded", typ, containerID)
}

// Replayed commands: a start after a stop does not revive the container, a
// create after a removal does not resurrect it, and a create of a
// container that already ran does not run it again. Each refusal is an
// event.
func TestReplayedCommandsAreFenced(t *testing.T) {
	e := newEnv(t)
	tap := e.tap("host-b")
	req := fakeSpec("--forever")
	req.ContainerID, req.HostID, req.Start = "fenced", "host-b", true
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("fenced", api.StatusRunning)
	if _, err := e.c.Start(e.ctx, "fenced"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.Stop(e.ctx, "fenced", time.Second, false); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("fenced", api.StatusStopped)

	e.replay(tap, events.CommandStart, "fenced")
	e.eventually("the replayed start refused", func() bool { return len(e.eventsOf("fenced", events.ContainerCommandRefused)) == 1 })
	time.Sleep(300 * time.Millisecond) // what a carried-out start would have reported by now
	if c := e.waitStatus("fenced", api.StatusStopped); !c.FinishedAt.After(c.StartedAt) {
		t.Fatalf("after a replayed start: %+v", c)
	}
	if n := len(e.eventsOf("fenced", events.ContainerStarted)); n != 1 {
		t.Fatalf("%d started events; want the one run", n)
	}

	if err := e.c.Remove(e.ctx, "fenced", false); err != nil {
		t.Fatal(err)
	}
	e.eventually("removed", func() bool { _, err := e.c.Get(e.ctx, "fenced"); return errors.Is(err, driver.ErrNotFound) })
	e.replay(tap, events.CommandCreate, "fenced")
	e.eventually("the replayed create refused", func() bool { return len(e.eventsOf("fenced", events.ContainerCommandRefused)) == 2 })
	if n := len(e.eventsOf("fenced", events.ContainerCreated)); n != 1 {
		t.Fatalf("%d created events after a replayed create; want the first only", n)
	}
	if _, err := e.c.Get(e.ctx, "fenced"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("a replayed create resurrected the container: %v", err)
	}
	refused := e.eventsOf("fenced", events.ContainerCommandRefused)[1]
	var d struct {
		CommandType         string
		Generation, Current uint64
	}
	if err := events.Data(refused, &d); err != nil || d.CommandType != events.CommandCreate || d.Generation >= d.Current {
		t.Fatalf("refusal %s; want the create's generation older than the current one", refused.Data())
	}

	// A container that ran to completion: its create delivered again does
	// not run it again.
	once := fakeSpec("--stdout", "ran", "--exit", "0")
	once.ContainerID, once.HostID, once.Start = "once", "host-b", true
	if _, err := e.c.Create(e.ctx, once); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("once", api.StatusExited)
	e.replay(tap, events.CommandCreate, "once")
	time.Sleep(500 * time.Millisecond)
	e.waitStatus("once", api.StatusExited)
	if n := len(e.eventsOf("once", events.ContainerStarted)); n != 1 {
		t.Fatalf("a create delivered again ran the container again: %d started events", n)
	}
	var lines int
	for entry, err := range e.c.Logs(e.ctx, "once", client.LogOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(entry.Line, "ran") {
			lines++
		}
	}
	if lines != 1 {
		t.Fatalf("the container's log says it ran %d times; want once", lines)
	}
}

// What the local driver is known to refuse is refused at request time,
// naming the field and the limit; a driver error that would be the same
// on every try fails the command at once, with one failed event.
func TestDriverRefusals(t *testing.T) {
	e := newEnv(t)
	req := localSpec("true")
	req.Spec.Resources.CPU = 0.001
	_, err := e.c.Create(e.ctx, req)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Kind != "invalid" || ae.Field != "spec.resources.cpu" || !strings.Contains(ae.Message, "0.01") {
		t.Fatalf("cpu 0.001 on the local driver: %v; want invalid, naming spec.resources.cpu and the limit 0.01", err)
	}

	// Past the orchestrator: a command a tool published by itself.
	spec := req.Spec
	spec.SessionID = "tiny"
	cmd, err := events.New(events.CommandCreate, "/tests", map[string]any{"containerId": "tiny", "hostId": "host-a", "driver": "local", "spec": spec, "start": true},
		events.WithHost("host-a"), events.WithContainer("tiny"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := e.publisher().Publish(e.ctx, cmd); err != nil {
		t.Fatal(err)
	}
	e.eventually("the command failed", func() bool { return len(e.eventsOf("tiny", events.ContainerFailed)) > 0 })
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the command failed after %v: it was retried", d)
	}
	time.Sleep(500 * time.Millisecond)
	failed := e.eventsOf("tiny", events.ContainerFailed)
	var d struct{ Error api.Error }
	if len(failed) != 1 || events.Data(failed[0], &d) != nil || d.Error.Field != "spec.resources.cpu" || d.Error.Kind != "invalid" {
		t.Fatalf("%d failed events, the first %v; want one, invalid, naming spec.resources.cpu", len(failed), d.Error)
	}
}

// A container whose host never creates it fails at the deadline with the
// reason, and its reservation is released.
func TestPendingDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	stuck := fake.New(fake.WithHook(func(ctx context.Context, op, id string) error {
		if op == "create" {
			select {
			case <-release:
			case <-ctx.Done():
			}
			return driver.Errorf("create", id, driver.ErrUnavailable, "the runtime hangs")
		}
		return nil
	}))
	e := newEnvWith(t, system.Config{PendingDeadline: time.Second}, "slow", stuck)
	c, ctx := e.c, e.ctx
	req := fakeSpec("--forever")
	req.ContainerID = "never"
	// The caller waiting for the container learns why it never came.
	_, err := c.Create(ctx, req)
	var ae *client.Error
	if !errors.As(err, &ae) || ae.Kind != "timeout" {
		t.Fatalf("create on a host that never creates: %v; want a timeout", err)
	}
	got := e.waitStatus("never", api.StatusFailed)
	if got.Error == nil || got.Error.Kind != "timeout" || !strings.Contains(got.Error.Message, "slow") {
		t.Fatalf("failed with %+v; want a timeout naming the host", got.Error)
	}
	hosts, err := c.Hosts(ctx)
	if err != nil || len(hosts) != 1 || hosts[0].Allocated.CPU != 0 {
		t.Fatalf("hosts %+v (%v); want nothing allocated", hosts, err)
	}
}
