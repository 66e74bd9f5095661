package system_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/events"
)

const (
	callerTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	callerParent = "00-" + callerTrace + "-00f067aa0ba902b7-01"
)

// createTraced creates a container over HTTP with the caller's trace
// context, and returns the status and body.
func (e *env) createTraced(traceparent string, req api.CreateRequest) (int, []byte) {
	e.t.Helper()
	body, _ := json.Marshal(req)
	r, err := http.NewRequestWithContext(e.ctx, "POST", e.sys.HTTPURL+"/v1/containers", bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
	r.Header.Set("traceparent", traceparent)
	r.Header.Set("tracestate", "caller=1")
	res, err := http.DefaultClient.Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

// firstLine is the first line a container wrote.
func (e *env) firstLine(id string) string {
	e.t.Helper()
	var line string
	e.eventually("the container's first line", func() bool {
		for l, err := range e.c.Logs(e.ctx, id, client.LogOptions{}) {
			if err == nil {
				line = l.Line
				return true
			}
		}
		return false
	})
	return line
}

// With tracing on, one trace runs from the caller's HTTP call through the
// orchestrator's steps, the bus and the worker to the driver, and the
// sandbox gets the driver's span as TRACEPARENT.
func TestTraceFromHTTPToTheSandbox(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	e := newTracedEnv(t, tp)
	req := localSpec(`echo "$TRACEPARENT $TRACESTATE"; exec sleep 600`)
	req.ContainerID = "traced"
	if code, b := e.createTraced(callerParent, req); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	e.waitStatus("traced", api.StatusRunning)
	env := strings.Fields(e.firstLine("traced"))

	// The spans end as their steps do; the started event's is the last.
	var spans []sdktrace.ReadOnlySpan
	e.eventually("the spans of the create", func() bool {
		spans = slices.DeleteFunc(rec.Ended(), func(s sdktrace.ReadOnlySpan) bool { return s.SpanContext().TraceID().String() != callerTrace })
		return slices.ContainsFunc(spans, func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "publish container.started" }) &&
			slices.ContainsFunc(spans, func(s sdktrace.ReadOnlySpan) bool { return s.Name() == "POST /v1/containers" })
	})
	byName := map[string]sdktrace.ReadOnlySpan{}
	byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if _, ok := byName[s.Name()]; !ok {
			byName[s.Name()] = s
		}
		byID[s.SpanContext().SpanID()] = s
	}
	// Each step's span, and the chain of parents from the driver to the
	// caller's span.
	chain := func(name string) []string {
		var names []string
		for s := byName[name]; s != nil; s = byID[s.Parent().SpanID()] {
			names = append(names, s.Name())
		}
		return names
	}
	want := []string{"driver create", "process command.container.create", "handle container.create.requested", "POST /v1/containers"}
	if got := chain("driver create"); !slices.Equal(got, want) {
		t.Errorf("driver create's ancestors: %q; want %q (spans: %v)", got, want, names(spans))
	}
	if p := byName["process command.container.create"]; p == nil || !p.Parent().IsRemote() || p.SpanKind() != trace.SpanKindConsumer {
		t.Errorf("the worker's span %v does not continue the trace the command carries", p)
	}
	if got := byName["POST /v1/containers"]; got == nil || got.Parent().SpanID().String() != "00f067aa0ba902b7" || got.SpanKind() != trace.SpanKindServer {
		t.Errorf("the HTTP call's span %v does not continue the caller's", got)
	}
	for _, step := range []string{"admit", "place", "publish container.placed", "publish command.container.create", "publish request.accepted"} {
		if s := byName[step]; s == nil || byID[s.Parent().SpanID()].Name() != "handle container.create.requested" {
			t.Errorf("no %s span under the request's handling (spans: %v)", step, names(spans))
		}
	}
	for _, step := range []string{"driver start", "publish container.created", "publish container.started"} {
		if s := byName[step]; s == nil || byID[s.Parent().SpanID()].Name() != "process command.container.create" {
			t.Errorf("no %s span under the command's processing (spans: %v)", step, names(spans))
		}
	}
	create := byName["driver create"]
	if len(env) != 2 || env[0] != "00-"+callerTrace+"-"+create.SpanContext().SpanID().String()+"-01" || env[1] != "caller=1" {
		t.Errorf("the sandbox's TRACEPARENT TRACESTATE: %q; want the driver create span's, with the caller's state", env)
	}
	// The events in the log carry the trace: an auditor finds the trace of
	// any event.
	for _, ev := range e.eventsOf("traced", events.ContainerStarted) {
		if tp := events.Ext(ev, events.ExtTraceParent); !strings.Contains(tp, callerTrace) {
			t.Errorf("the started event carries traceparent %q; want the caller's trace", tp)
		}
	}
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name())
	}
	return out
}

// With tracing off (the default) no span is made, but the caller's trace
// context still reaches the sandbox as it came, and a malformed one is
// refused with the header named.
func TestTraceContextCarriedWithTracingOff(t *testing.T) {
	e := newEnv(t)
	req := localSpec(`echo "$TRACEPARENT $TRACESTATE"; exec sleep 600`)
	req.ContainerID = "untraced"
	if code, b := e.createTraced(callerParent, req); code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, b)
	}
	e.waitStatus("untraced", api.StatusRunning)
	if got := e.firstLine("untraced"); got != callerParent+" caller=1" {
		t.Errorf("the sandbox's TRACEPARENT TRACESTATE: %q; want the caller's %q", got, callerParent+" caller=1")
	}
	for _, bad := range []string{"00-" + strings.ToUpper(callerTrace) + "-00f067aa0ba902b7-01", "00-" + callerTrace + "-0000000000000000-01", "garbage"} {
		req.ContainerID = "refused"
		code, b := e.createTraced(bad, req)
		var ae api.Error
		_ = json.Unmarshal(b, &ae)
		if code != http.StatusBadRequest || ae.Field != "traceparent" || !strings.Contains(ae.Message, "traceparent") {
			t.Errorf("create with traceparent %q: %d %s; want 400 naming the header", bad, code, b)
		}
	}
}
