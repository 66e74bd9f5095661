package events

import (
	"context"
	"errors"
	"fmt"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Trace context rides in every event as the W3C traceparent and tracestate
// extension attributes (the CloudEvents distributed-tracing extension):
// an event carries the span of the step that decided it, and its consumer
// continues that trace. With tracing off, the attributes are still carried
// over from cause to effect (CausedBy), so a caller's trace id reaches the
// sandbox either way.

// propagator reads and writes the W3C trace context.
var propagator = propagation.TraceContext{}

// eventCarrier exposes an event's trace attributes to the propagator.
type eventCarrier struct{ e *Event }

func (c eventCarrier) Get(key string) string { return Ext(*c.e, key) }
func (c eventCarrier) Set(key, value string) { WithExtension(key, value)(c.e) }
func (c eventCarrier) Keys() []string        { return []string{ExtTraceParent, ExtTraceState} }

// WithTraceFrom sets the trace context of the span in ctx, replacing what
// CausedBy carried over; a context without a valid span sets nothing.
// Give it after CausedBy.
func WithTraceFrom(ctx context.Context) Option {
	return func(e *Event) {
		if !trace.SpanContextFromContext(ctx).IsValid() {
			return
		}
		e.SetExtension(ExtTraceState, nil)
		propagator.Inject(ctx, eventCarrier{e})
	}
}

// TraceContext returns ctx carrying the span context an event names, as a
// remote parent; ctx itself when the event carries none.
func TraceContext(ctx context.Context, e Event) context.Context {
	if Ext(e, ExtTraceParent) == "" {
		return ctx
	}
	return propagator.Extract(ctx, eventCarrier{&e})
}

// TraceParent is the traceparent of the span in ctx, or else the one the
// event carries: what a sandbox is given as TRACEPARENT.
func TraceParent(ctx context.Context, e Event) (traceparent, tracestate string) {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		var c propagation.MapCarrier = map[string]string{}
		propagator.Inject(ctx, c)
		return c[ExtTraceParent], c[ExtTraceState]
	}
	return Ext(e, ExtTraceParent), Ext(e, ExtTraceState)
}

// parseTraceParent splits the W3C form: version, trace id, parent span
// id, flags, in lowercase hex, and what a later version appends. By hand,
// not by a regular expression: every event with trace context is checked.
func parseTraceParent(tp string) (version, traceID, parentID, rest string, ok bool) {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return "", "", "", "", false
	}
	if !lowerHex(tp[0:2]) || !lowerHex(tp[3:35]) || !lowerHex(tp[36:52]) || !lowerHex(tp[53:55]) {
		return "", "", "", "", false
	}
	if rest = tp[55:]; rest != "" && rest[0] != '-' {
		return "", "", "", "", false
	}
	return tp[0:2], tp[3:35], tp[36:52], rest, true
}

func lowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// checkTrace checks an event's trace attributes.
func checkTrace(e Event) error {
	err := CheckTrace(Ext(e, ExtTraceParent), Ext(e, ExtTraceState))
	var ve *ValidationError
	if errors.As(err, &ve) {
		ve.Type = e.Type()
	}
	return err
}

// CheckTrace checks trace context's format (W3C Trace Context): a
// *ValidationError names what is wrong, the traceparent or the tracestate.
func CheckTrace(tp, ts string) error {
	if tp != "" {
		version, traceID, parentID, rest, ok := parseTraceParent(tp)
		bad := ""
		switch {
		case !ok:
			bad = "is not version-traceid-parentid-flags in lowercase hex (00-<32 hex>-<16 hex>-<2 hex>)"
		case version == "ff":
			bad = "has the invalid version ff"
		case version == "00" && rest != "":
			bad = "has fields after the flags, which version 00 does not"
		case traceID == "00000000000000000000000000000000":
			bad = "has an all-zero trace id"
		case parentID == "0000000000000000":
			bad = "has an all-zero parent id"
		}
		if bad != "" {
			return &ValidationError{Field: ExtTraceParent, Rule: "w3c-trace-context", Message: fmt.Sprintf("%q %s", tp, bad)}
		}
	}
	if ts != "" {
		if tp == "" {
			return &ValidationError{Field: ExtTraceState, Rule: "w3c-trace-context", Message: "is set without a traceparent"}
		}
		if _, err := trace.ParseTraceState(ts); err != nil {
			return &ValidationError{Field: ExtTraceState, Rule: "w3c-trace-context", Message: fmt.Sprintf("%q: %v", ts, err)}
		}
	}
	return nil
}

// spanAttributes describe an event on the span that publishes or
// processes it (OpenTelemetry's messaging and CloudEvents conventions).
func spanAttributes(subject string, e Event) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		semconv.MessagingSystemKey.String("nats"),
		semconv.MessagingDestinationName(subject),
		semconv.MessagingMessageID(e.ID()),
		semconv.CloudEventsEventID(e.ID()),
		semconv.CloudEventsEventType(e.Type()),
		semconv.CloudEventsEventSource(e.Source()),
	}
	for _, a := range [...]struct{ ext, key string }{
		{ExtContainerID, "openagent.container.id"}, {ExtHostID, "openagent.host.id"}, {ExtSessionID, "openagent.session.id"},
		{ExtCorrelationID, "openagent.correlation.id"},
	} {
		if v := Ext(e, a.ext); v != "" {
			attrs = append(attrs, attribute.String(a.key, v))
		}
	}
	return attrs
}

// EndSpan ends a span with its outcome: an error sets its status.
func EndSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// StartSpan starts a span of one step under the span in ctx; with a nil
// tracer (tracing off) it returns ctx and a span that records nothing, at
// no cost.
func StartSpan(ctx context.Context, t trace.Tracer, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if t == nil {
		return ctx, noop.Span{}
	}
	return t.Start(ctx, name, trace.WithAttributes(attrs...))
}
