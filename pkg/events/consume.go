package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// Delivery is one event handed to a Handler.
type Delivery struct {
	Event   Event
	Msg     jetstream.Msg
	Attempt uint64 // 1 on first delivery
}

// Handler handles one delivered event. Its error decides the ack:
//
//	nil                       Ack
//	Permanent(err), ErrInvalid Term: never delivered again
//	Retry(err, d), any other  Nak, redelivered after d (or a backoff)
//
// A handler that runs long need not ack: the loop sends InProgress
// heartbeats while it runs. The context is cancelled when the loop stops.
type Handler func(ctx context.Context, d *Delivery) error

// ConsumeOption configures Consume.
type ConsumeOption func(*consumeLoop)

// WithConcurrency bounds the handlers running at once (default 8).
func WithConcurrency(n int) ConsumeOption {
	return func(c *consumeLoop) {
		if n > 0 {
			c.concurrency = n
		}
	}
}

// WithInvalid is called with every message that is not a valid event,
// after it was terminated; use it to publish a rejection.
func WithInvalid(f func(ctx context.Context, m jetstream.Msg, err error)) ConsumeOption {
	return func(c *consumeLoop) { c.onInvalid = f }
}

// WithGiveUp is called when a delivery failed for the last time the
// consumer allows (MaxDeliver) or permanently; use it to publish a failure,
// so that no request ends without an outcome.
func WithGiveUp(f func(ctx context.Context, d *Delivery, err error)) ConsumeOption {
	return func(c *consumeLoop) { c.onGiveUp = f }
}

// WithBackoff sets the first redelivery delay of a failed handler; it
// doubles with each attempt up to max.
func WithBackoff(first, max time.Duration) ConsumeOption {
	return func(c *consumeLoop) { c.backoff, c.maxBackoff = first, max }
}

// WithProgressEvery sets how often a running handler's message is marked
// in progress; the default is a third of the consumer's AckWait.
func WithProgressEvery(d time.Duration) ConsumeOption {
	return func(c *consumeLoop) { c.progress = d }
}

// WithConsumeTracer makes every delivery's handling a consumer span,
// whose parent is the span the event carries (its traceparent); the
// handler's context holds it. Nil (the default) traces nothing.
func WithConsumeTracer(t trace.Tracer) ConsumeOption { return func(c *consumeLoop) { c.tracer = t } }

// WithLogger sets where the loop logs the failures it handles.
func WithLogger(l *slog.Logger) ConsumeOption { return func(c *consumeLoop) { c.log = l } }

type consumeLoop struct {
	v           *Validator
	h           Handler
	concurrency int
	onInvalid   func(context.Context, jetstream.Msg, error)
	onGiveUp    func(context.Context, *Delivery, error)
	backoff     time.Duration
	maxBackoff  time.Duration
	progress    time.Duration
	maxDeliver  int
	log         *slog.Logger
	tracer      trace.Tracer
}

// Consume pulls from cons and runs h on every event, at most concurrency at
// once, until ctx is cancelled. Messages are decoded (binary or structured)
// and validated; invalid ones are terminated. It returns nil once ctx is
// cancelled and every handler it started has returned.
func Consume(ctx context.Context, cons jetstream.Consumer, v *Validator, h Handler, opts ...ConsumeOption) error {
	c := &consumeLoop{v: v, h: h, concurrency: 8, backoff: 200 * time.Millisecond, maxBackoff: 30 * time.Second, log: slog.Default()}
	for _, o := range opts {
		o(c)
	}
	cfg := cons.CachedInfo().Config
	c.maxDeliver = cfg.MaxDeliver
	if c.progress <= 0 {
		c.progress = cfg.AckWait / 3
		if c.progress <= 0 {
			c.progress = 10 * time.Second
		}
	}
	// Short pull expiries make heartbeats frequent, so that a consumer lost
	// with a server restart is noticed within seconds.
	iter, err := cons.Messages(jetstream.PullMaxMessages(2*c.concurrency), jetstream.PullExpiry(5*time.Second),
		jetstream.WithMessagesErrOnMissingHeartbeat(true))
	if err != nil {
		return err
	}
	defer iter.Stop()
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()

	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, c.concurrency)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		msg, err := iter.Next()
		if err != nil {
			<-slots
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || errors.Is(err, nats.ErrConnectionClosed) {
				return err
			}
			if errors.Is(err, jetstream.ErrConsumerDeleted) {
				return fmt.Errorf("%w: %w", ErrConsumerGone, err)
			}
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				if _, ierr := cons.Info(ctx); errors.Is(ierr, jetstream.ErrConsumerNotFound) {
					return fmt.Errorf("%w: %w", ErrConsumerGone, ierr)
				}
			}
			c.log.Warn("events: pull failed", "err", err)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			c.handle(ctx, msg)
		}()
	}
}

func (c *consumeLoop) handle(ctx context.Context, msg jetstream.Msg) {
	nm := &nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()}
	e, err := FromMsg(nm)
	if err == nil {
		err = c.v.CheckSize(nm)
	}
	if err == nil {
		err = c.v.Validate(e)
	}
	if err != nil {
		c.log.Warn("events: terminating invalid event", "subject", msg.Subject(), "err", err)
		if terr := msg.TermWithReason(err.Error()); terr != nil {
			c.log.Warn("events: term failed", "err", terr)
		}
		if c.onInvalid != nil {
			c.onInvalid(ctx, msg, err)
		}
		return
	}
	d := &Delivery{Event: e, Msg: msg, Attempt: 1}
	if md, err := msg.Metadata(); err == nil {
		d.Attempt = md.NumDelivered
	}

	if c.tracer != nil {
		var span trace.Span
		ctx, span = c.tracer.Start(TraceContext(ctx, e), "process "+Name(e.Type()), trace.WithSpanKind(trace.SpanKindConsumer),
			trace.WithAttributes(spanAttributes(msg.Subject(), e)...), trace.WithAttributes(attribute.Int64("messaging.delivery.attempt", int64(d.Attempt))))
		defer func() { EndSpan(span, err) }()
	}
	err = c.run(ctx, d)
	switch {
	case err == nil:
		if err := msg.Ack(); err != nil {
			c.log.Warn("events: ack failed", "event_id", e.ID(), "err", err)
		}
	case IsPermanent(err):
		c.log.Warn("events: handler failed permanently", "event_id", e.ID(), "type", e.Type(), "err", err)
		_ = msg.TermWithReason(err.Error())
		if c.onGiveUp != nil {
			c.onGiveUp(ctx, d, err)
		}
	case ctx.Err() != nil:
		// The loop is stopping: hand the message back for another consumer now.
		_ = msg.Nak()
	case c.maxDeliver > 0 && d.Attempt >= uint64(c.maxDeliver):
		c.log.Warn("events: giving up after the last delivery", "event_id", e.ID(), "type", e.Type(), "attempt", d.Attempt, "err", err)
		_ = msg.TermWithReason("max deliveries: " + err.Error())
		if c.onGiveUp != nil {
			c.onGiveUp(ctx, d, err)
		}
	default:
		delay, ok := retryDelay(err)
		if !ok {
			delay = c.backoffFor(d.Attempt)
		}
		c.log.Info("events: handler failed, will retry", "event_id", e.ID(), "attempt", d.Attempt, "delay", delay, "err", err)
		_ = msg.NakWithDelay(delay)
	}
}

// run calls the handler, marking the message in progress while it runs.
func (c *consumeLoop) run(ctx context.Context, d *Delivery) error {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(c.progress)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = d.Msg.InProgress()
			}
		}
	}()
	defer wg.Wait()
	defer close(done)
	return c.h(ctx, d)
}

func (c *consumeLoop) backoffFor(attempt uint64) time.Duration {
	d := c.backoff
	for i := uint64(1); i < attempt && d < c.maxBackoff; i++ {
		d *= 2
	}
	return min(d, c.maxBackoff)
}
