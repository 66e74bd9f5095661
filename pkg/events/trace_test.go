package events

import (
	"context"
	"errors"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

const callerParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// A publish is a producer span under the caller's, the event carries the
// caller's span, and its consumer's handler runs in a consumer span whose
// parent is that span: one trace from the caller to the handler.
func TestTraceRidesThroughTheBus(t *testing.T) {
	h := newHarness(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	tracer := tp.Tracer("test")
	pub := NewPublisher(h.js, h.v, WithPublishTracer(tracer))

	// The caller's step, itself continuing a trace from outside.
	caller := startRequest(t, "c-traced")
	caller.SetExtension(ExtTraceParent, callerParent)
	ctx, step := tracer.Start(TraceContext(context.Background(), caller), "step")
	e, err := New(ContainerStartRequested, "/openagent/tests", map[string]string{"containerId": "c-traced"}, CausedBy(caller), WithContainer("c-traced"), WithTraceFrom(ctx))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Publish(ctx, e); err != nil {
		t.Fatal(err)
	}
	step.End()
	if got, want := Ext(e, ExtTraceParent), "00-4bf92f3577b34da6a3ce929d0e0e4736-"+step.SpanContext().SpanID().String()+"-01"; got != want {
		t.Fatalf("the event carries traceparent %q; want the step's %q", got, want)
	}

	got := make(chan trace.SpanContext, 1)
	stop := h.run(h.consumer("traced", 5*time.Second, 3), func(ctx context.Context, d *Delivery) error {
		got <- trace.SpanContextFromContext(ctx)
		return nil
	}, WithConsumeTracer(tracer))
	defer stop()
	var sc trace.SpanContext
	select {
	case sc = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the event was not delivered")
	}
	if sc.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("the handler runs in trace %s; want the caller's", sc.TraceID())
	}
	waitFor(t, "the consumer span to end", func() bool { return len(rec.Ended()) >= 3 })
	spans := map[string]sdktrace.ReadOnlySpan{}
	for _, s := range rec.Ended() {
		spans[s.Name()] = s
	}
	publish, process := spans["publish container.start.requested"], spans["process container.start.requested"]
	if publish == nil || process == nil {
		t.Fatalf("spans %v; want a publish and a process span", rec.Ended())
	}
	if publish.SpanKind() != trace.SpanKindProducer || publish.Parent().SpanID() != step.SpanContext().SpanID() {
		t.Errorf("publish span: kind %v parent %v; want a producer under the step", publish.SpanKind(), publish.Parent().SpanID())
	}
	if process.SpanKind() != trace.SpanKindConsumer || process.Parent().SpanID() != step.SpanContext().SpanID() || !process.Parent().IsRemote() {
		t.Errorf("process span: kind %v parent %v; want a consumer under the step, restored from the event", process.SpanKind(), process.Parent())
	}
	if process.SpanContext().SpanID() != sc.SpanID() {
		t.Errorf("the handler's span is %v; want the process span %v", sc.SpanID(), process.SpanContext().SpanID())
	}
	attrs := map[string]string{}
	for _, a := range process.Attributes() {
		attrs[string(a.Key)] = a.Value.Emit()
	}
	if attrs["cloudevents.event_id"] != e.ID() || attrs["messaging.system"] != "nats" || attrs["openagent.container.id"] != "c-traced" {
		t.Errorf("process span attributes %v; want the event's id, nats and the container", attrs)
	}
}

// Without a tracer nothing is recorded, and an effect still carries its
// cause's trace context, as it came.
func TestTraceCarriedWithTracingOff(t *testing.T) {
	cause := startRequest(t, "c-1")
	cause.SetExtension(ExtTraceParent, callerParent)
	cause.SetExtension(ExtTraceState, "vendor=1")
	e, err := New(ContainerStartRequested, "/openagent/tests", map[string]string{"containerId": "c-1"}, CausedBy(cause), WithTraceFrom(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	if Ext(e, ExtTraceParent) != callerParent || Ext(e, ExtTraceState) != "vendor=1" {
		t.Fatalf("trace context %q %q; want the cause's", Ext(e, ExtTraceParent), Ext(e, ExtTraceState))
	}
	tp, ts := TraceParent(context.Background(), e)
	if tp != callerParent || ts != "vendor=1" {
		t.Fatalf("TraceParent = %q %q; want the event's", tp, ts)
	}
	if err := newValidator(t).Validate(e); err != nil {
		t.Fatal(err)
	}
}

// The W3C forms: version 00 exactly, a later version with fields after,
// and what is refused, with the attribute named.
func TestCheckTrace(t *testing.T) {
	for _, c := range []struct {
		tp, ts string
		field  string // "" when valid
	}{
		{callerParent, "", ""},
		{callerParent, "a=1,b@x=2", ""},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future", "", ""},
		{callerParent + "-more", "", ExtTraceParent},
		{"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", "", ExtTraceParent},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", "", ExtTraceParent},
		{"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "", ExtTraceParent},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bg-01", "", ExtTraceParent},
		{callerParent, "=", ExtTraceState},
	} {
		err := CheckTrace(c.tp, c.ts)
		var ve *ValidationError
		switch {
		case c.field == "" && err != nil:
			t.Errorf("%q %q: %v; want valid", c.tp, c.ts, err)
		case c.field != "" && (!errors.As(err, &ve) || ve.Field != c.field):
			t.Errorf("%q %q: %v; want %s refused", c.tp, c.ts, err, c.field)
		}
	}
}
