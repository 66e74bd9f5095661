package telemetry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

func cpuRule(forDur time.Duration) Rule {
	return Rule{ID: "cpu-high", On: OnContainer, Expr: "container.cpu > 1", For: Duration(forDur), Severity: "high",
		Actions: []Action{{Type: "log"}, {Type: "event"}}}
}

func busy(id string, cpu float64) Subject {
	c := api.Container{ID: id, Host: "host-a", Status: api.StatusRunning, Resources: api.Resources{CPU: 2, Memory: 512}}
	return Subject{On: OnContainer, ID: id, HostID: "host-a", Vars: map[string]any{OnContainer: ContainerVars(c, &events.ContainerSample{ContainerID: id, CPU: cpu, MemoryBytes: 256 << 20})}}
}

// A rule's alert is pending while its expression holds for less than its
// for, fires once when it has held that long, and resolves once when it
// no longer holds or its subject is gone.
func TestAlertLifecycle(t *testing.T) {
	a, err := NewAlerts(AlertsConfig{Rules: []Rule{cpuRule(10 * time.Second)}})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	step := func(at time.Duration, subjects ...Subject) []Transition { return a.Evaluate(t0.Add(at), subjects) }
	if tr := step(0, busy("c-1", 1.5), busy("c-2", 0.2)); len(tr) != 0 {
		t.Fatalf("at once: %v; want nothing before the for has passed", tr)
	}
	if p := a.Pending(); len(p) != 1 || p[0].Alert != "cpu-high/container/c-1" || !p[0].Since.Equal(t0) {
		t.Fatalf("pending %v; want c-1's since t0", p)
	}
	if tr := step(5*time.Second, busy("c-1", 1.5)); len(tr) != 0 {
		t.Fatalf("at 5s: %v", tr)
	}
	tr := step(10*time.Second, busy("c-1", 1.4))
	if len(tr) != 1 || !tr[0].Firing || !tr[0].Log || !tr[0].Event {
		t.Fatalf("at 10s: %v; want c-1 firing", tr)
	}
	d := tr[0].Data
	if d.Rule != "cpu-high" || d.Subject != "c-1" || d.HostID != "host-a" || d.Severity != "high" || !d.Since.Equal(t0) || d.ForMs != 10000 ||
		d.Values["container.cpu"] != 1.4 || d.Values["container.cpuPercent"] != 70 || d.Values["container.memoryPercent"] != 50 {
		t.Fatalf("firing %+v", d)
	}
	if tr := step(11*time.Second, busy("c-1", 1.5)); len(tr) != 0 {
		t.Fatalf("still holding: %v; want it fired once", tr)
	}
	tr = step(12*time.Second, busy("c-1", 0.5))
	if len(tr) != 1 || tr[0].Firing || tr[0].Data.Reason != "the expression no longer holds" {
		t.Fatalf("at 12s: %v; want c-1 resolved", tr)
	}
	// Held again from 13s; gone at 30s, after it fired at 23s.
	step(13*time.Second, busy("c-1", 2))
	if tr := step(23*time.Second, busy("c-1", 2)); len(tr) != 1 || !tr[0].Firing || !tr[0].Data.Since.Equal(t0.Add(13*time.Second)) {
		t.Fatalf("at 23s: %v; want it firing again, since 13s", tr)
	}
	if tr := step(30 * time.Second); len(tr) != 1 || tr[0].Firing || tr[0].Data.Reason != "the container is gone" {
		t.Fatalf("gone: %v; want resolved as gone", tr)
	}
	// A transition not carried out is made again.
	fired := step(31*time.Second, busy("c-3", 3))
	if len(fired) != 0 {
		t.Fatal(fired)
	}
	fired = step(41*time.Second, busy("c-3", 3))
	a.Undo(fired[0])
	if again := step(42*time.Second, busy("c-3", 3)); len(again) != 1 || !again[0].Firing || !again[0].Data.Since.Equal(fired[0].Data.Since) {
		t.Fatalf("after undo: %v; want the same alert firing again", again)
	}
}

// A new leader restores what fires from the events stream: it does not
// fire it again, and resolves it when it no longer holds.
func TestAlertRestore(t *testing.T) {
	a, err := NewAlerts(AlertsConfig{Rules: []Rule{cpuRule(0)}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a.Restore([]events.AlertData{{Alert: "cpu-high/container/c-1", Rule: "cpu-high", On: OnContainer, Subject: "c-1", Since: now.Add(-time.Minute)}})
	if tr := a.Evaluate(now, []Subject{busy("c-1", 3)}); len(tr) != 0 {
		t.Fatalf("restored and holding: %v; want no second firing", tr)
	}
	if tr := a.Evaluate(now, []Subject{busy("c-1", 0)}); len(tr) != 1 || tr[0].Firing {
		t.Fatalf("%v; want it resolved", tr)
	}
}

// Hosts' rules read host; an expression that fails counts as not
// holding, and its failure is kept.
func TestHostRulesAndErrors(t *testing.T) {
	a, err := NewAlerts(AlertsConfig{Rules: []Rule{
		{ID: "breaker", On: OnHost, Expr: "host.breakersOpen > 0 && host.live", Severity: "critical"},
		{ID: "typo", On: OnHost, Expr: "host.nosuchfield > 1", Severity: "low"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	h := api.Host{ID: "host-a", Live: true, LastSeen: now, Drivers: []api.DriverInfo{{Name: "docker", Breaker: "open", Errors: map[string]uint64{"unavailable": 7}}}}
	tr := a.Evaluate(now, []Subject{{On: OnHost, ID: "host-a", HostID: "host-a", Vars: map[string]any{OnHost: HostVars(h, now)}}})
	if len(tr) != 1 || tr[0].Data.Alert != "breaker/host/host-a" || tr[0].Data.Values["host.driverErrors"] != 7 {
		t.Fatalf("%v; want the breaker alert firing at once, with the errors", tr)
	}
	if e := a.Errors()["typo"]; !strings.Contains(e, "nosuchfield") {
		t.Errorf("errors %v; want typo's named", a.Errors())
	}
}

// A config that cannot work is refused, with the rule and what is wrong.
func TestAlertsConfigRefused(t *testing.T) {
	ok := cpuRule(0)
	hook := Webhook{Name: "ops", URL: "https://hooks.example.com/alerts", Secret: "s"}
	for _, c := range []struct {
		name string
		cfg  AlertsConfig
		want string
	}{
		{"bad id", AlertsConfig{Rules: []Rule{{ID: "a b", On: OnHost, Expr: "true", Severity: "low"}}}, `"a b"`},
		{"twice", AlertsConfig{Rules: []Rule{ok, ok}}, "cpu-high: id used twice"},
		{"on", AlertsConfig{Rules: []Rule{{ID: "x", On: "pod", Expr: "true", Severity: "low"}}}, `on "pod"`},
		{"severity", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "true", Severity: "warning"}}}, `severity "warning"`},
		{"for", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "true", Severity: "low", For: -1}}}, "for"},
		{"syntax", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "host.live &&", Severity: "low"}}}, "rule x: expr"},
		{"not bool", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "1 + 2", Severity: "low"}}}, "true or false"},
		{"host reads container", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "container.cpu > 1", Severity: "low"}}}, "no container"},
		{"action", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "true", Severity: "low", Actions: []Action{{Type: "email"}}}}}, `action "email"`},
		{"unknown webhook", AlertsConfig{Rules: []Rule{{ID: "x", On: OnHost, Expr: "true", Severity: "low", Actions: []Action{{Type: "webhook", Webhook: "pager"}}}}}, `webhook "pager"`},
		{"no secret", AlertsConfig{Webhooks: []Webhook{{Name: "ops", URL: hook.URL}}}, "webhook ops: no secret"},
		{"not http", AlertsConfig{Webhooks: []Webhook{{Name: "ops", URL: "ftp://x", Secret: "s"}}}, "not http"},
	} {
		_, err := NewAlerts(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error naming %s", c.name, err, c.want)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "alerts.json")
	os.WriteFile(path, []byte(`{"rules": [{"id": "x", "on": "host", "expr": "true", "severity": "low", "for": "1 minute"}]}`), 0o600)
	if _, err := LoadAlerts(path); err == nil || !strings.Contains(err.Error(), `"1 minute"`) {
		t.Errorf("a bad duration: %v", err)
	}
	os.WriteFile(path, []byte(`{"rules": [], "hooks": []}`), 0o600)
	if _, err := LoadAlerts(path); err == nil || !strings.Contains(err.Error(), `"hooks"`) {
		t.Errorf("an unknown field: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "secret"), []byte("s3cret\n"), 0o600)
	os.WriteFile(path, []byte(`{"rules": [{"id": "x", "on": "host", "expr": "host.lost", "severity": "critical", "for": "30s",
		"actions": [{"type": "webhook", "webhook": "ops"}]}], "webhooks": [{"name": "ops", "url": "http://127.0.0.1:1/", "secretFile": "`+filepath.Join(dir, "secret")+`"}],
		"evaluateEvery": "1s"}`), 0o600)
	cfg, err := LoadAlerts(path)
	if err != nil || cfg.Webhooks[0].Secret != "s3cret" || time.Duration(cfg.Rules[0].For) != 30*time.Second || time.Duration(cfg.Every) != time.Second {
		t.Fatalf("load: %+v, %v", cfg, err)
	}
}

// A delivery is signed over its timestamp and body; a receiver refuses a
// changed body, another secret, and an old delivery.
func TestWebhookSignature(t *testing.T) {
	body := []byte(`{"id":"1"}`)
	now := time.Now()
	h := http.Header{}
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, Sign("s", now.Unix(), body))
	if err := VerifyDelivery("s", h, body, time.Minute, now); err != nil {
		t.Fatal(err)
	}
	if err := VerifyDelivery("s", h, []byte(`{"id":"2"}`), time.Minute, now); err == nil {
		t.Error("a changed body verified")
	}
	if err := VerifyDelivery("other", h, body, time.Minute, now); err == nil {
		t.Error("another secret verified")
	}
	if err := VerifyDelivery("s", h, body, time.Minute, now.Add(10*time.Minute)); err == nil || !strings.Contains(err.Error(), "replay") {
		t.Errorf("an old delivery: %v", err)
	}
}

// Deliveries are retried while the receiver fails for a while (5xx),
// not when it refuses (4xx); failures in a row open the webhook's
// breaker, which then fails at once.
func TestWebhookDelivery(t *testing.T) {
	var calls, failFirst atomic.Int64
	var refuse atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := VerifyDelivery("s3cret", r.Header, body, time.Minute, time.Now()); err != nil || r.Header.Get(HeaderDelivery) != "d-1" {
			t.Errorf("delivery: %v %q", err, r.Header.Get(HeaderDelivery))
		}
		n := calls.Add(1)
		switch {
		case refuse.Load():
			w.WriteHeader(http.StatusBadRequest)
		case n <= failFirst.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	w := Webhook{Name: "ops", URL: srv.URL, Secret: "s3cret", Resilience: WebhookResilience{MaxRetries: 3, BaseDelay: Duration(10 * time.Millisecond),
		MaxDelay: Duration(20 * time.Millisecond), FailureThreshold: 4, ResetTimeout: Duration(time.Hour)}}
	d := NewDeliverer()
	ctx := context.Background()

	failFirst.Store(2)
	attempts, err := d.Deliver(ctx, w, "d-1", []byte(`{}`))
	if err != nil || len(attempts) != 3 || attempts[0].Status != 503 || attempts[2].Status != 200 {
		t.Fatalf("%+v, %v; want two 503s retried, then 200", attempts, err)
	}
	refuse.Store(true)
	attempts, err = d.Deliver(ctx, w, "d-1", []byte(`{}`))
	if !errors.Is(err, ErrRefused) || len(attempts) != 1 {
		t.Fatalf("%+v, %v; want one attempt, refused", attempts, err)
	}
	refuse.Store(false)
	calls.Store(0)
	failFirst.Store(100)
	attempts, err = d.Deliver(ctx, w, "d-1", []byte(`{}`))
	var open *BreakerOpen
	if err == nil || len(attempts) != 4 || d.BreakerState(w) != "open" {
		t.Fatalf("%d attempts, %v, breaker %s; want 4 failures opening the breaker", len(attempts), err, d.BreakerState(w))
	}
	before := calls.Load()
	if attempts, err = d.Deliver(ctx, w, "d-1", []byte(`{}`)); !errors.As(err, &open) || len(attempts) != 0 || calls.Load() != before || open.Wait <= 0 {
		t.Fatalf("%+v, %v; want no attempt while the breaker is open", attempts, err)
	}
}
