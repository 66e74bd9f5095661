package events

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/internal/natstest"
)

func provisioned(t *testing.T) (*natstest.Server, jetstream.JetStream) {
	t.Helper()
	s := natstest.Start(t)
	_, js := s.Connect()
	if _, err := Provision(context.Background(), js, ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	return s, js
}

func TestProvisionIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := natstest.Start(t)
	_, js := s.Connect()
	first, err := Provision(ctx, js, ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != 11 {
		t.Fatalf("got %d changes; want 4 streams, 6 buckets and the files store", len(first))
	}
	for _, c := range first {
		if c.Action != Created {
			t.Errorf("first run: %s %s; want created", c.Name, c.Action)
		}
	}
	before, _ := js.Stream(ctx, StreamEvents)
	second, err := Provision(ctx, js, ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range second {
		if c.Action != Unchanged {
			t.Errorf("second run: %s %s; want unchanged", c.Name, c.Action)
		}
	}
	after, _ := js.Stream(ctx, StreamEvents)
	if !after.CachedInfo().Created.Equal(before.CachedInfo().Created) {
		t.Error("the second run recreated the events stream")
	}

	// A setting changed by hand is put back; on the audit log only by an
	// admin's provisioning, else it is reported.
	cfg := after.CachedInfo().Config
	cfg.Duplicates = time.Second
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	third, err := Provision(ctx, js, ProvisionConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if third[2].Name != StreamEvents || third[2].Action != Drifted {
		t.Fatalf("got %+v; want the events stream left drifted", third[2])
	}
	drifts, err := Drifts(ctx, js, ProvisionConfig{})
	if err != nil || len(drifts) != 1 || drifts[0].Stream != StreamEvents || len(drifts[0].Problems) != 1 ||
		!strings.HasPrefix(drifts[0].Problems[0], "duplicates: 1s") {
		t.Fatalf("drifts %+v (%v); want the events stream's dedupe window named", drifts, err)
	}
	fourth, err := Provision(ctx, js, ProvisionConfig{AuditLogAdmin: true})
	if err != nil {
		t.Fatal(err)
	}
	if fourth[2].Name != StreamEvents || fourth[2].Action != Updated {
		t.Fatalf("got %+v; want the events stream updated by an admin", fourth[2])
	}
	got, _ := js.Stream(ctx, StreamEvents)
	if d := got.CachedInfo().Config.Duplicates; d != DefaultDuplicates {
		t.Fatalf("dedupe window %v after provisioning; want %v", d, DefaultDuplicates)
	}
	if drifts, err := Drifts(ctx, js, ProvisionConfig{}); err != nil || len(drifts) != 0 {
		t.Fatalf("drifts %+v (%v) after provisioning; want none", drifts, err)
	}
}

func TestProvisionedSettings(t *testing.T) {
	ctx := context.Background()
	_, js := provisioned(t)
	ev, _ := js.Stream(ctx, StreamEvents)
	c := ev.CachedInfo().Config
	if !c.DenyDelete || !c.DenyPurge || c.Storage != jetstream.FileStorage || c.Replicas != 1 {
		t.Fatalf("events stream %+v; want file storage, 1 replica, deny delete and purge", c)
	}
	if err := ev.Purge(ctx); err == nil {
		t.Fatal("the audit log could be purged")
	}
	cmd, _ := js.Stream(ctx, StreamCommands)
	if r := cmd.CachedInfo().Config.Retention; r != jetstream.WorkQueuePolicy {
		t.Fatalf("commands retention %v; want work queue", r)
	}
	for _, b := range []string{BucketHosts, BucketContainers, BucketRequests, BucketSessions} {
		if _, err := js.KeyValue(ctx, b); err != nil {
			t.Errorf("bucket %s: %v", b, err)
		}
	}
}

func TestCheckRefusesUnsafeSettings(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name      string
		clustered bool
		mutate    func(t *testing.T, js jetstream.JetStream)
		want      string
	}{
		{"audit log in memory", false, func(t *testing.T, js jetstream.JetStream) {
			// Storage cannot be changed in place: recreate the stream as an
			// operator would by mistake.
			if err := js.DeleteStream(ctx, StreamEvents); err != nil {
				t.Fatal(err)
			}
			cfg := StreamConfigs(ProvisionConfig{})[2]
			cfg.Storage = jetstream.MemoryStorage
			if _, err := js.CreateStream(ctx, cfg); err != nil {
				t.Fatal(err)
			}
		}, "OPENAGENT_EVENTS: storage is Memory"},
		{"unlimited redelivery", false, func(t *testing.T, js jetstream.JetStream) {
			cfg := ConsumerConfig("greedy", RequestsRoot+".>")
			cfg.MaxDeliver = -1
			if _, err := js.CreateOrUpdateConsumer(ctx, StreamRequests, cfg); err != nil {
				t.Fatal(err)
			}
		}, "OPENAGENT_REQUESTS/greedy: max_deliver is unlimited"},
		{"one replica in a cluster", true, func(*testing.T, jetstream.JetStream) {}, "1 replica(s) in a cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, js := provisioned(t)
			tc.mutate(t, js)
			err := Check(ctx, js, tc.clustered)
			if !errors.Is(err, ErrUnsafeConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v; want ErrUnsafeConfig saying %q", err, tc.want)
			}
		})
	}
	t.Run("safe", func(t *testing.T) {
		_, js := provisioned(t)
		if err := Check(ctx, js, false); err != nil {
			t.Fatalf("provisioned settings refused: %v", err)
		}
	})
}
