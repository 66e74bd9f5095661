package projection

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func provisioned(t *testing.T) (*natstest.Server, jetstream.JetStream, jetstream.KeyValue) {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect()
	ctx := context.Background()
	if _, err := events.Provision(ctx, js, events.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, events.BucketContainers)
	if err != nil {
		t.Fatal(err)
	}
	return srv, js, kv
}

func placedEvent(t *testing.T, id string) events.Event {
	t.Helper()
	spec := driver.DefaultConfig()
	spec.SessionID, spec.Image, spec.Command = id, "fake", []string{"fake"}
	e, err := events.New(events.ContainerPlaced, "/tests", map[string]any{"containerId": id, "hostId": "h", "driver": "fake", "spec": spec},
		events.WithContainer(id), events.WithHost("h"))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func streamInfo(t *testing.T, js jetstream.JetStream) *jetstream.StreamInfo {
	t.Helper()
	s, err := js.Stream(context.Background(), events.StreamEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// A flush that fails loses nothing: the records stay dirty and the next
// flush writes them, and the cursor never runs ahead of what is written.
func TestFlushFailureLosesNothing(t *testing.T) {
	srv, js, kv := provisioned(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := NewStore()
	if _, err := s.Load(ctx, kv, streamInfo(t, js), slog.Default()); err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	pub := events.NewPublisher(js, v)
	for i := range 3 {
		e := placedEvent(t, fmt.Sprintf("c%d", i))
		ack, err := pub.Publish(ctx, e)
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(ack.Sequence, e)
	}
	srv.Down()
	fctx, fcancel := context.WithTimeout(ctx, time.Second)
	if err := s.Flush(fctx, js, kv); err == nil {
		t.Fatal("a flush with the server down succeeded")
	}
	fcancel()
	srv.Up()
	waitConnected(t, js)
	if err := s.Flush(ctx, js, kv); err != nil {
		t.Fatal(err)
	}
	loaded := NewStore()
	if got, err := loaded.Load(ctx, kv, streamInfo(t, js), slog.Default()); err != nil || got != 3 {
		t.Fatalf("resumed after %d (%v); want 3", got, err)
	}
	for i := range 3 {
		if _, ok := loaded.Get(fmt.Sprintf("c%d", i)); !ok {
			t.Fatalf("record c%d was lost by a failed flush", i)
		}
	}
}

func waitConnected(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for js.Conn().Status() != nats.CONNECTED {
		if time.Now().After(deadline) {
			t.Fatal("not reconnected")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A cursor of an events stream that was deleted and made again, or that
// is past the stream's end, is not trusted: the state is rebuilt, and no
// stale record survives in the bucket.
func TestCursorOfAnotherStream(t *testing.T) {
	_, js, kv := provisioned(t)
	ctx := context.Background()
	s := NewStore()
	info := streamInfo(t, js)
	if _, err := s.Load(ctx, kv, info, slog.Default()); err != nil {
		t.Fatal(err)
	}
	s.Apply(7, placedEvent(t, "stale"))
	if err := s.Flush(ctx, js, kv); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		info jetstream.StreamInfo
	}{
		{"made again", jetstream.StreamInfo{Created: info.Created.Add(time.Hour), State: jetstream.StreamState{LastSeq: 100, FirstSeq: 1, Msgs: 100}}},
		{"shorter", jetstream.StreamInfo{Created: info.Created, State: jetstream.StreamState{LastSeq: 3, FirstSeq: 1, Msgs: 3}}},
		{"truncated past the cursor", jetstream.StreamInfo{Created: info.Created, State: jetstream.StreamState{LastSeq: 100, FirstSeq: 50, Msgs: 51}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The bucket as the flush left it, each time.
			if err := s.Flush(ctx, js, kv); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, "stale", []byte(`{"id":"stale","status":"pending","seq":7}`)); err != nil {
				t.Fatal(err)
			}
			if _, err := kv.Put(ctx, cursorKey, []byte(cursor{Seq: 7, Stream: info.Created}.String())); err != nil {
				t.Fatal(err)
			}
			loaded := NewStore()
			got, err := loaded.Load(ctx, kv, &tc.info, slog.Default())
			if err != nil {
				t.Fatal(err)
			}
			if got != 0 {
				t.Fatalf("resumed after %d; want a rebuild from the start", got)
			}
			if _, ok := loaded.Get("stale"); ok {
				t.Fatal("a stale record was served")
			}
			if _, err := kv.Get(ctx, "stale"); err == nil {
				t.Fatal("a stale record survived in the bucket")
			}
		})
	}
	// The same stream, at or before its end: resumed.
	if _, err := kv.Put(ctx, "stale", []byte(`{"id":"stale","status":"pending","seq":7}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, cursorKey, []byte(cursor{Seq: 7, Stream: info.Created}.String())); err != nil {
		t.Fatal(err)
	}
	loaded := NewStore()
	same := jetstream.StreamInfo{Created: info.Created, State: jetstream.StreamState{LastSeq: 9, FirstSeq: 1, Msgs: 9}}
	if got, err := loaded.Load(ctx, kv, &same, slog.Default()); err != nil || got != 7 {
		t.Fatalf("resumed after %d (%v); want 7", got, err)
	}
	if r, ok := loaded.Get("stale"); !ok || r.Status != api.StatusPending {
		t.Fatalf("the record was not loaded: %+v", r)
	}
}

// A container is found by its id, its name or a unique prefix of its id;
// a prefix that fits several lists them; removed ones count when asked.
func TestResolve(t *testing.T) {
	s := NewStore()
	for i, id := range []string{"abc111", "abc222", "abd333"} {
		s.Apply(uint64(i+1), placedEvent(t, id))
	}
	s.Update(func(m *Model) []string {
		m.Names["web"] = "abd333"
		m.SetStatus(m.Containers["abc222"], api.StatusRemoved)
		return nil
	})
	for _, tc := range []struct {
		ref     string
		removed bool
		id      string
		matches []string
	}{
		{"abc111", false, "abc111", nil},
		{"web", false, "abd333", nil},
		{"abd", false, "abd333", nil},
		{"abc", false, "abc111", nil}, // the other is removed
		{"abc", true, "", []string{"abc111", "abc222"}},
		{"ab", false, "", []string{"abc111", "abd333"}},
		{"zzz", false, "", nil},
	} {
		id, matches := s.Resolve(tc.ref, tc.removed)
		if id != tc.id || !slices.Equal(matches, tc.matches) {
			t.Errorf("Resolve(%q, %v) = %q, %v; want %q, %v", tc.ref, tc.removed, id, matches, tc.id, tc.matches)
		}
	}
}

// A draining host is remembered across a flush and a load (a restarted
// orchestrator goes on passing it by), and so is the end of its drain.
func TestDrainingHostsSurviveALoad(t *testing.T) {
	_, js, kv := provisioned(t)
	ctx := context.Background()
	info := streamInfo(t, js)
	s := NewStore()
	if _, err := s.Load(ctx, kv, info, slog.Default()); err != nil {
		t.Fatal(err)
	}
	drain := func(seq uint64, host string, on bool) {
		e, err := events.New(events.HostDraining, "/tests", events.HostDrainingData{HostID: host, Draining: on}, events.WithHost(host))
		if err != nil {
			t.Fatal(err)
		}
		s.Apply(seq, e)
	}
	drain(1, "h1", true)
	drain(2, "h2", true)
	drain(3, "h2", false)
	// A flush writes with the containers' records: what changed none is
	// found again by replaying the stream past the cursor.
	s.Apply(4, placedEvent(t, "c1"))
	if err := s.Flush(ctx, js, kv); err != nil {
		t.Fatal(err)
	}
	loaded := NewStore()
	at := jetstream.StreamInfo{Created: info.Created, State: jetstream.StreamState{LastSeq: 4, FirstSeq: 1, Msgs: 4}}
	if got, err := loaded.Load(ctx, kv, &at, slog.Default()); err != nil || got != 4 {
		t.Fatalf("resumed after %d (%v); want 4", got, err)
	}
	var draining map[string]time.Time
	loaded.Read(func(m *Model) { draining = m.DrainingHosts })
	if _, ok := draining["h1"]; !ok || len(draining) != 1 {
		t.Fatalf("draining after a load: %v; want h1 alone", draining)
	}
}
