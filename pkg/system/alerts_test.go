package system_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/telemetry"
)

// receiver is a webhook receiver: it checks every delivery's signature,
// fails the first ones it is told to, and keeps what it took.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	fail     int // deliveries still to answer 503
	got      []events.Event
	attempts map[string]int // by delivery id
	bad      []string
}

func newReceiver(t *testing.T, secret string, fail int) *receiver {
	r := &receiver{fail: fail, attempts: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := telemetry.VerifyDelivery(secret, req.Header, body, time.Minute, time.Now()); err != nil {
			r.bad = append(r.bad, err.Error())
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		r.attempts[req.Header.Get(telemetry.HeaderDelivery)]++
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var e events.Event
		if err := json.Unmarshal(body, &e); err != nil || req.Header.Get("Content-Type") != "application/cloudevents+json" {
			r.bad = append(r.bad, fmt.Sprintf("not a structured CloudEvent: %v", err))
		}
		r.got = append(r.got, e)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) events() []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]events.Event(nil), r.got...)
}

// An alert rule over containers' samples fires after its for, is
// published, and is delivered to a real HTTP receiver signed, through its
// failures; it resolves when its container goes, and the deliveries are
// kept with their attempts.
func TestAlertsFireAndDeliver(t *testing.T) {
	const secret = "s3cret"
	rcv := newReceiver(t, secret, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "alerts.json")
	cfg := fmt.Sprintf(`{
  "evaluateEvery": "100ms",
  "rules": [
    {"id": "cpu-high", "name": "High CPU usage", "on": "container", "expr": "container.cpu > 1 && container.labels.team == 'search'",
     "for": "500ms", "severity": "high", "summary": "more than a core",
     "actions": [{"type": "log"}, {"type": "event"}, {"type": "webhook", "webhook": "ops"}]},
    {"id": "quiet", "on": "host", "expr": "host.containers > 100", "severity": "low"}
  ],
  "webhooks": [{"name": "ops", "url": %q, "secret": %q,
    "resilience": {"maxRetries": 3, "baseDelay": "20ms", "maxDelay": "50ms"}}]
}`, rcv.URL, secret)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, system.Config{Alerts: path}, "host-a", fake.New())
	quiet := fakeSpec("--forever", "--use-cpu", "1.5")
	quiet.ContainerID, quiet.Start = "other-team", true // busy, but not the rule's
	busy := fakeSpec("--forever", "--use-cpu", "1.5", "--use-memory", "256")
	busy.ContainerID, busy.Start = "busy", true
	busy.Spec.Labels = map[string]string{"team": "search"}
	for _, req := range []api.CreateRequest{quiet, busy} {
		if _, err := e.c.Create(e.ctx, req); err != nil {
			t.Fatal(err)
		}
	}

	e.eventually("the firing alert delivered", func() bool { return len(rcv.events()) >= 1 })
	got := rcv.events()[0]
	var d events.AlertData
	if err := events.Data(got, &d); err != nil || got.Type() != events.AlertFiring || d.Alert != "cpu-high/container/busy" ||
		d.HostID != "host-a" || d.Values["container.cpu"] != 1.5 || d.Values["container.memoryBytes"] != 256<<20 {
		t.Fatalf("delivered %s %+v (%v); want busy's alert firing with its figures", got.Type(), d, err)
	}
	var fired []events.Event
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "alert.firing"}) {
		if err != nil {
			t.Fatal(err)
		}
		fired = append(fired, ev)
	}
	if len(fired) != 1 || fired[0].ID() != got.ID() || events.Ext(fired[0], events.ExtContainerID) != "busy" {
		t.Fatalf("the events stream has %d firings; want busy's one, delivered (other-team's labels are not the rule's)", len(fired))
	}
	a, err := e.c.Alerts(e.ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Rules) != 2 || a.Rules[0].For != "500ms" || len(a.Firing) != 1 || a.Firing[0].Alert != d.Alert || len(a.Webhooks) != 1 || a.Webhooks[0].Breaker != "closed" {
		t.Fatalf("alerts: %+v", a)
	}
	if len(a.Deliveries) != 1 || a.Deliveries[0].State != api.DeliveryDelivered || len(a.Deliveries[0].Attempts) != 3 ||
		a.Deliveries[0].Attempts[0].Status != 503 || a.Deliveries[0].Attempts[2].Status != 200 {
		t.Fatalf("deliveries: %+v; want one delivered at the third attempt", a.Deliveries)
	}

	// Its container goes: the alert resolves, and that is delivered too.
	if err := e.c.Remove(e.ctx, "busy", true); err != nil {
		t.Fatal(err)
	}
	e.eventually("the resolution delivered", func() bool { return len(rcv.events()) >= 2 })
	resolved := rcv.events()[1]
	if err := events.Data(resolved, &d); err != nil || resolved.Type() != events.AlertResolved || d.Alert != "cpu-high/container/busy" {
		t.Fatalf("delivered %s %+v; want busy's alert resolved", resolved.Type(), d)
	}
	a, err = e.c.Alerts(e.ctx, 0)
	if err != nil || len(a.Firing) != 0 || len(a.Deliveries) != 2 {
		t.Fatalf("alerts after: %+v, %v", a, err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.bad) != 0 {
		t.Errorf("deliveries the receiver refused: %q", rcv.bad)
	}
	for id, n := range rcv.attempts {
		if n > 3 {
			t.Errorf("delivery %s attempted %d times", id, n)
		}
	}
}

// A receiver that refuses (4xx) is not tried again, and its delivery
// says so; a bad alerts file keeps the system from starting, named.
func TestAlertsRefusedAndBadConfig(t *testing.T) {
	refuser := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { w.WriteHeader(http.StatusForbidden) }))
	defer refuser.Close()
	dir := t.TempDir()
	path := filepath.Join(dir, "alerts.json")
	os.WriteFile(path, []byte(fmt.Sprintf(`{"evaluateEvery": "100ms",
  "rules": [{"id": "running", "on": "container", "expr": "container.status == 'running'", "severity": "info",
             "actions": [{"type": "webhook", "webhook": "nope"}]}],
  "webhooks": [{"name": "nope", "url": %q, "secret": "x"}]}`, refuser.URL)), 0o600)
	e := newEnvWith(t, system.Config{Alerts: path}, "host-a", fake.New())
	req := fakeSpec("--forever")
	req.Start = true
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	var a *api.Alerts
	e.eventually("the refused delivery", func() bool {
		var err error
		a, err = e.c.Alerts(e.ctx, 0)
		return err == nil && len(a.Deliveries) == 1 && a.Deliveries[0].State == api.DeliveryRefused
	})
	if n := len(a.Deliveries[0].Attempts); n != 1 || a.Deliveries[0].Attempts[0].Status != http.StatusForbidden {
		t.Fatalf("attempts %+v; want one, 403", a.Deliveries[0].Attempts)
	}

	os.WriteFile(path, []byte(`{"rules": [{"id": "x", "on": "host", "expr": "host.live &&", "severity": "low"}]}`), 0o600)
	_, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, Alerts: path})
	if err == nil || !strings.Contains(err.Error(), "rule x: expr") || !strings.Contains(err.Error(), path) {
		t.Fatalf("start with a bad rule: %v; want the file and the rule named", err)
	}
}

// A new leader goes on from the alerts the events stream says fire: it
// does not fire them again (nor deliver them twice), and resolves them
// when they no longer hold.
func TestAlertsAcrossAFailover(t *testing.T) {
	const secret = "s3cret"
	rcv := newReceiver(t, secret, 0)
	path := filepath.Join(t.TempDir(), "alerts.json")
	os.WriteFile(path, []byte(fmt.Sprintf(`{"evaluateEvery": "100ms",
  "rules": [{"id": "cpu-high", "on": "container", "expr": "container.cpu > 1", "severity": "high",
             "actions": [{"type": "event"}, {"type": "webhook", "webhook": "ops"}]}],
  "webhooks": [{"name": "ops", "url": %q, "secret": %q}]}`, rcv.URL, secret)), 0o600)
	e := newEnvWith(t, system.Config{Alerts: path, ID: "orch-a", LeaseTTL: time.Second}, "host-a", fake.New())
	b, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, HTTPAddr: "127.0.0.1:0", TokensDir: e.tokens,
		ID: "orch-b", Alerts: path, LeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop() })
	busy := fakeSpec("--forever", "--use-cpu", "2")
	busy.ContainerID, busy.Start = "busy", true
	if _, err := e.c.Create(e.ctx, busy); err != nil {
		t.Fatal(err)
	}
	e.eventually("the alert delivered", func() bool { return len(rcv.events()) == 1 })
	e.sys.Stop()
	cb := client.New(b.HTTPURL, client.WithToken(b.AdminToken()))
	e.eventually("the follower leads", func() bool { r, _ := role(t, b.HTTPURL); return r == "leader" })
	// Several evaluations under the new leader, the container still busy.
	time.Sleep(time.Second)
	if n := len(rcv.events()); n != 1 {
		t.Fatalf("%d deliveries after the failover; want the one firing, not again", n)
	}
	if err := cb.Remove(e.ctx, "busy", true); err != nil {
		t.Fatal(err)
	}
	e.eventually("the resolution delivered", func() bool { return len(rcv.events()) == 2 })
	if typ := rcv.events()[1].Type(); typ != events.AlertResolved {
		t.Fatalf("the second delivery is %s; want the resolution", typ)
	}
	var firings int
	for ev, err := range cb.Events(e.ctx, client.EventFilter{Type: "alert.firing"}) {
		if err != nil {
			t.Fatal(err)
		}
		firings++
		_ = ev
	}
	if firings != 1 {
		t.Fatalf("%d firings in the events stream; want 1", firings)
	}
}
