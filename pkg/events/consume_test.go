package events

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

type harness struct {
	t   *testing.T
	js  jetstream.JetStream
	pub *Publisher
	v   *Validator
}

func newHarness(t *testing.T) *harness {
	_, js := provisioned(t)
	v := newValidator(t)
	return &harness{t: t, js: js, pub: NewPublisher(js, v), v: v}
}

func (h *harness) consumer(name string, ackWait time.Duration, maxDeliver int) jetstream.Consumer {
	h.t.Helper()
	cfg := ConsumerConfig(name, RequestsRoot+".>")
	cfg.AckWait = ackWait
	cfg.MaxDeliver = maxDeliver
	c, err := h.js.CreateOrUpdateConsumer(context.Background(), StreamRequests, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// run starts Consume and returns a stop function that cancels it and
// waits for it to return.
func (h *harness) run(c jetstream.Consumer, hd Handler, opts ...ConsumeOption) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Consume(ctx, c, h.v, hd, opts...) }()
	return func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Consume returned %v", err)
			}
		case <-time.After(10 * time.Second):
			h.t.Fatal("Consume did not return after cancel")
		}
	}
}

func (h *harness) publish(containerID string) Event {
	h.t.Helper()
	e := startRequest(h.t, containerID)
	if _, err := h.pub.Publish(context.Background(), e); err != nil {
		h.t.Fatal(err)
	}
	return e
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pending(t *testing.T, c jetstream.Consumer) (ackPending, numPending uint64, redelivered int) {
	t.Helper()
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return uint64(info.NumAckPending), info.NumPending, info.NumRedelivered
}

func TestConsumeAcksSuccess(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("ok", time.Second, 5)
	var got sync.Map
	var n atomic.Int32
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		got.Store(d.Event.ID(), d.Attempt)
		n.Add(1)
		return nil
	})
	defer stop()
	ids := []string{h.publish("c-1").ID(), h.publish("c-2").ID(), h.publish("c-3").ID()}
	waitFor(t, "three deliveries", func() bool { return n.Load() == 3 })
	time.Sleep(1500 * time.Millisecond) // past AckWait: an unacked message would come back
	if n.Load() != 3 {
		t.Fatalf("%d deliveries; want 3 (acked messages came back)", n.Load())
	}
	for _, id := range ids {
		if a, ok := got.Load(id); !ok || a.(uint64) != 1 {
			t.Errorf("event %s: attempt %v; want delivered once", id, a)
		}
	}
}

func TestConsumeRedeliversAfterNak(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("nak", 30*time.Second, 5)
	var attempts []uint64
	var mu sync.Mutex
	start := time.Now()
	var second time.Duration
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		attempts = append(attempts, d.Attempt)
		if d.Attempt == 1 {
			return Retry(errors.New("worker busy"), 300*time.Millisecond)
		}
		second = time.Since(start)
		return nil
	})
	defer stop()
	h.publish("c-1")
	waitFor(t, "a redelivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(attempts) == 2 })
	mu.Lock()
	defer mu.Unlock()
	if attempts[0] != 1 || attempts[1] != 2 {
		t.Fatalf("attempts %v; want [1 2]", attempts)
	}
	// Redelivered after the Nak's delay, long before the 30s AckWait.
	if second < 300*time.Millisecond || second > 10*time.Second {
		t.Fatalf("redelivered after %v; want after the 300ms Nak delay", second)
	}
}

func TestConsumeTerminatesInvalidEvents(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	c := h.consumer("term", 500*time.Millisecond, 5)
	var handled, invalid atomic.Int32
	var reason atomic.Value
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		handled.Add(1)
		return nil
	}, WithInvalid(func(ctx context.Context, m jetstream.Msg, err error) {
		invalid.Add(1)
		reason.Store(err.Error())
	}))
	defer stop()
	// Raw bytes published around the Publisher, as a careless service would.
	if _, err := h.js.Publish(ctx, RequestsRoot+".container.start.requested", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invalid message to be reported", func() bool { return invalid.Load() == 1 })
	time.Sleep(1500 * time.Millisecond) // three AckWaits
	if handled.Load() != 0 || invalid.Load() != 1 {
		t.Fatalf("handled %d, reported invalid %d; want 0 and 1 (terminated, not redelivered)", handled.Load(), invalid.Load())
	}
	if ack, num, _ := pending(t, c); ack != 0 || num != 0 {
		t.Fatalf("ack pending %d, pending %d; want nothing left", ack, num)
	}
	if r := reason.Load().(string); r == "" {
		t.Fatal("no reason given")
	}
}

func TestConsumeGivesUpAfterMaxDeliver(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("giveup", 30*time.Second, 3)
	var calls atomic.Int32
	gaveUp := make(chan uint64, 1)
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		calls.Add(1)
		return errors.New("driver unavailable")
	}, WithBackoff(10*time.Millisecond, 20*time.Millisecond), WithGiveUp(func(ctx context.Context, d *Delivery, err error) {
		gaveUp <- d.Attempt
	}))
	defer stop()
	h.publish("c-1")
	select {
	case a := <-gaveUp:
		if a != 3 || calls.Load() != 3 {
			t.Fatalf("gave up at attempt %d after %d calls; want 3 and 3", a, calls.Load())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never gave up")
	}
}

func TestConsumeHeartbeatsLongWork(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("long", 600*time.Millisecond, 5)
	var calls atomic.Int32
	done := make(chan struct{})
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		if calls.Add(1) == 1 {
			time.Sleep(2 * time.Second) // more than three AckWaits
			close(done)
		}
		return nil
	})
	defer stop()
	h.publish("c-1")
	<-done
	time.Sleep(300 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times; want 1 (InProgress must hold the message)", n)
	}
}

func TestConsumePermanentErrorTerminates(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("perm", 400*time.Millisecond, 5)
	var calls atomic.Int32
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		calls.Add(1)
		return Permanent(errors.New("no such image"))
	})
	defer stop()
	h.publish("c-1")
	waitFor(t, "a delivery", func() bool { return calls.Load() == 1 })
	time.Sleep(1200 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler called %d times; want 1", n)
	}
}

// A durable consumer picks up where it left off after the server restarts:
// what was acked is not delivered again, what was not is.
func TestDurableConsumerResumesAfterRestart(t *testing.T) {
	ctx := context.Background()
	s, js := provisioned(t)
	v := newValidator(t)
	h := &harness{t: t, js: js, pub: NewPublisher(js, v), v: v}
	c := h.consumer("durable", 5*time.Second, 5)
	first := h.publish("c-1")
	var seen sync.Map
	var n atomic.Int32
	handler := func(ctx context.Context, d *Delivery) error {
		seen.Store(d.Event.ID(), true)
		n.Add(1)
		return nil
	}
	stop := h.run(c, handler)
	waitFor(t, "the first event", func() bool { return n.Load() == 1 })
	stop()

	s.Restart()
	second := h.publish("c-2")
	c2, err := js.Consumer(ctx, StreamRequests, "durable")
	if err != nil {
		t.Fatalf("durable consumer lost in the restart: %v", err)
	}
	stop = h.run(c2, handler)
	defer stop()
	waitFor(t, "the second event", func() bool { _, ok := seen.Load(second.ID()); return ok })
	time.Sleep(200 * time.Millisecond)
	if n.Load() != 2 {
		t.Fatalf("%d deliveries; want 2 (the acked %s must not come back)", n.Load(), first.ID())
	}
}

func TestConsumeStopsCleanlyWithWorkInFlight(t *testing.T) {
	h := newHarness(t)
	c := h.consumer("stop", 30*time.Second, 5)
	started := make(chan struct{})
	var once sync.Once
	stop := h.run(c, func(ctx context.Context, d *Delivery) error {
		once.Do(func() { close(started) })
		<-ctx.Done() // blocked work sees the cancellation
		return ctx.Err()
	}, WithConcurrency(2))
	for i := range 4 {
		h.publish("c-" + string(rune('a'+i)))
	}
	<-started
	stop() // returns only once every handler returned
	// The cancelled message was handed back, not lost.
	waitFor(t, "the message handed back", func() bool {
		ack, num, _ := pending(t, c)
		return ack+num == 4
	})
}
