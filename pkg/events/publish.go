package events

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
)

// Publisher validates events and stores them in JetStream. The event id is
// the Nats-Msg-Id, so a publish retried after a lost ack is stored once.
// It is safe for concurrent use.
type Publisher struct {
	js       jetstream.JetStream
	v        *Validator
	attempt  time.Duration
	retry    retrypolicy.RetryPolicy[*jetstream.PubAck]
	validate bool
	ingest   string       // the host whose ingest subtree events go to; "" for the events stream
	tracer   trace.Tracer // nil traces nothing
}

// PublisherOption configures a Publisher.
type PublisherOption func(*Publisher)

// WithAttemptTimeout bounds one publish attempt when the caller's context
// has no earlier deadline. The default is 5s.
func WithAttemptTimeout(d time.Duration) PublisherOption {
	return func(p *Publisher) { p.attempt = d }
}

// WithRetries sets how often a timed-out publish is tried again (default 5).
func WithRetries(n int) PublisherOption {
	return func(p *Publisher) { p.retry = newRetry(n) }
}

// ThroughIngest makes a worker's publisher: events go to its host's
// subtree of the ingest stream, which the orchestrator checks and moves to
// the events stream; a worker may publish nowhere else.
func ThroughIngest(host string) PublisherOption {
	return func(p *Publisher) { p.ingest = host }
}

// WithPublishTracer makes every publish a producer span, a child of the
// span in the caller's context; nil (the default) traces nothing.
func WithPublishTracer(t trace.Tracer) PublisherOption {
	return func(p *Publisher) { p.tracer = t }
}

// NewPublisher returns a publisher that validates with v.
func NewPublisher(js jetstream.JetStream, v *Validator, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, v: v, attempt: 5 * time.Second, retry: newRetry(5), validate: true}
	for _, o := range opts {
		o(p)
	}
	return p
}

func newRetry(n int) retrypolicy.RetryPolicy[*jetstream.PubAck] {
	return retrypolicy.NewBuilder[*jetstream.PubAck]().
		HandleIf(func(_ *jetstream.PubAck, err error) bool { return retryablePublish(err) }).
		WithMaxRetries(n).
		WithBackoff(20*time.Millisecond, time.Second).
		ReturnLastFailure().
		Build()
}

// retryablePublish reports whether a failed publish may have been lost on
// the way (a timeout, or no stream leader for a moment) rather than refused.
func retryablePublish(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// Publish validates e, publishes it on the subject its type and routing
// attributes name, and waits for JetStream to store it. A timed-out attempt
// is retried with the same id. The ack's Duplicate field reports whether
// the event had been stored before.
func (p *Publisher) Publish(ctx context.Context, e Event) (_ *jetstream.PubAck, err error) {
	if p.tracer != nil {
		var span trace.Span
		ctx, span = p.tracer.Start(ctx, "publish "+Name(e.Type()), trace.WithSpanKind(trace.SpanKindProducer))
		defer func() { EndSpan(span, err) }()
	}
	if p.validate {
		if err := p.v.Validate(e); err != nil {
			return nil, err
		}
	}
	subject, err := Subject(e)
	if err != nil {
		return nil, err
	}
	if p.ingest != "" {
		subject = IngestSubject(p.ingest, subject)
	}
	m, err := ToMsg(subject, e)
	if err != nil {
		return nil, err
	}
	if err := p.v.CheckSize(m); err != nil {
		return nil, err
	}
	m.Header.Set(jetstream.MsgIDHeader, e.ID())
	if p.tracer != nil {
		trace.SpanFromContext(ctx).SetAttributes(spanAttributes(subject, e)...)
	}
	ack, err := failsafe.With(p.retry).WithContext(ctx).Get(func() (*jetstream.PubAck, error) {
		actx, cancel := context.WithTimeout(ctx, p.attempt)
		defer cancel()
		return p.js.PublishMsg(actx, m)
	})
	if err != nil {
		return nil, fmt.Errorf("events: publish %s %s: %w", e.Type(), e.ID(), err)
	}
	return ack, nil
}
