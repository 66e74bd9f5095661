// Package orchestrator is the control plane: it validates, admits and
// places requests, publishes the commands that carry them out, and keeps
// the projection of the events stream that answers what exists where.
//
// Requests reach one handler (Handle) through three doors: the durable
// requests stream, consumed here, and NATS request/reply and the HTTP API
// (pkg/gateway), which call Handle, Accept, Do and Exec and read the
// projection through Container, List and Hosts.
package orchestrator

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/coord"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/policy"
	"github.com/openagent/orchestrator/pkg/scheduler"
	"github.com/openagent/orchestrator/pkg/telemetry"
)

// Config wires an orchestrator.
type Config struct {
	JS        jetstream.JetStream
	Validator *events.Validator
	Logger    *slog.Logger
	// HostLiveness is how recent a host's heartbeat must be for it to
	// take containers; 10s when zero.
	HostLiveness time.Duration
	// HostGrace is how much longer than HostLiveness a host may be silent
	// before it is declared lost; DefaultHostGrace when zero.
	HostGrace time.Duration
	// AuditKey signs the audit chain's checkpoints, which the leader
	// publishes every CheckpointEvery (audit.CheckpointEvery when zero)
	// while the events stream grows; nil publishes none.
	AuditKey        ed25519.PrivateKey
	CheckpointEvery time.Duration
	// Meter makes the control plane's metrics (package telemetry); nil
	// records none.
	Meter metric.Meter
	// Tracer traces each request's steps (package telemetry); nil traces
	// nothing, while trace context is still carried from cause to effect.
	Tracer trace.TracerProvider
	// Alerts are the alert rules the leader evaluates, and their
	// webhooks; nil takes telemetry.DefaultRules.
	Alerts *telemetry.Alerts
	// Protected host paths no container may mount, such as the data
	// directory.
	Protected []string
	// Concurrency bounds the requests handled at once; 64 when zero.
	Concurrency int
	// PendingDeadline is how long a placed container may wait for its host
	// to create it before it fails with the reason; DefaultPendingDeadline
	// when zero.
	PendingDeadline time.Duration
	// Clustered says the streams are on a cluster, where they must have
	// three replicas.
	Clustered bool
	// DriftInterval is how often the streams' settings are checked against
	// what provisioning chose; DefaultDriftInterval when zero.
	DriftInterval time.Duration
	// Policy admits create requests (CEL policies); nil admits what the
	// built-in floor (admit) does.
	Policy *policy.Engine
	// Resolver looks up the host names of egress rules at admission; the
	// system's resolver when nil.
	Resolver policy.Resolver
	// Leases holds the control plane's election: orchestrators on one bus
	// campaign for it and the holder leads. Nil runs this orchestrator as
	// the only one: it always leads, unfenced.
	Leases *coord.Leases
	// ID names this orchestrator in the election; the hostname and process
	// id when empty. Address is where its HTTP API answers, told to those
	// who would reach the leader.
	ID, Address string
	// Lead runs for every term this orchestrator leads, beside its own
	// leader-only loops (the sessions and the request/reply door are
	// started there); its context ends with the term, and its error ends
	// the term.
	Lead func(ctx context.Context) error
}

// A host whose creates fail QuarantineAfter times in a row, for reasons
// of the host's (it is unavailable, times out, lacks the image), is passed
// by for QuarantineFor: placement goes elsewhere while it mends. A create
// refused for its own config (invalid, not supported) does not count.
const (
	QuarantineAfter = 5
	QuarantineFor   = time.Minute
)

// DefaultDriftInterval is how often the orchestrator looks at the
// streams' settings: someone who shortens the audit log's retention is
// reported within it.
const DefaultDriftInterval = 30 * time.Second

// DefaultPendingDeadline bounds the pending state: a host that has not
// created a container five minutes after it was placed there is not going
// to soon (it is down, or its command was lost).
const DefaultPendingDeadline = 5 * time.Minute

// Orchestrator is the control plane. Run it; its HTTP API is Handler.
type Orchestrator struct {
	js         jetstream.JetStream
	v          *events.Validator
	pub        *events.Publisher
	log        *slog.Logger
	liveness   time.Duration
	protected  []string
	conc       int
	source     string
	state      *state
	requests   jetstream.KeyValue
	containers jetstream.KeyValue
	hosts      jetstream.KeyValue
	ready      chan struct{}
	deadline   time.Duration
	clustered  bool
	driftEvery time.Duration
	policy     *policy.Engine
	resolver   policy.Resolver
	leases     *coord.Leases
	id         string
	address    string
	leadFn     func(ctx context.Context) error
	term       atomic.Pointer[term]
	events     jetstream.Stream
	// followed keeps, per host, the last inventory a worker reported while
	// this orchestrator followed: the next term acts on it.
	followedMu sync.Mutex
	followed   map[string]followedInventory
	grace      time.Duration
	heardSince atomic.Int64  // unix nanos: see heard
	reconnects atomic.Uint64 // the bus connection's, when last looked at
	deafSince  atomic.Int64  // unix nanos: see heard
	// unplaceable keeps why each lost container could not be replaced
	// yet, so that it is logged once (the liveness loop's alone).
	unplaceable     map[string]string
	auditKey        ed25519.PrivateKey
	checkpointEvery time.Duration
	metrics         instruments
	tracer          trace.Tracer // nil traces nothing
	alerts          *telemetry.Alerts
	samples         samples // the hosts' last resource samples
	deliverer       *telemetry.Deliverer
	// drained keeps the steps (stop, remove) this term sent to end the
	// containers moved off draining hosts (the liveness loop's alone).
	drained map[string]bool
}

// followedInventory is a host.reconciled event seen while following.
type followedInventory struct {
	seq uint64
	e   events.Event
}

// New returns an orchestrator on provisioned streams and buckets.
func New(ctx context.Context, cfg Config) (*Orchestrator, error) {
	o := &Orchestrator{
		js: cfg.JS, v: cfg.Validator, log: cfg.Logger, liveness: cfg.HostLiveness, protected: cfg.Protected, conc: cfg.Concurrency,
		source: "/openagent/orchestrator", state: newState(), ready: make(chan struct{}),
	}
	if o.log == nil {
		o.log = slog.Default()
	}
	if cfg.Tracer != nil {
		o.tracer = cfg.Tracer.Tracer("github.com/openagent/orchestrator/pkg/orchestrator")
	}
	o.pub = events.NewPublisher(cfg.JS, cfg.Validator, events.WithPublishTracer(o.tracer))
	if o.alerts = cfg.Alerts; o.alerts == nil {
		var err error
		if o.alerts, err = telemetry.NewAlerts(telemetry.AlertsConfig{}); err != nil {
			return nil, err
		}
	}
	o.deliverer = telemetry.NewDeliverer()
	if o.liveness == 0 {
		o.liveness = scheduler.DefaultLiveWithin
	}
	if o.conc == 0 {
		o.conc = 64
	}
	o.deadline = cfg.PendingDeadline
	if o.deadline <= 0 {
		o.deadline = DefaultPendingDeadline
	}
	o.clustered, o.driftEvery, o.policy, o.resolver = cfg.Clustered, cfg.DriftInterval, cfg.Policy, cfg.Resolver
	o.leases, o.id, o.address, o.leadFn, o.followed = cfg.Leases, cfg.ID, cfg.Address, cfg.Lead, map[string]followedInventory{}
	if o.id == "" {
		o.id = defaultID()
	}
	if o.grace = cfg.HostGrace; o.grace <= 0 {
		o.grace = DefaultHostGrace
	}
	o.unplaceable, o.drained = map[string]string{}, map[string]bool{}
	if o.auditKey, o.checkpointEvery = cfg.AuditKey, cfg.CheckpointEvery; o.checkpointEvery <= 0 {
		o.checkpointEvery = audit.CheckpointEvery
	}
	if err := o.instrument(cfg.Meter); err != nil {
		return nil, err
	}
	if o.driftEvery <= 0 {
		o.driftEvery = DefaultDriftInterval
	}
	var err error
	if o.events, err = cfg.JS.Stream(ctx, events.StreamEvents); err != nil {
		return nil, fmt.Errorf("orchestrator: stream %s: %w", events.StreamEvents, err)
	}
	for name, kv := range map[string]*jetstream.KeyValue{events.BucketRequests: &o.requests, events.BucketContainers: &o.containers, events.BucketHosts: &o.hosts} {
		if *kv, err = cfg.JS.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("orchestrator: bucket %s: %w", name, err)
		}
	}
	return o, nil
}

// Ready is closed once the projection caught up with the events stream
// and the hosts' records are in: from then on requests are decided on the
// whole state, and the doors may take them.
func (o *Orchestrator) Ready() <-chan struct{} { return o.ready }

// Run keeps the projection and, while this orchestrator leads, handles
// requests, until ctx is cancelled.
func (o *Orchestrator) Run(ctx context.Context) error {
	stream, err := o.js.Stream(ctx, events.StreamEvents)
	if err != nil {
		return err
	}
	info := stream.CachedInfo()
	cursor, err := o.state.Load(ctx, o.containers, info, o.log)
	if err != nil {
		return fmt.Errorf("orchestrator: load state: %w", err)
	}
	if cursor == 0 {
		o.log.Info("orchestrator: rebuilding state from the events stream")
	}
	last := info.State.LastSeq
	g, ctx := errgroup.WithContext(ctx)
	caughtUp, hostsKnown := make(chan struct{}), make(chan struct{})
	g.Go(func() error { return o.project(ctx, cursor, last, caughtUp) })
	g.Go(func() error { return o.watchHosts(ctx, hostsKnown) })
	g.Go(func() error { return o.forgetWhileFollowing(ctx) })
	g.Go(func() error { return o.listenSamples(ctx) })
	// Requests are decided on the whole state: the log caught up with, and
	// the hosts as they report.
	ready := func() bool {
		for _, ch := range []chan struct{}{caughtUp, hostsKnown} {
			select {
			case <-ch:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	g.Go(func() error {
		if !ready() {
			return nil
		}
		o.heard(time.Now())
		close(o.ready)
		return o.campaign(ctx)
	})
	return g.Wait()
}

// project applies the events stream from after cursor, in order, to the
// state; caughtUp is closed once it reached last.
func (o *Orchestrator) project(ctx context.Context, cursor, last uint64, caughtUp chan struct{}) error {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if cursor > 0 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: cursor + 1}
	}
	cons, err := o.js.OrderedConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		return err
	}
	if cursor >= last {
		close(caughtUp)
		caughtUp = nil
	}
	// Short pulls, as the relay's: a lost one is made again in seconds.
	iter, err := cons.Messages(jetstream.PullExpiry(5 * time.Second))
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	for {
		msg, err := iter.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return nil
			}
			o.log.Warn("orchestrator: projection", "err", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			continue
		}
		e, err := events.FromMsg(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
		if err == nil {
			o.state.Apply(md.Sequence.Stream, e)
			o.state.deliverExec(e)
			if caughtUp == nil && o.Leading() {
				o.observeStages(ctx, e)
			}
			o.hostHealth(ctx, e, caughtUp == nil)
			// A host's inventory is acted on once: when it is new to this
			// state (past the cursor it resumed from, or, rebuilding, once
			// caught up), by the leader; a follower keeps it for its next
			// term.
			if e.Type() == events.HostReconciled && md.Sequence.Stream > cursor && (cursor > 0 || caughtUp == nil) {
				o.inventory(ctx, md.Sequence.Stream, e)
			}
		}
		if caughtUp != nil && md.Sequence.Stream >= last {
			close(caughtUp)
			caughtUp = nil
		}
	}
}

// failOverdue fails the containers pending past the deadline, so that no
// reservation holds a host's resources for a container that will not
// come. The failed event carries a new generation: a create command that
// arrives later is refused by the worker.
func (o *Orchestrator) failOverdue(ctx context.Context) error {
	t := time.NewTicker(min(max(o.deadline/10, 100*time.Millisecond), 10*time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		for _, r := range o.state.overdue(time.Now().Add(-o.deadline)) {
			gen := o.state.nextGeneration(r.ID)
			msg := fmt.Sprintf("host %s did not create container %s within %v of its placement", r.Host, r.ID, o.deadline)
			_, err := o.publish(ctx, events.ContainerFailed, events.FailedData{ContainerID: r.ID, HostID: r.Host, Operation: "create",
				Error: api.Error{Kind: api.KindTimeout, Message: msg}},
				events.WithContainer(r.ID), events.WithHost(r.Host), events.WithGeneration(gen),
				events.WithExtension(events.ExtCorrelationID, r.RequestID), events.WithID(events.DeriveID(r.ID, "pending deadline")))
			if err != nil && ctx.Err() == nil {
				o.log.Warn("orchestrator: fail an overdue container", "container_id", r.ID, "err", err)
			}
		}
	}
}

// watchStreams looks at the streams' settings now and then and reports
// each drift from what provisioning chose, or unsafe setting, once: an
// error in the log and a stream.drifted event. A drift put right and made
// again is reported again.
func (o *Orchestrator) watchStreams(ctx context.Context) error {
	t := time.NewTicker(o.driftEvery)
	defer t.Stop()
	reported := map[string]string{} // stream → the problems reported
	for {
		drifts, err := events.Drifts(ctx, o.js, events.ProvisionConfig{Clustered: o.clustered})
		if err != nil && ctx.Err() == nil {
			o.log.Warn("orchestrator: check the streams' settings", "err", err)
		}
		now := map[string]bool{}
		for _, d := range drifts {
			now[d.Stream] = true
			key := strings.Join(d.Problems, "; ")
			if reported[d.Stream] == key {
				continue
			}
			o.log.Error("orchestrator: a stream's settings are not those provisioned", "stream", d.Stream, "problems", key)
			_, err := o.publish(ctx, events.StreamDrifted, events.StreamDriftedData{Stream: d.Stream, Problems: d.Problems},
				events.WithSubject(d.Stream), events.WithID(events.DeriveID(d.Stream, "drifted "+key)))
			if err != nil {
				o.log.Error("orchestrator: report a stream's drift", "stream", d.Stream, "err", err)
				continue // reported again at the next look
			}
			reported[d.Stream] = key
		}
		if err == nil {
			for name := range reported {
				if !now[name] {
					o.log.Info("orchestrator: a stream's settings are as provisioned again", "stream", name)
					delete(reported, name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// inventory acts on a host's inventory while leading and keeps it for
// the next term while following.
func (o *Orchestrator) inventory(ctx context.Context, seq uint64, e events.Event) {
	if o.Leading() {
		o.lostOnHost(ctx, seq, e)
		return
	}
	o.followedMu.Lock()
	o.followed[events.Ext(e, events.ExtHostID)] = followedInventory{seq, e}
	o.followedMu.Unlock()
}

// reconcileFollowed acts, at the start of a term, on the inventories the
// workers reported while this orchestrator followed. What the former
// leader reported of them already is stored once: the reports' ids are
// derived from the inventory's.
func (o *Orchestrator) reconcileFollowed(ctx context.Context) {
	o.followedMu.Lock()
	seen := o.followed
	o.followed = map[string]followedInventory{}
	o.followedMu.Unlock()
	for _, f := range seen {
		o.lostOnHost(ctx, f.seq, f.e)
	}
}

// lostOnHost reports lost what the state has created or running on a host
// whose worker, starting, did not find it.
func (o *Orchestrator) lostOnHost(ctx context.Context, seq uint64, e events.Event) {
	var d events.HostReconciledData
	if events.Data(e, &d) != nil {
		return
	}
	for _, r := range o.state.missingOn(d.HostID, seq, d.Containers) {
		reason := fmt.Sprintf("host %s restarted and has no container %s", d.HostID, r.ID)
		gen, id := o.state.nextGeneration(r.ID), events.DeriveID(r.ID, "lost "+e.ID())
		// The report must be made: it is tried again, with the same id,
		// until it is stored or the orchestrator stops.
		for wait := 100 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			_, err := o.publish(ctx, events.ContainerLost, events.LostData{ContainerID: r.ID, HostID: d.HostID, Reason: reason},
				events.WithContainer(r.ID), events.WithHost(d.HostID), events.WithGeneration(gen), events.WithID(id))
			if err == nil || ctx.Err() != nil {
				break
			}
			o.log.Warn("orchestrator: report a lost container; trying again", "container_id", r.ID, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
		}
	}
}

// forgetWhileFollowing drops removed containers from a follower's memory
// now and then; a leader's flushes drop them once written.
func (o *Orchestrator) forgetWhileFollowing(ctx context.Context) error {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if !o.Leading() {
				o.state.ForgetRemoved()
			}
		}
	}
}

func (o *Orchestrator) flushLoop(ctx context.Context) error {
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			// A leader paused past its lease must not write over its
			// successor's records: it writes only while its proclamation
			// is the last.
			if err := o.confirm(ctx); err != nil {
				if ctx.Err() == nil {
					o.log.Warn("orchestrator: not writing state", "err", err)
				}
				continue
			}
			if err := o.state.Flush(ctx, o.js, o.containers); err != nil && ctx.Err() == nil {
				o.log.Warn("orchestrator: write state", "err", err)
			}
		}
	}
}

// watchHosts keeps the hosts' records; known is closed once the records
// there were at the start are in.
//
// The watch is made again whenever the connection to the bus was made
// again: a watch's consumer may not have outlived a restart of the
// server, and noticing that by its missed heartbeats takes seconds in
// which every host would look silent.
func (o *Orchestrator) watchHosts(ctx context.Context, known chan struct{}) error {
	w, err := o.hosts.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { w.Stop() }()
	nc := o.js.Conn()
	reconnects := nc.Stats().Reconnects
	look := time.NewTicker(250 * time.Millisecond)
	defer look.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-look.C:
			if r := nc.Stats().Reconnects; r != reconnects && nc.IsConnected() {
				nw, err := o.hosts.WatchAll(ctx)
				if err != nil {
					o.log.Warn("orchestrator: watch the hosts again after a reconnection", "err", err)
					continue
				}
				reconnects = r
				_ = w.Stop()
				w = nw
			}
		case entry := <-w.Updates():
			if entry == nil {
				if known != nil {
					close(known) // the end of the initial values
					known = nil
				}
				continue
			}
			if entry.Operation() != jetstream.KeyValuePut {
				o.state.hostsMu.Lock()
				delete(o.state.hosts, entry.Key())
				delete(o.state.sched, entry.Key())
				o.state.hostList = nil // made again at the next placement
				o.state.hostsMu.Unlock()
				continue
			}
			var h events.HostRecord
			if json.Unmarshal(entry.Value(), &h) != nil {
				continue
			}
			// A worker says what its drivers enforce now and then, not
			// on every heartbeat: keep what it said last.
			o.state.hostsMu.RLock()
			if old := o.state.hosts[h.ID]; old != nil {
				for i := range h.Drivers {
					if h.Drivers[i].Enforcement != nil {
						continue
					}
					for _, od := range old.Drivers {
						if od.Name == h.Drivers[i].Name {
							h.Drivers[i].Enforcement = od.Enforcement
						}
					}
				}
			}
			o.state.hostsMu.RUnlock()
			// What placement reads of a host, made once per heartbeat
			// rather than once per request.
			sh := scheduler.Host{ID: h.ID, Labels: h.Labels, LastSeen: h.LastSeen, Capabilities: h.Capabilities,
				Capacity: scheduler.Resources{CPU: h.Capacity.CPU, MemoryMB: h.Capacity.MemoryMB, Pids: h.Capacity.Pids, GPUs: h.Capacity.GPUs},
				Reserved: scheduler.Resources{CPU: h.Reserved.CPU, MemoryMB: h.Reserved.MemoryMB, Pids: h.Reserved.Pids, GPUs: h.Reserved.GPUs}}
			for _, d := range h.Drivers {
				sh.Drivers = append(sh.Drivers, d.Name)
			}
			o.state.hostsMu.Lock()
			o.state.hosts[h.ID], o.state.sched[h.ID] = &h, sh
			o.state.hostList = nil // made again at the next placement
			o.state.hostsMu.Unlock()
		}
	}
}

// HandOverAckWait is the ack wait of the leader's consumers (requests,
// workers' events): what a leader that died had in hand is delivered to
// its successor this long after the last sign of progress, which the
// consumer loop gives at a third of it while a handler works.
const HandOverAckWait = 5 * time.Second

func leaderConsumer(durable, filter string) jetstream.ConsumerConfig {
	c := events.ConsumerConfig(durable, filter)
	c.AckWait = HandOverAckWait
	return c
}

// serveRequests consumes the durable requests stream: what services
// published, even while the orchestrator was down.
func (o *Orchestrator) serveRequests(ctx context.Context) error {
	cons, err := o.js.CreateOrUpdateConsumer(ctx, events.StreamRequests, leaderConsumer("orchestrator", events.RequestsRoot+".>"))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("orchestrator: requests consumer: %w", err)
	}
	return events.Consume(ctx, cons, o.v, func(ctx context.Context, d *events.Delivery) error {
		_, err := o.handle(ctx, d.Event, true) // the loop validated it
		return err
	}, events.WithConcurrency(o.conc), events.WithLogger(o.log), events.WithConsumeTracer(o.tracer),
		events.WithInvalid(func(ctx context.Context, m jetstream.Msg, cause error) {
			id, typ := events.Identify(&nats.Msg{Header: m.Headers(), Data: m.Data()})
			if id == "" {
				id = m.Headers().Get(jetstream.MsgIDHeader)
			}
			if _, err := o.Reject(ctx, id, typ, cause); err != nil {
				o.log.Warn("orchestrator: publish rejection", "err", err)
			}
		}),
		events.WithGiveUp(func(ctx context.Context, d *events.Delivery, cause error) {
			if _, err := o.Reject(ctx, d.Event.ID(), d.Event.Type(), fmt.Errorf("gave up after %d attempts: %w", d.Attempt, cause)); err != nil {
				o.log.Warn("orchestrator: publish rejection", "err", err)
			}
		}))
}

// hostHealth counts a host's creates that fail in a row and quarantines
// it when they reach QuarantineAfter, with an event. Replaying history
// counts without acting: only a live event quarantines.
func (o *Orchestrator) hostHealth(ctx context.Context, e events.Event, live bool) {
	var host string
	switch e.Type() {
	case events.ContainerCreated, events.ContainerStarted:
		host = events.Ext(e, events.ExtHostID)
		o.state.hostsMu.Lock()
		delete(o.state.failures, host)
		o.state.hostsMu.Unlock()
		return
	case events.ContainerFailed:
		var d events.FailedData
		if events.Data(e, &d) != nil || d.Operation != "create" || d.HostID == "" {
			return
		}
		switch api.ErrorKind(d.Error.Kind) {
		case api.KindUnavailable, api.KindTimeout, api.KindNotFound, api.KindInternal:
		default:
			return // the request's fault, not the host's
		}
		host = d.HostID
		o.state.hostsMu.Lock()
		o.state.failures[host]++
		o.state.lastFailure[host] = d.Error.Message
		n, now := o.state.failures[host], time.Now()
		if n < QuarantineAfter || !live || !o.Leading() || o.state.quarantine[host].After(now) {
			o.state.hostsMu.Unlock()
			return
		}
		until := now.Add(QuarantineFor)
		o.state.quarantine[host], o.state.failures[host] = until, 0
		msg := o.state.lastFailure[host]
		o.state.hostsMu.Unlock()
		o.log.Warn("orchestrator: a host is quarantined: its creates keep failing", "host_id", host, "failures", n, "until", until, "last_error", msg)
		if _, err := o.publish(ctx, events.HostQuarantined, events.HostQuarantinedData{HostID: host, Until: until.UTC(), Failures: n, LastError: msg},
			events.WithHost(host), events.WithID(events.DeriveID(host, "quarantined "+until.UTC().Format(time.RFC3339Nano)))); err != nil {
			o.log.Warn("orchestrator: publish a host's quarantine", "host_id", host, "err", err)
		}
	}
}

// reserve places a container and reserves what it holds on the chosen
// host, in one step under the store's lock: concurrent placements each see
// the others' reservations, and no host is given more than it has. what
// is "id" or "name" when either is in use, with the record that holds the
// id; nothing is placed then.
func (o *Orchestrator) reserve(req scheduler.Request, r *record) (prev *record, what string, err error) {
	o.state.Update(func(m *projection.Model) []string {
		if prev, what = taken(m, r); what != "" {
			return nil
		}
		o.state.hostsMu.RLock()
		defer o.state.hostsMu.RUnlock()
		var plan scheduler.Plan
		if plan, err = scheduler.Place(o.snapshot(m), req); err != nil {
			return nil
		}
		if err = checkDriverLimits(o.state.hosts[plan.HostID], plan, r.Spec); err != nil {
			return nil
		}
		r.Host, r.Driver = plan.HostID, plan.Driver
		reserve(m, r)
		return []string{r.ID}
	})
	return prev, what, err
}

// snapshot is what placement decides on: the hosts (one list, sorted by
// id, made again only when a host's record changed) and the maps of what
// changes with every placement, which placement reads for the hosts it
// looks at. The store's lock and hostsMu must be held: placements are one
// at a time, so the list they share is made by one of them.
func (o *Orchestrator) snapshot(m *projection.Model) scheduler.Snapshot {
	if o.state.hostList == nil {
		list := make([]*scheduler.Host, 0, len(o.state.sched))
		for _, h := range o.state.sched {
			list = append(list, &h)
		}
		slices.SortFunc(list, func(a, b *scheduler.Host) int { return strings.Compare(a.ID, b.ID) })
		o.state.hostList = list
	}
	return scheduler.Snapshot{Now: time.Now(), LiveWithin: o.liveness, Hosts: o.state.hostList,
		Allocated: m.Allocated, Groups: m.Groups, Quarantined: o.state.quarantine, Lost: m.LostHosts, Draining: m.DrainingHosts}
}
