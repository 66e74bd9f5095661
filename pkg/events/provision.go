package events

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Streams and KV buckets of the system.
const (
	StreamRequests   = "OPENAGENT_REQUESTS"
	StreamCommands   = "OPENAGENT_COMMANDS"
	StreamEvents     = "OPENAGENT_EVENTS"
	StreamIngest     = "OPENAGENT_INGEST"
	BucketHosts      = "openagent-hosts"
	BucketContainers = "openagent-containers"
	BucketRequests   = "openagent-requests"
	BucketSessions   = "openagent-sessions"
	BucketPools      = "openagent-pools"
	// BucketDeliveries keeps the alerts' webhook deliveries, a week.
	BucketDeliveries = "openagent-deliveries"
	// BucketLeases holds the control plane's election (pkg/coord makes
	// it, with the leases' time to live).
	BucketLeases = "openagent-leases"
	// BucketFiles is the object store files cross in, between the API and
	// a sandbox, off the event path: a transfer's object is deleted once it
	// is through, and any left behind (a crash) expires.
	BucketFiles = "openagent-files"
)

// Defaults chosen on purpose; docs/ARCHITECTURE.md says why.
const (
	// DefaultDuplicates is the dedupe window: a publish retried within it
	// with the same event id is stored once.
	DefaultDuplicates = 2 * time.Minute
	// DefaultMaxDeliver bounds redeliveries: a message that fails this often
	// is given up on (and reported) rather than retried forever.
	DefaultMaxDeliver = 10
	// DefaultAckWait is how long a delivery may go without an ack or a
	// progress heartbeat before it is redelivered.
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending bounds the messages in flight per consumer.
	DefaultMaxAckPending = 1024
	// requestsMaxAge keeps requests long enough for an orchestrator that was
	// down to catch up; the outcome of each is in the events stream.
	requestsMaxAge = 7 * 24 * time.Hour
)

// ProvisionConfig says how to provision.
type ProvisionConfig struct {
	// Replicas of every stream and bucket: 1 on a single server, 3 in a
	// cluster. Zero picks by whether the server is clustered.
	Replicas int
	// Clustered reports whether the server is part of a cluster; a cluster
	// must not hold single-replica streams.
	Clustered bool
	// Duplicates is the dedupe window; zero means DefaultDuplicates.
	Duplicates time.Duration
	// AuditLogAdmin lets provisioning change the events stream's settings.
	// The orchestrator's credential may not (only an admin may change the
	// audit log): without it a difference is left as is and reported.
	AuditLogAdmin bool
	// Wait is how long to wait for JetStream to take the streams while it
	// is not ready (a cluster still electing its leader or waiting for its
	// servers); zero tries once.
	Wait time.Duration
}

func (c ProvisionConfig) withDefaults() ProvisionConfig {
	if c.Replicas == 0 {
		c.Replicas = 1
		if c.Clustered {
			c.Replicas = 3
		}
	}
	if c.Duplicates == 0 {
		c.Duplicates = DefaultDuplicates
	}
	return c
}

// StreamConfigs returns the configuration of every stream of the system.
func StreamConfigs(c ProvisionConfig) []jetstream.StreamConfig {
	c = c.withDefaults()
	return []jetstream.StreamConfig{
		{
			Name:        StreamRequests,
			Description: "Requests from services, kept for a week so a stopped orchestrator catches up",
			Subjects:    []string{RequestsRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      requestsMaxAge,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.Duplicates,
			Discard:     jetstream.DiscardOld,
		},
		{
			Name:        StreamCommands,
			Description: "Commands for hosts; each is removed once its worker acknowledged it",
			Subjects:    []string{CommandsRoot + ".>"},
			Retention:   jetstream.WorkQueuePolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.Duplicates,
			Discard:     jetstream.DiscardNew,
		},
		{
			Name:        StreamEvents,
			Description: "The audit log: every state event, never deleted or purged",
			Subjects:    []string{EventsRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.Duplicates,
			Discard:     jetstream.DiscardNew,
			DenyDelete:  true,
			DenyPurge:   true,
			// Workers read a container's last event (its generation) on
			// every first command; direct gets answer that without the
			// JetStream API's round through the meta layer, from any replica.
			AllowDirect: true,
		},
		{
			Name:        StreamIngest,
			Description: "Events from workers, each host in its own subtree, until the orchestrator checked them and moved them to the events stream",
			Subjects:    []string{IngestRoot + ".>"},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      requestsMaxAge,
			Storage:     jetstream.FileStorage,
			Replicas:    c.Replicas,
			Duplicates:  c.Duplicates,
			Discard:     jetstream.DiscardOld,
		},
	}
}

// deliveriesMaxAge is how long a webhook delivery's history is kept.
const deliveriesMaxAge = 7 * 24 * time.Hour

// BucketConfigs returns the configuration of every KV bucket of the system.
func BucketConfigs(c ProvisionConfig) []jetstream.KeyValueConfig {
	c = c.withDefaults()
	return []jetstream.KeyValueConfig{
		{Bucket: BucketHosts, Description: "Registered hosts: labels, drivers, capacity, last heartbeat", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: BucketContainers, Description: "Container state, a projection of the events stream", History: 5, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: BucketSessions, Description: "Sessions and their timers, which survive a restart", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: BucketPools, Description: "Warm pools: the profiles kept ready and their bounds", History: 1, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: BucketDeliveries, Description: "Webhook deliveries of the alerts, with their attempts", History: 1, TTL: deliveriesMaxAge, Storage: jetstream.FileStorage, Replicas: c.Replicas},
		{Bucket: BucketRequests, Description: "Outcome of each request, so a retried request gets the same answer", History: 1, TTL: requestsMaxAge, Storage: jetstream.FileStorage, Replicas: c.Replicas},
	}
}

// ConsumerConfig returns a durable pull consumer's configuration with the
// system's delivery bounds; callers set the filter and the name.
func ConsumerConfig(durable string, filters ...string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable:        durable,
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        DefaultAckWait,
		MaxDeliver:     DefaultMaxDeliver,
		MaxAckPending:  DefaultMaxAckPending,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
}

// WorkQueueConsumerConfig is ConsumerConfig for a consumer of the
// commands work queue, whose state the server keeps in memory: it need not
// be written to disk on every ack (with a hundred hosts, that writing took
// a sixth of the server's time), and losing it in a restart loses nothing,
// because a work queue keeps every message until it is acked. Consume
// reports such a loss as ErrConsumerGone; the owner creates it again.
func WorkQueueConsumerConfig(durable string, filters ...string) jetstream.ConsumerConfig {
	c := ConsumerConfig(durable, filters...)
	c.MemoryStorage = true
	return c
}

// Action says what provisioning did to one stream or bucket.
type Action string

// Actions of provisioning.
const (
	Created   Action = "created"
	Updated   Action = "updated"
	Unchanged Action = "unchanged"
	// Drifted: the audit log's settings differ and were left as they are
	// for an admin to put right; Drifts says how.
	Drifted Action = "drifted"
)

// Change is what provisioning did to one stream or bucket.
type Change struct {
	Name   string
	Action Action
}

// Provision creates or updates every stream and bucket of the system, then
// checks the result. It is idempotent: a second run changes nothing. With
// c.Wait it waits that long for JetStream to take the streams, trying
// again while a cluster coming up has no leader or too few servers yet.
func Provision(ctx context.Context, js jetstream.JetStream, c ProvisionConfig) ([]Change, error) {
	if c.Wait <= 0 {
		return provision(ctx, js, c)
	}
	return WhileUnready(ctx, c.Wait, func(ctx context.Context) ([]Change, error) { return provision(ctx, js, c) })
}

// WhileUnready calls fn, with a backoff, for as long as it fails because
// JetStream is not ready yet (Unready) and wait has not passed; its
// context ends with the wait.
func WhileUnready[T any](ctx context.Context, wait time.Duration, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	retry := retrypolicy.NewBuilder[T]().
		HandleIf(func(_ T, err error) bool { return ctx.Err() == nil && Unready(err) }).
		WithMaxRetries(-1).
		WithBackoff(100*time.Millisecond, 2*time.Second).
		ReturnLastFailure().
		Build()
	return failsafe.With(retry).WithContext(ctx).Get(func() (T, error) { return fn(ctx) })
}

// Unready reports whether err is JetStream not being ready yet, rather than
// refusing: no responders or a timeout (no server or no meta leader), a
// 503 (the cluster unavailable for a moment, too few servers for the
// replicas), or no peers to place a stream on yet.
func Unready(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		return apiErr.Code == 503 || apiErr.ErrorCode == jsClusterNoPeers
	}
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

// jsClusterNoPeers is the server's "no suitable peers for placement".
const jsClusterNoPeers jetstream.ErrorCode = 10005

func provision(ctx context.Context, js jetstream.JetStream, c ProvisionConfig) ([]Change, error) {
	c = c.withDefaults()
	var changes []Change
	for _, want := range StreamConfigs(c) {
		act, err := ensureStream(ctx, js, want, want.Name != StreamEvents || c.AuditLogAdmin)
		if err != nil {
			return changes, err
		}
		changes = append(changes, Change{Name: want.Name, Action: act})
	}
	for _, want := range BucketConfigs(c) {
		act, err := ensureBucket(ctx, js, want)
		if err != nil {
			return changes, err
		}
		changes = append(changes, Change{Name: want.Bucket, Action: act})
	}
	act, err := ensureObjectStore(ctx, js, FilesConfig(c))
	if err != nil {
		return changes, err
	}
	changes = append(changes, Change{Name: BucketFiles, Action: act})
	return changes, Check(ctx, js, c.Clustered)
}

// FilesMaxAge bounds how long a transfer's object may outlive it.
const FilesMaxAge = 24 * time.Hour

// FilesConfig is the files object store's configuration.
func FilesConfig(c ProvisionConfig) jetstream.ObjectStoreConfig {
	c = c.withDefaults()
	return jetstream.ObjectStoreConfig{Bucket: BucketFiles, Description: "Files in transit between the API and sandboxes",
		TTL: FilesMaxAge, Storage: jetstream.FileStorage, Replicas: c.Replicas}
}

func ensureObjectStore(ctx context.Context, js jetstream.JetStream, want jetstream.ObjectStoreConfig) (Action, error) {
	if _, err := js.ObjectStore(ctx, want.Bucket); err == nil {
		return Unchanged, nil
	} else if !errors.Is(err, jetstream.ErrBucketNotFound) {
		return "", fmt.Errorf("events: object store %s: %w", want.Bucket, err)
	}
	if _, err := js.CreateObjectStore(ctx, want); err != nil {
		return "", fmt.Errorf("events: create object store %s: %w", want.Bucket, err)
	}
	return Created, nil
}

func ensureStream(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig, mayUpdate bool) (Action, error) {
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		if _, err := js.CreateStream(ctx, want); err != nil {
			return "", fmt.Errorf("events: create stream %s: %w", want.Name, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("events: stream %s: %w", want.Name, err)
	}
	if sameStream(s.CachedInfo().Config, want) {
		return Unchanged, nil
	}
	if !mayUpdate {
		return Drifted, nil
	}
	if _, err := js.UpdateStream(ctx, want); err != nil {
		return "", fmt.Errorf("events: update stream %s: %w", want.Name, err)
	}
	return Updated, nil
}

// sameStream compares the settings that provisioning chooses.
func sameStream(got, want jetstream.StreamConfig) bool { return len(streamDiff(got, want)) == 0 }

// streamDiff names each setting provisioning chooses that got has
// otherwise than want.
func streamDiff(got, want jetstream.StreamConfig) []string {
	var out []string
	differ := func(name string, same bool, g, w any) {
		if !same {
			out = append(out, fmt.Sprintf("%s: %v, want %v", name, g, w))
		}
	}
	differ("subjects", slices.Equal(got.Subjects, want.Subjects), got.Subjects, want.Subjects)
	differ("retention", got.Retention == want.Retention, got.Retention, want.Retention)
	differ("storage", got.Storage == want.Storage, got.Storage, want.Storage)
	differ("replicas", got.Replicas == want.Replicas, got.Replicas, want.Replicas)
	differ("duplicates", got.Duplicates == want.Duplicates, got.Duplicates, want.Duplicates)
	differ("max_age", got.MaxAge == want.MaxAge, got.MaxAge, want.MaxAge)
	differ("max_msgs", got.MaxMsgs == want.MaxMsgs || want.MaxMsgs <= 0 && got.MaxMsgs <= 0, got.MaxMsgs, want.MaxMsgs)
	differ("max_bytes", got.MaxBytes == want.MaxBytes || want.MaxBytes <= 0 && got.MaxBytes <= 0, got.MaxBytes, want.MaxBytes)
	differ("discard", got.Discard == want.Discard, got.Discard, want.Discard)
	differ("deny_delete", got.DenyDelete == want.DenyDelete, got.DenyDelete, want.DenyDelete)
	differ("deny_purge", got.DenyPurge == want.DenyPurge, got.DenyPurge, want.DenyPurge)
	differ("allow_direct", got.AllowDirect == want.AllowDirect, got.AllowDirect, want.AllowDirect)
	differ("description", got.Description == want.Description, got.Description, want.Description)
	return out
}

// Drift is how a stream differs from what provisioning chose, or is
// unsafe.
type Drift struct {
	Stream   string
	Problems []string
}

// Drifts compares every stream with what provisioning chooses and checks
// it for unsafe settings; a stream that is gone is a drift too. It is
// what the orchestrator looks at now and then, not only at start.
func Drifts(ctx context.Context, js jetstream.JetStream, c ProvisionConfig) ([]Drift, error) {
	c = c.withDefaults()
	var out []Drift
	for _, want := range StreamConfigs(c) {
		s, err := js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			out = append(out, Drift{Stream: want.Name, Problems: []string{"the stream is gone"}})
			continue
		}
		if err != nil {
			return out, fmt.Errorf("events: stream %s: %w", want.Name, err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			return out, fmt.Errorf("events: stream %s: %w", want.Name, err)
		}
		problems := streamDiff(info.Config, want)
		for _, err := range checkStream(info.Config, c.Clustered) {
			problems = append(problems, strings.TrimPrefix(err.Error(), ErrUnsafeConfig.Error()+": "+want.Name+": "))
		}
		if len(problems) > 0 {
			out = append(out, Drift{Stream: want.Name, Problems: problems})
		}
	}
	return out, nil
}

func ensureBucket(ctx context.Context, js jetstream.JetStream, want jetstream.KeyValueConfig) (Action, error) {
	kv, err := js.KeyValue(ctx, want.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		if _, err := js.CreateKeyValue(ctx, want); err != nil {
			return "", fmt.Errorf("events: create bucket %s: %w", want.Bucket, err)
		}
		return Created, nil
	}
	if err != nil {
		return "", fmt.Errorf("events: bucket %s: %w", want.Bucket, err)
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return "", fmt.Errorf("events: bucket %s: %w", want.Bucket, err)
	}
	got := st.Config()
	if got.History == want.History && got.Storage == want.Storage && got.Replicas == want.Replicas && got.Description == want.Description && got.TTL == want.TTL {
		return Unchanged, nil
	}
	if _, err := js.UpdateKeyValue(ctx, want); err != nil {
		return "", fmt.Errorf("events: update bucket %s: %w", want.Bucket, err)
	}
	return Updated, nil
}

// Check refuses settings that could lose events: memory storage, a cluster
// holding single-copy streams, an audit log that can be deleted or purged,
// commands that are not a work queue, no dedupe window, and consumers that
// redeliver without bound. Every error matches ErrUnsafeConfig and names
// the stream or consumer and the setting.
func Check(ctx context.Context, js jetstream.JetStream, clustered bool) error {
	names := []string{StreamRequests, StreamCommands, StreamEvents, StreamIngest}
	for _, b := range BucketConfigs(ProvisionConfig{}) {
		names = append(names, "KV_"+b.Bucket)
	}
	var errs []error
	for _, name := range names {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("events: check stream %s: %w", name, err)
		}
		errs = append(errs, checkStream(s.CachedInfo().Config, clustered)...)
		if name == StreamEvents || name == StreamRequests || name == StreamCommands {
			cerrs, err := checkConsumers(ctx, s)
			if err != nil {
				return err
			}
			errs = append(errs, cerrs...)
		}
	}
	return errors.Join(errs...)
}

func unsafe(name, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrUnsafeConfig, name, fmt.Sprintf(format, args...))
}

func checkStream(c jetstream.StreamConfig, clustered bool) []error {
	var errs []error
	if c.Storage != jetstream.FileStorage {
		errs = append(errs, unsafe(c.Name, "storage is %s; events must survive a restart, use file storage", c.Storage))
	}
	if clustered && c.Replicas < 3 {
		errs = append(errs, unsafe(c.Name, "%d replica(s) in a cluster; use 3 so that losing a server loses nothing", c.Replicas))
	}
	if c.Duplicates <= 0 && !strings.HasPrefix(c.Name, "KV_") {
		errs = append(errs, unsafe(c.Name, "no dedupe window; retried publishes would be stored twice"))
	}
	switch c.Name {
	case StreamEvents:
		if !c.DenyDelete || !c.DenyPurge {
			errs = append(errs, unsafe(c.Name, "the audit log allows delete or purge; set deny_delete and deny_purge"))
		}
		if c.MaxAge > 0 || c.MaxMsgs > 0 || c.MaxBytes > 0 {
			errs = append(errs, unsafe(c.Name, "the audit log has limits that discard old events"))
		}
	case StreamCommands:
		if c.Retention != jetstream.WorkQueuePolicy {
			errs = append(errs, unsafe(c.Name, "retention is %s; commands must be a work queue", c.Retention))
		}
	}
	return errs
}

func checkConsumers(ctx context.Context, s jetstream.Stream) ([]error, error) {
	var errs []error
	lister := s.ListConsumers(ctx)
	for ci := range lister.Info() {
		c := ci.Config
		name := s.CachedInfo().Config.Name + "/" + ci.Name
		if c.AckPolicy != jetstream.AckExplicitPolicy {
			continue // ordered and ephemeral readers: nothing to redeliver
		}
		if c.MaxDeliver <= 0 {
			errs = append(errs, unsafe(name, "max_deliver is unlimited; a poison message would be redelivered forever"))
		}
		if c.MaxAckPending <= 0 {
			errs = append(errs, unsafe(name, "max_ack_pending is unlimited; a slow consumer would take every message at once"))
		}
	}
	if err := lister.Err(); err != nil {
		return nil, fmt.Errorf("events: list consumers of %s: %w", s.CachedInfo().Config.Name, err)
	}
	return errs, nil
}
