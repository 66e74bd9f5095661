package system_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/events"
)

// call makes an HTTP call as the admin and returns the status, the
// headers and the body.
func (e *env) call(method, path, ctype string, body []byte) (int, http.Header, []byte) {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.ctx, method, e.sys.HTTPURL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

// The HTTP habits clients bring: 415 for a body the API does not read,
// JSON for 404 and 405, 201 for what a POST created, and JSON type errors
// that name the field as the API spells it.
func TestHTTPHabits(t *testing.T) {
	e := newEnv(t)
	spec, _ := json.Marshal(fakeSpec("--forever"))
	apiError := func(b []byte) api.Error {
		t.Helper()
		var ae api.Error
		if err := json.Unmarshal(b, &ae); err != nil || ae.Message == "" {
			t.Fatalf("not a JSON error: %q (%v)", b, err)
		}
		return ae
	}
	for _, ct := range []string{"text/plain", "application/x-www-form-urlencoded", "application/cloudevents-batch+json"} {
		code, _, b := e.call("POST", "/v1/containers", ct, spec)
		if code != http.StatusUnsupportedMediaType {
			t.Errorf("POST with %s: %d %s; want 415", ct, code, b)
			continue
		}
		if ae := apiError(b); ae.Field != "Content-Type" {
			t.Errorf("POST with %s: the error names %q; want Content-Type", ct, ae.Field)
		}
	}
	code, h, b := e.call("DELETE", "/v1/hosts", "", nil)
	if code != http.StatusMethodNotAllowed || h.Get("Allow") != "GET" {
		t.Errorf("DELETE /v1/hosts: %d Allow %q; want 405 allowing GET", code, h.Get("Allow"))
	}
	apiError(b)
	if code, _, b = e.call("GET", "/v1/nowhere", "", nil); code != http.StatusNotFound {
		t.Errorf("GET /v1/nowhere: %d", code)
	}
	apiError(b)

	code, h, b = e.call("POST", "/v1/containers", "application/json", spec)
	var c api.Container
	if code != http.StatusCreated || json.Unmarshal(b, &c) != nil || h.Get("Location") != "/v1/containers/"+c.ID {
		t.Fatalf("create: %d Location %q %s; want 201 with the container and its location", code, h.Get("Location"), b)
	}
	code, _, b = e.call("POST", "/v1/sessions", "application/json", []byte(`{"driver":"fake","cpu":"lots"}`))
	if ae := apiError(b); code != http.StatusBadRequest || ae.Field != "cpu" || !strings.Contains(ae.Message, "a number") || strings.Contains(ae.Message, "Data") {
		t.Errorf("a string for a number: %d %+v; want 400 naming cpu, wanting a number, no Go names", code, ae)
	}
	code, _, b = e.call("POST", "/v1/sessions", "application/json", []byte(`{"driver":"fake","cpus":1}`))
	if ae := apiError(b); code != http.StatusBadRequest || ae.Field != "cpus" {
		t.Errorf("an unknown field: %d %+v; want 400 naming cpus", code, ae)
	}
}

// The official CloudEvents SDK, over HTTP: a request event in binary and in
// structured mode, with an extension and odd characters, is answered with
// its outcome; a structured event that fails validation is answered under
// the id its sender chose.
func TestCloudEventsSDKOverHTTP(t *testing.T) {
	e := newEnv(t)
	p, err := cloudevents.NewHTTP(cloudevents.WithTarget(e.sys.HTTPURL+"/v1/events"),
		cehttp.WithHeader("Authorization", "Bearer "+e.sys.AdminToken()))
	if err != nil {
		t.Fatal(err)
	}
	ce, err := cloudevents.NewClient(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"binary", "structured"} {
		t.Run(mode, func(t *testing.T) {
			ev := cloudevents.NewEvent()
			ev.SetID("sdk " + mode + " ü/1")
			ev.SetSource("/tests/sdk")
			ev.SetType(events.ContainerCreateRequested)
			ev.SetExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			if err := ev.SetData(cloudevents.ApplicationJSON, fakeSpec("--forever")); err != nil {
				t.Fatal(err)
			}
			rctx := e.ctx
			if mode == "structured" {
				rctx = cloudevents.WithEncodingStructured(rctx)
			} else {
				rctx = cloudevents.WithEncodingBinary(rctx)
			}
			reply, res := ce.Request(rctx, ev)
			if !cloudevents.IsACK(res) || reply == nil {
				t.Fatalf("%s: %v", mode, res)
			}
			if reply.Type() != events.RequestAccepted || events.Ext(*reply, events.ExtCorrelationID) != ev.ID() {
				t.Fatalf("%s: answered %s, correlation %q; want accepted for %q", mode, reply.Type(), events.Ext(*reply, events.ExtCorrelationID), ev.ID())
			}
		})
	}
	bad := cloudevents.NewEvent()
	bad.SetID("sdk-invalid-1")
	bad.SetSource("/tests/sdk")
	bad.SetType(events.ContainerCreateRequested)
	_ = bad.SetData(cloudevents.ApplicationJSON, map[string]any{"spec": 7})
	reply, _ := ce.Request(cloudevents.WithEncodingStructured(e.ctx), bad)
	if reply == nil || reply.Type() != events.RequestRejected {
		t.Fatalf("an invalid event: %v; want a rejection", reply)
	}
	var rej events.RejectedData
	if err := reply.DataAs(&rej); err != nil || rej.RequestID != "sdk-invalid-1" {
		t.Fatalf("the rejection is for %q (%v); want the sender's id sdk-invalid-1", rej.RequestID, err)
	}
}

// The events' cursor: from a sequence number, each event served with its
// own; a bad cursor, or two, is refused naming from.
func TestEventsFromCursor(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--forever")
	req.Start = true
	c, err := e.c.Create(e.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: c.ID}) {
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, events.StreamSeq(ev))
	}
	if len(seqs) < 3 || seqs[0] == 0 || !slices.IsSorted(seqs) {
		t.Fatalf("the container's events came with sequences %v; want rising, from 1 on", seqs)
	}
	var resumed []uint64
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Container: c.ID, From: seqs[1]}) {
		if err != nil {
			t.Fatal(err)
		}
		resumed = append(resumed, events.StreamSeq(ev))
	}
	if !slices.Equal(resumed, seqs[1:]) {
		t.Fatalf("from %d: %v; want %v", seqs[1], resumed, seqs[1:])
	}
	for _, q := range []string{"from=0", "from=yesterday", "from=3&since=1h"} {
		code, _, body := e.call("GET", "/v1/events?"+q, "", nil)
		if code != http.StatusBadRequest || !strings.Contains(string(body), `"from"`) {
			t.Errorf("GET /v1/events?%s: %d %s; want 400 naming from", q, code, body)
		}
	}
}

// The metrics a Prometheus scrapes: requests by type and outcome, their
// latency and each stage's, containers by status and their resource
// samples, hosts by state, each driver's breaker and errors, the
// consumers' lag, sessions and pools.
func TestMetrics(t *testing.T) {
	e := newEnv(t)
	req := fakeSpec("--forever", "--use-cpu", "1.5", "--use-memory", "256")
	req.Start, req.ContainerID, req.HostID = true, "busy", "host-b"
	if _, err := e.c.Create(e.ctx, req); err != nil {
		t.Fatal(err)
	}
	bad := fakeSpec("--forever")
	bad.Spec.Resources.CPU = -1
	_, _ = e.c.Create(e.ctx, bad)
	// A program the fake cannot run fails at the driver, on its host.
	broken := fakeSpec("--no-such-flag")
	broken.HostID = "host-b"
	_, _ = e.c.Create(e.ctx, broken)
	if _, err := e.c.SetPool(e.ctx, api.Pool{Driver: "fake", Size: 1, Max: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake"}); err != nil {
		t.Fatal(err)
	}
	wants := []string{
		`openagent_requests_total{outcome="accepted",type="container.create.requested"}`,
		`openagent_requests_total{outcome="invalid",type="container.create.requested"} 1`,
		`openagent_request_duration_seconds_bucket{type="container.create.requested",le="+Inf"}`,
		`openagent_containers{status="running"}`,
		`openagent_containers{status="failed"} 1`,
		`openagent_hosts{state="live"} 2`,
		`openagent_hosts{state="lost"} 0`,
		`openagent_driver_breaker_open{driver="fake",host=`,
		`openagent_driver_errors_total{driver="fake",host="host-b",kind="invalid"} 1`,
		`openagent_stage_duration_seconds_count{stage="admit"}`,
		`openagent_stage_duration_seconds_count{stage="place"}`,
		`openagent_stage_duration_seconds_count{stage="create"}`,
		`openagent_stage_duration_seconds_count{stage="start"}`,
		`openagent_consumer_pending{consumer="orchestrator",stream="OPENAGENT_REQUESTS"} 0`,
		`openagent_consumer_ack_pending{consumer="orchestrator",stream="OPENAGENT_REQUESTS"} 0`,
		`openagent_consumer_pending{consumer="worker-host-b",stream="OPENAGENT_COMMANDS"}`,
		`openagent_container_cpu_cores{container="busy",host="host-b"} 1.5`,
		`openagent_container_memory_bytes{container="busy",host="host-b"} 2.68435456e+08`,
		`openagent_sessions{status="ready"} 1`,
		`openagent_pool_size{driver="fake",image="fake",pool=`,
		`openagent_pool_sandboxes{driver="fake",image="fake",pool=`,
	}
	var text string
	var missing []string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, h, body := e.call("GET", "/metrics", "", nil)
		if code != http.StatusOK || !strings.HasPrefix(h.Get("Content-Type"), "text/plain") {
			t.Fatalf("GET /metrics: %d %s", code, h.Get("Content-Type"))
		}
		text, missing = string(body), nil
		for _, want := range wants {
			if !strings.Contains(text, want) {
				missing = append(missing, want)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(missing) > 0 {
		t.Errorf("/metrics lacks %q:\n%s", missing, text)
	}
	// Not without a token.
	req2, _ := http.NewRequestWithContext(e.ctx, "GET", e.sys.HTTPURL+"/metrics", nil)
	res, err := http.DefaultClient.Do(req2)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /metrics without a token: %d", res.StatusCode)
	}
}
