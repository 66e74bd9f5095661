package system_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

func (e *env) publisher() *events.Publisher {
	v, err := events.NewValidator()
	if err != nil {
		e.t.Fatal(err)
	}
	_, js := e.nats.Connect()
	return events.NewPublisher(js, v)
}

func createEvent(t *testing.T, req api.CreateRequest) events.Event {
	t.Helper()
	ev, err := events.New(events.ContainerCreateRequested, "/tests", req)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (e *env) waitStatus(id string, want api.Status) *api.Container {
	e.t.Helper()
	var c *api.Container
	e.eventually("container "+id+" "+string(want), func() bool {
		var err error
		c, err = e.c.Get(e.ctx, id)
		return err == nil && c.Status == want
	})
	return c
}

// The durable door: a request published on the requests stream.
func TestLifecycleOverTheRequestsStream(t *testing.T) {
	e := newEnv(t)
	pub := e.publisher()
	req := fakeSpec("--forever")
	req.ContainerID, req.Start = "streamed", true
	if _, err := pub.Publish(e.ctx, createEvent(t, req)); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("streamed", api.StatusRunning)
	stop, _ := events.New(events.ContainerStopRequested, "/tests", map[string]any{"containerId": "streamed", "timeoutMs": 1000})
	if _, err := pub.Publish(e.ctx, stop); err != nil {
		t.Fatal(err)
	}
	e.waitStatus("streamed", api.StatusStopped)
	rm, _ := events.New(events.ContainerRemoveRequested, "/tests", map[string]any{"containerId": "streamed"})
	if _, err := pub.Publish(e.ctx, rm); err != nil {
		t.Fatal(err)
	}
	e.eventually("removed", func() bool {
		_, err := e.c.Get(e.ctx, "streamed")
		return errors.Is(err, driver.ErrNotFound)
	})
}

// The request/reply door: the reply is the outcome CloudEvent.
func TestRequestReply(t *testing.T) {
	e := newEnv(t)
	nc, _ := e.nats.Connect()
	ask := func(ev events.Event) events.Event {
		t.Helper()
		m, err := events.ToMsg(events.SubjectRequest, ev)
		if err != nil {
			t.Fatal(err)
		}
		reply, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out, err := events.FromMsg(reply)
		if err != nil {
			t.Fatalf("reply is not a CloudEvent: %v: %s", err, reply.Data)
		}
		return out
	}
	req := fakeSpec("--forever")
	req.ContainerID, req.Start = "asked", true
	create := createEvent(t, req)
	out := ask(create)
	if out.Type() != events.RequestAccepted || events.Ext(out, events.ExtCorrelationID) != create.ID() {
		t.Fatalf("reply %s correlated to %q; want accepted, correlated to %s", out.Type(), events.Ext(out, events.ExtCorrelationID), create.ID())
	}
	e.waitStatus("asked", api.StatusRunning)
	// Asking again is answered the same, and nothing happens twice.
	if again := ask(create); again.ID() != out.ID() {
		t.Fatalf("a repeated request got outcome %s; want the same %s", again.ID(), out.ID())
	}
	start, _ := events.New(events.ContainerStartRequested, "/tests", map[string]any{"containerId": "nope"})
	out = ask(start)
	var d struct{ Error api.Error }
	_ = events.Data(out, &d)
	if out.Type() != events.RequestRejected || d.Error.Kind != "not_found" || d.Error.ID != "nope" {
		t.Fatalf("got %s %+v; want rejected, not_found naming nope", out.Type(), d.Error)
	}
	// Queries.
	reply, err := nc.Request(events.SubjectContainer, []byte(`{"id":"asked"}`), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var c api.Container
	if json.Unmarshal(reply.Data, &c); c.ID != "asked" || c.Status != api.StatusRunning {
		t.Fatalf("get over NATS: %s", reply.Data)
	}
}

// The CloudEvents HTTP binding, binary mode.
func TestCloudEventOverHTTP(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--forever")
	req.ContainerID = "bound"
	body, _ := json.Marshal(req)
	hreq, _ := http.NewRequest(http.MethodPost, e.sys.HTTPURL+"/v1/events", bytes.NewReader(body))
	hreq.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
	hreq.Header.Set("ce-specversion", "1.0")
	hreq.Header.Set("ce-id", "http-binding-1")
	hreq.Header.Set("ce-source", "/tests/http")
	hreq.Header.Set("ce-type", events.ContainerCreateRequested)
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out events.Event
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusAccepted || out.Type() != events.RequestAccepted {
		t.Fatalf("got %d %s; want 202 accepted", resp.StatusCode, out.Type())
	}
	e.waitStatus("bound", api.StatusCreated)
}

func TestPlacementAcrossHosts(t *testing.T) {
	e := newEnv(t)
	hosts := map[string]bool{}
	for _, id := range []string{"big-1", "big-2"} {
		req := fakeSpec("--forever")
		req.ContainerID, req.Start = id, true
		req.Spec.Resources.CPU = 3
		c, err := e.c.Create(e.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		hosts[c.Host] = true
	}
	if len(hosts) != 2 {
		t.Fatalf("two 3-core containers on 4-core hosts landed on %v; want one on each", hosts)
	}
	req := fakeSpec("--forever")
	req.Spec.Resources.CPU = 3
	_, err := e.c.Create(e.ctx, req)
	var ce interface{ Error() string }
	if !errors.Is(err, driver.ErrResourceLimit) || !errors.As(err, &ce) ||
		!strings.Contains(err.Error(), "host-a: cpu: 3 cores requested, 1 free of 4") || !strings.Contains(err.Error(), "host-b: cpu") {
		t.Fatalf("a third: %v; want a resource limit naming why each host was unfit", err)
	}
	hostsNow, _ := e.c.Hosts(e.ctx)
	for _, h := range hostsNow {
		if h.Allocated.CPU != 3 || h.Containers != 1 {
			t.Errorf("host %s: allocated %+v with %d containers; want 3 cores, 1 container", h.ID, h.Allocated, h.Containers)
		}
	}
}

// A request published while no orchestrator runs is carried out when one
// starts; and a restarted orchestrator keeps everything it knew.
func TestOrchestratorDownAndRestart(t *testing.T) {
	e := newEnv(t)
	kept := fakeSpec("--forever")
	kept.ContainerID, kept.Start, kept.Name = "kept", true, "keeper"
	if _, err := e.c.Create(e.ctx, kept); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Stop(); err != nil {
		t.Fatal(err)
	}
	req := fakeSpec("--forever")
	req.ContainerID, req.Start = "while-down", true
	if _, err := e.publisher().Publish(e.ctx, createEvent(t, req)); err != nil {
		t.Fatal(err)
	}
	e.startOrchestrator()
	e.waitStatus("while-down", api.StatusRunning)
	c := e.waitStatus("keeper", api.StatusRunning)
	if c.ID != "kept" {
		t.Fatalf("name keeper resolves to %s; want kept", c.ID)
	}
	hosts, _ := e.c.Hosts(e.ctx)
	var cpu float64
	for _, h := range hosts {
		cpu += h.Allocated.CPU
	}
	if cpu != 1 {
		t.Fatalf("allocated %g cores after the restart; want 1 (two containers of 0.5)", cpu)
	}
}

// Without its bucket the state is rebuilt from the events stream.
func TestStateRebuiltFromEvents(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--forever")
	req.ContainerID, req.Start = "rebuilt", true
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	gone := fakeSpec("--forever")
	gone.ContainerID = "gone"
	if _, err := e.c.Create(e.ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := e.c.Remove(e.ctx, "gone", false); err != nil {
		t.Fatal(err)
	}
	if err := e.sys.Stop(); err != nil {
		t.Fatal(err)
	}
	_, js := e.nats.Connect()
	if err := js.DeleteKeyValue(e.ctx, events.BucketContainers); err != nil {
		t.Fatal(err)
	}
	e.startOrchestrator() // provisions the bucket again, empty
	c := e.waitStatus("rebuilt", api.StatusRunning)
	if c.Host == "" || c.Image != "fake" {
		t.Fatalf("rebuilt %+v", c)
	}
	if _, err := e.c.Get(e.ctx, "gone"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("a removed container came back: %v", err)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t)
	post := func(path, ctype string, body []byte) (int, api.Error) {
		req, _ := http.NewRequest(http.MethodPost, e.sys.HTTPURL+path, bytes.NewReader(body))
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out api.Error
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	big := fakeSpec("--forever")
	big.Spec.Env = map[string]string{"BIG": strings.Repeat("x", 2<<20)}
	bigBody, _ := json.Marshal(big)
	for _, tc := range []struct {
		name, path, ctype string
		body              []byte
		code              int
		kind              api.ErrorKind
		field             string
	}{
		{"not JSON", "/v1/containers", "application/json", []byte("{nope"), 400, "invalid", "body"},
		{"failing the schema", "/v1/containers", "application/json", []byte(`{"spec":{"image":"fake","resources":{"cpu":-1}}}`), 400, "invalid", "data.spec.resources.cpu"},
		{"explicit zero memory", "/v1/containers", "application/json", []byte(`{"driver":"fake","spec":{"image":"fake","resources":{"memoryMB":0}}}`), 400, "invalid", "data.spec.resources.memoryMB"},
		{"impossible resources", "/v1/containers", "application/json", []byte(`{"driver":"fake","spec":{"image":"fake","resources":{"cpu":64}}}`), 422, "resource_limit", ""},
		{"unknown driver", "/v1/containers", "application/json", []byte(`{"driver":"warp","spec":{"image":"fake"}}`), 503, "unavailable", ""},
		{"dangerous capability", "/v1/containers", "application/json", []byte(`{"driver":"fake","spec":{"image":"fake","security":{"capAdd":["SYS_ADMIN"]}}}`), 403, "permission", "spec.security.capAdd[0]"},
		{"docker socket", "/v1/containers", "application/json", []byte(`{"driver":"fake","spec":{"image":"fake","volumes":[{"source":"/var/run/docker.sock","target":"/s"}]}}`), 403, "permission", "spec.volumes[0].source"},
		{"oversized", "/v1/containers", "application/json", bigBody, 413, "too_large", "body"},
		{"unknown container", "/v1/containers/nope/start", "application/json", nil, 404, "not_found", ""},
		{"malformed CloudEvent", "/v1/events", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"x","type":"io.openagent.container.start.requested"}`), 400, "", ""},
		{"unknown type", "/v1/events", "application/cloudevents+json", []byte(`{"specversion":"1.0","id":"y","source":"/t","type":"io.openagent.container.explode","data":{}}`), 400, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, got := post(tc.path, tc.ctype, tc.body)
			if code != tc.code || got.Kind != tc.kind && tc.kind != "" || tc.field != "" && got.Field != tc.field {
				t.Fatalf("got %d %+v; want %d %s on %q", code, got, tc.code, tc.kind, tc.field)
			}
		})
	}
	// Bad input on the durable door: rejected with the reason, terminated,
	// never redelivered; valid input after it is still carried out.
	_, js := e.nats.Connect()
	if _, err := js.Publish(e.ctx, events.RequestsRoot+".container.create.requested", []byte("garbage")); err != nil {
		t.Fatal(err)
	}
	bad, _ := events.New(events.ContainerCreateRequested, "/tests", map[string]any{"spec": map[string]any{"image": ""}})
	if _, err := js.PublishMsg(e.ctx, mustMsg(t, bad)); err != nil {
		t.Fatal(err)
	}
	e.eventually("the schema failure rejected, naming the field", func() bool {
		for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "request.rejected"}) {
			var d struct{ Error api.Error }
			if err == nil && events.CorrelationID(ev) == bad.ID() && events.Data(ev, &d) == nil {
				return d.Error.Field == "data.spec.image"
			}
		}
		return false
	})
	cons, err := js.Consumer(e.ctx, events.StreamRequests, "orchestrator")
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("nothing left pending", func() bool {
		info, err := cons.Info(e.ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	all, _ := e.c.List(e.ctx, client.ListOptions{All: true})
	if len(all) != 0 {
		t.Fatalf("bad input made containers: %+v", all)
	}
	var rejected int
	for _, err := range e.c.Events(e.ctx, client.EventFilter{Type: "request.rejected"}) {
		if err != nil {
			t.Fatal(err)
		}
		rejected++
	}
	if rejected < 3 {
		t.Fatalf("%d rejections in the audit log; want one for the garbage, the schema failure and each HTTP one", rejected)
	}
}

func mustMsg(t *testing.T, e events.Event) *nats.Msg {
	t.Helper()
	m, err := events.ToMsg(events.RequestsRoot+".container.create.requested", e)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
