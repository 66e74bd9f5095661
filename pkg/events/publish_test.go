package events

import (
	"context"
	"errors"
	"testing"
	"time"
)

func startRequest(t *testing.T, id string) Event {
	t.Helper()
	e, err := New(ContainerStartRequested, "/test", map[string]string{"containerId": id})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestPublishDeduplicatesByEventID(t *testing.T) {
	ctx := context.Background()
	_, js := provisioned(t)
	p := NewPublisher(js, newValidator(t))
	e := startRequest(t, "c-1")
	first, err := p.Publish(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	again, err := p.Publish(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if first.Duplicate || !again.Duplicate || again.Sequence != first.Sequence {
		t.Fatalf("acks %+v then %+v; want the second a duplicate of the first", first, again)
	}
	s, _ := js.Stream(ctx, StreamRequests)
	info, _ := s.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages stored; want 1", info.State.Msgs)
	}
	msg, err := s.GetMsg(ctx, first.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	if got := msg.Header.Get("Nats-Msg-Id"); got != e.ID() {
		t.Fatalf("Nats-Msg-Id %q; want the event id %q", got, e.ID())
	}
}

func TestPublishRefusesInvalidEvents(t *testing.T) {
	_, js := provisioned(t)
	p := NewPublisher(js, newValidator(t))
	e, _ := New(ContainerStopRequested, "/test", map[string]any{"containerId": "c-1", "timeoutMs": -1})
	_, err := p.Publish(context.Background(), e)
	var ve *ValidationError
	if !errors.As(err, &ve) || ve.Field != "data.timeoutMs" || ve.Rule != "minimum" {
		t.Fatalf("got %v; want a validation error on data.timeoutMs", err)
	}
	cmd, _ := New(CommandStart, "/test", map[string]string{"containerId": "c-1", "hostId": "a.b"}, WithHost("a.b"))
	if _, err := p.Publish(context.Background(), cmd); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a command for host %q published: %v", "a.b", err)
	}
}

// A publish made while the server is down is retried with the same id until
// the server is back, and is stored once.
func TestPublishRetriesAcrossARestart(t *testing.T) {
	ctx := context.Background()
	s, js := provisioned(t)
	p := NewPublisher(js, newValidator(t), WithAttemptTimeout(200*time.Millisecond), WithRetries(50))
	s.Shutdown()
	s.WaitForShutdown()
	done := make(chan error, 1)
	go func() {
		_, err := p.Publish(ctx, startRequest(t, "c-2"))
		done <- err
	}()
	time.Sleep(500 * time.Millisecond)
	s.Restart()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("publish across a restart: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("publish did not finish after the server came back")
	}
	st, _ := js.Stream(ctx, StreamRequests)
	info, _ := st.Info(ctx)
	if info.State.Msgs != 1 {
		t.Fatalf("%d messages stored; want exactly 1", info.State.Msgs)
	}
}
