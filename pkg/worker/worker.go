// Package worker is the agent on every host: it registers the host,
// heartbeats, runs the commands the orchestrator sends through the host's
// drivers, publishes what happened as state events, and watches its
// containers. Stopping a worker leaves its containers running; a new one
// re-adopts them.
package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Config wires a worker.
type Config struct {
	NC        *nats.Conn
	JS        jetstream.JetStream
	Validator *events.Validator
	Logger    *slog.Logger
	HostID    string
	Labels    map[string]string
	Drivers   []driver.Driver
	Capacity  api.Resources
	// Reserved is capacity kept for the host's own processes: the
	// orchestrator places nothing on it.
	Reserved api.Resources
	// Heartbeat is how often the host record is refreshed; 2s when zero.
	Heartbeat time.Duration
	// Tracer traces each command's handling and driver calls (package
	// telemetry); nil traces nothing. Either way a sandbox gets its
	// command's trace context as TRACEPARENT.
	Tracer trace.TracerProvider
	// Resilience sets the retries and circuit breaker around each
	// driver's lifecycle operations; zero values take the defaults.
	Resilience Resilience
	// SampleEvery is how often the running containers' resource use is
	// sampled and published (events.SamplesSubject); DefaultSampleEvery
	// when zero, never when negative.
	SampleEvery time.Duration
	// Concurrency bounds the commands run at once; 32 when zero.
	Concurrency int
	// ReapAfter, when set, makes the worker remove containers of its
	// drivers that the orchestrator has not known for this long (left by a
	// lost create, or by hand); each removal is a removed event with the
	// reason. ReapDryRun only logs what would be removed.
	ReapAfter  time.Duration
	ReapDryRun bool
	// Protected are host paths no container may mount, besides
	// driver.SensitivePaths: the worker's data directory.
	Protected []string
	// RestartBackoff is the first wait before a container is restarted by
	// its restart policy, doubled at each restart in a row up to
	// RestartBackoffMax; DefaultRestartBackoff and DefaultRestartBackoffMax
	// when zero.
	RestartBackoff, RestartBackoffMax time.Duration
}

// Worker runs one host's commands.
type Worker struct {
	beats   atomic.Int64 // host records written
	cfg     Config
	pub     *events.Publisher
	tracer  trace.Tracer // nil traces nothing
	log     *slog.Logger
	source  string
	drivers map[string]driver.Driver
	hosts   jetstream.KeyValue
	events  jetstream.Stream
	started time.Time

	mu          sync.Mutex
	owner       map[string]driver.Driver // container id → its driver
	watching    map[string]bool
	restarts    map[string]int               // container id → restarts in a row, by its restart policy
	held        map[string]bool              // containers stopped or removed by command: not restarted
	probeKilled map[string]bool              // runs killed for a failed probe: failures, for the restart policy
	lifecycle   map[string]*lifecycleLock    // a container's creates, starts and removes, one at a time
	guards      map[string]*guard            // each driver's retries and circuit breaker, by name
	watches     chan watchRequest            // to the watch loop
	health      map[string]api.DriverInfo    // the last health each driver gave
	fence       map[string]uint64            // container id → generation carried out
	errors      map[string]map[string]uint64 // driver → error kind → failed calls
	watermark   uint64                       // commands at or below it may be older than fence; see fence.go
}

// New returns a worker; Run starts it.
func New(ctx context.Context, cfg Config) (*Worker, error) {
	if !events.ValidToken(cfg.HostID) {
		return nil, fmt.Errorf("worker: host id %q: use letters, digits, '-' and '_'", cfg.HostID)
	}
	if len(cfg.Drivers) == 0 {
		return nil, errors.New("worker: no drivers")
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 2 * time.Second
	}
	if cfg.RestartBackoff <= 0 {
		cfg.RestartBackoff = DefaultRestartBackoff
	}
	if cfg.RestartBackoffMax <= 0 {
		cfg.RestartBackoffMax = DefaultRestartBackoffMax
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 32
	}
	if cfg.SampleEvery == 0 {
		cfg.SampleEvery = DefaultSampleEvery
	}
	var tracer trace.Tracer
	if cfg.Tracer != nil {
		tracer = cfg.Tracer.Tracer("github.com/openagent/orchestrator/pkg/worker")
	}
	w := &Worker{cfg: cfg, pub: events.NewPublisher(cfg.JS, cfg.Validator, events.ThroughIngest(cfg.HostID), events.WithPublishTracer(tracer)),
		tracer: tracer, log: cfg.Logger,
		source: "/openagent/hosts/" + cfg.HostID, drivers: map[string]driver.Driver{},
		owner: map[string]driver.Driver{}, watching: map[string]bool{}, restarts: map[string]int{}, held: map[string]bool{}, probeKilled: map[string]bool{}, lifecycle: map[string]*lifecycleLock{}, watches: make(chan watchRequest), health: map[string]api.DriverInfo{}, fence: map[string]uint64{}, errors: map[string]map[string]uint64{}, started: time.Now().UTC(), guards: map[string]*guard{}}
	for _, d := range cfg.Drivers {
		w.guards[d.Name()] = newGuard(d.Name(), cfg.Resilience)
	}
	if w.log == nil {
		w.log = slog.Default()
	}
	w.watermark = uint64(w.started.Add(-maxClockSkew).UnixNano())
	w.log = w.log.With("host_id", cfg.HostID)
	for _, d := range cfg.Drivers {
		w.drivers[d.Name()] = d
	}
	var err error
	// The streams and buckets are the orchestrator's to make: a worker
	// checks that what it needs is there.
	if w.hosts, err = cfg.JS.KeyValue(ctx, events.BucketHosts); err != nil {
		return nil, fmt.Errorf("worker: bucket %s: %w (the orchestrator provisions it: start one on this NATS first)", events.BucketHosts, err)
	}
	if w.events, err = cfg.JS.Stream(ctx, events.StreamEvents); err != nil {
		return nil, fmt.Errorf("worker: stream %s: %w (the orchestrator provisions it: start one on this NATS first)", events.StreamEvents, err)
	}
	return w, nil
}

// idSpace derives the ids of the events a worker publishes from what
// caused them, so that a replayed command or a second look at the same
// exit publishes the same id, which JetStream stores once.
var idSpace = uuid.MustParse("9d0c3f5e-2b7a-4e8c-b1f4-6a2d9e0c7b13")

func derive(parts ...any) string {
	return uuid.NewSHA1(idSpace, fmt.Append(nil, parts...)).String()
}

// Run registers the host, reconciles, and runs commands until ctx is
// cancelled. Containers keep running after it returns.
func (w *Worker) Run(ctx context.Context) error {
	if err := w.register(ctx); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.heartbeat(gctx) })
	g.Go(func() error { return w.watchLoop(gctx) })
	if w.cfg.SampleEvery > 0 {
		g.Go(func() error { return w.sampleLoop(gctx) })
	}
	if err := w.reconcile(gctx); err != nil {
		w.log.Warn("worker: reconcile", "err", err)
	}
	g.Go(func() error { return w.consumeCommands(gctx) })
	if w.cfg.ReapAfter > 0 {
		g.Go(func() error { return w.reapLoop(gctx) })
	}
	var follows sync.WaitGroup
	defer follows.Wait()
	sub, err := w.serveLogs(gctx, &follows)
	if err != nil {
		return err
	}
	err = g.Wait()
	_ = sub.Drain()
	return err
}

// CommandAckWait is the ack wait of a host's commands: what a worker that
// was killed had in hand comes back to it this long after the last sign
// of progress, which the consumer loop gives at a third of it while a
// command runs. A killed worker restarted at once takes up its creates
// within it, not the default's 30s.
const CommandAckWait = 5 * time.Second

// consumeCommands runs the host's commands, creating its consumer again
// whenever the server lost it.
func (w *Worker) consumeCommands(ctx context.Context) error {
	for {
		cc := events.WorkQueueConsumerConfig("worker-"+w.cfg.HostID, events.CommandFilter(w.cfg.HostID))
		cc.AckWait = CommandAckWait
		cons, err := w.cfg.JS.CreateOrUpdateConsumer(ctx, events.StreamCommands, cc)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			w.log.Warn("worker: command consumer", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Second):
				continue
			}
		}
		err = events.Consume(ctx, cons, w.cfg.Validator, w.handle, events.WithConcurrency(w.cfg.Concurrency), events.WithLogger(w.log),
			events.WithConsumeTracer(w.tracer), events.WithGiveUp(func(ctx context.Context, d *events.Delivery, cause error) { w.fail(ctx, d.Event, cause) }))
		if !errors.Is(err, events.ErrConsumerGone) {
			return err
		}
		w.log.Info("worker: command consumer lost; creating it again", "err", err)
	}
}

// healthTimeout bounds a driver's health check on the heartbeat path: a
// hung runtime must not stop the host from reporting.
const healthTimeout = 2 * time.Second

// enforcementEvery is how many heartbeats go by between the ones that say
// what the drivers enforce (a long list that rarely changes).
const enforcementEvery = 30

func (w *Worker) hostRecord(ctx context.Context) events.HostRecord {
	full := w.beats.Add(1)%enforcementEvery == 1
	var drivers []events.DriverInfo
	for _, d := range w.cfg.Drivers {
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		info := api.DriverInfo{Name: d.Name(), Breaker: w.guards[d.Name()].state()}
		if h, err := d.Health(hctx); err == nil {
			info.Version, info.MinCPU = h.Version, h.MinCPU
			if full {
				info.Enforcement = h.Enforcement
			}
			w.mu.Lock()
			w.health[d.Name()] = info
			w.mu.Unlock()
		} else {
			w.mu.Lock()
			if last, ok := w.health[d.Name()]; ok {
				info = last // what it said last, while it does not answer
				info.Breaker = w.guards[d.Name()].state()
			}
			w.mu.Unlock()
		}
		cancel()
		info.Errors = w.errorCounts(d.Name())
		drivers = append(drivers, info)
	}
	r := w.cfg.Reserved
	return events.HostRecord{ID: w.cfg.HostID, Labels: w.cfg.Labels, Drivers: drivers, Capacity: w.capacity(), Capabilities: w.capabilities(),
		Reserved:  events.Resources{CPU: r.CPU, MemoryMB: r.Memory, DiskMB: r.Disk, Pids: r.Pids, GPUs: r.GPUs},
		StartedAt: w.started, LastSeen: time.Now().UTC()}
}

func (w *Worker) capacity() events.Resources {
	c := w.cfg.Capacity
	return events.Resources{CPU: c.CPU, MemoryMB: c.Memory, DiskMB: c.Disk, Pids: c.Pids, GPUs: c.GPUs}
}

// capabilities are what the host offers beyond running containers.
func (w *Worker) capabilities() []string {
	var out []string
	for _, d := range w.cfg.Drivers {
		if _, ok := d.(driver.Pauser); ok {
			out = append(out, "pause")
			break
		}
	}
	if w.cfg.Capacity.GPUs > 0 {
		out = append(out, "gpu")
	}
	return out
}

func (w *Worker) register(ctx context.Context) error {
	rec := w.hostRecord(ctx)
	data := events.HostRegisteredData{HostID: w.cfg.HostID, Labels: w.cfg.Labels, Drivers: rec.Drivers, Capacity: w.capacity(), StartedAt: w.started}
	e, err := events.New(events.HostRegistered, w.source, data,
		events.WithHost(w.cfg.HostID), events.WithID(derive(w.cfg.HostID, "registered", w.started.UnixNano())))
	if err != nil {
		return err
	}
	if _, err := w.pub.Publish(ctx, e); err != nil {
		return fmt.Errorf("worker: register: %w", err)
	}
	return w.beat(ctx)
}

func (w *Worker) beat(ctx context.Context) error {
	b, _ := json.Marshal(w.hostRecord(ctx))
	_, err := w.hosts.Put(ctx, w.cfg.HostID, b)
	return err
}

func (w *Worker) heartbeat(ctx context.Context) error {
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := w.beat(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("worker: heartbeat", "err", err)
			}
			w.reportVanished(ctx)
		}
	}
}

// vanishedReason is why a container removed behind the system's back (docker
// rm, a deleted directory) is reported removed.
const vanishedReason = "removed outside the system: the runtime no longer has it"

// reportVanished reports removed the containers this host ran that its
// runtimes no longer have.
func (w *Worker) reportVanished(ctx context.Context) {
	w.mu.Lock()
	byDriver := map[driver.Driver][]string{}
	for id, drv := range w.owner {
		byDriver[drv] = append(byDriver[drv], id)
	}
	w.mu.Unlock()
	for drv, ids := range byDriver {
		list, err := drv.List(ctx, driver.Filter{})
		if err != nil {
			continue
		}
		have := map[string]bool{}
		for _, c := range list {
			have[c.ID] = true
		}
		for _, id := range ids {
			if have[id] {
				continue
			}
			if _, err := drv.Get(ctx, id); !errors.Is(err, driver.ErrNotFound) {
				continue // there after all, or the runtime does not answer
			}
			w.vanished(ctx, drv, id)
		}
	}
}

// vanished reports one container gone from its runtime, once.
func (w *Worker) vanished(ctx context.Context, drv driver.Driver, id string) {
	w.mu.Lock()
	if w.owner[id] != drv {
		w.mu.Unlock()
		return // removed by a command meanwhile, or reported already
	}
	delete(w.owner, id)
	w.mu.Unlock()
	w.log.Warn("worker: a container was removed outside the system", "container_id", id)
	if err := w.emit(ctx, events.ContainerRemoved, id, derive(id, "vanished"), events.RemovedData{ContainerID: id, HostID: w.cfg.HostID, Reason: vanishedReason}, nil); err != nil {
		w.log.Warn("worker: report a removed container", "container_id", id, "err", err)
	}
}

// emit publishes a state event about a container.
func (w *Worker) emit(ctx context.Context, typ, containerID, id string, data any, cause *events.Event) error {
	opts := []events.Option{events.WithHost(w.cfg.HostID), events.WithContainer(containerID), events.WithID(id),
		events.WithGeneration(w.generationOf(containerID, cause))}
	if cause != nil {
		opts = append(opts, events.CausedBy(*cause))
	}
	e, err := events.New(typ, w.source, data, append(opts, events.WithTraceFrom(ctx))...)
	if err != nil {
		return err
	}
	_, err = w.pub.Publish(ctx, e)
	return err
}
