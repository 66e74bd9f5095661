package orchestrator

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
)

// instruments are the control plane's metrics (see package telemetry):
//
//	openagent_requests_total{type,outcome}     requests handled: accepted, or the kind they were refused with
//	openagent_request_duration_seconds{type}    from receipt to the recorded outcome
//	openagent_containers{status}               containers by status
//	openagent_hosts{state}                     hosts live, silent, lost, draining
//	openagent_driver_breaker_open{host,driver} 1 while a host's driver's circuit breaker is open
//	openagent_driver_errors_total{host,driver,kind} a host's driver's failed calls, by kind
//	openagent_stage_duration_seconds{stage}    admit, place (the leader's), create (placed → created), start (created → started)
//	openagent_consumer_pending{stream,consumer}     messages a durable consumer (the leader's, the hosts', the webhooks') has yet to be given: its lag
//	openagent_consumer_ack_pending{stream,consumer} messages given and not yet acknowledged
//	openagent_container_cpu_cores{host,container}   the last sample of a running container's cpu use
//	openagent_container_memory_bytes{host,container} and of its memory
type instruments struct {
	requests metric.Int64Counter
	duration metric.Float64Histogram
	stages   metric.Float64Histogram
	// placedAt and createdAt are when containers in flight were placed
	// and created, for the create and start stages (the leader's loop
	// alone touches them).
	stageMu   sync.Mutex
	placedAt  map[string]time.Time
	createdAt map[string]time.Time
}

// stageBuckets are the stage histograms' bounds, in seconds.
var stageBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func (o *Orchestrator) instrument(meter metric.Meter) error {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	o.metrics.placedAt, o.metrics.createdAt = map[string]time.Time{}, map[string]time.Time{}
	var err error
	if o.metrics.stages, err = meter.Float64Histogram("openagent.stage.duration", metric.WithUnit("s"),
		metric.WithDescription("How long each stage of a container's start took: admit and place (the leader's), create (placed to created) and start (created to started), by the events' times"),
		metric.WithExplicitBucketBoundaries(stageBuckets...)); err != nil {
		return err
	}
	if o.metrics.requests, err = meter.Int64Counter("openagent.requests", metric.WithDescription("Requests handled, by type and outcome")); err != nil {
		return err
	}
	if o.metrics.duration, err = meter.Float64Histogram("openagent.request.duration", metric.WithUnit("s"),
		metric.WithDescription("From a request's receipt to its recorded outcome"),
		metric.WithExplicitBucketBoundaries(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)); err != nil {
		return err
	}
	if _, err = meter.Int64ObservableGauge("openagent.containers", metric.WithDescription("Containers by status"),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			by := map[api.Status]int64{}
			o.state.Read(func(m *projection.Model) {
				for _, r := range m.Containers {
					by[r.Status]++
				}
			})
			for s, n := range by {
				obs.Observe(n, metric.WithAttributes(attribute.String("status", string(s))))
			}
			return nil
		})); err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("openagent.hosts", metric.WithDescription("Hosts by state: live, silent past their TTL, lost, draining"),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			by := map[string]int64{"live": 0, "silent": 0, "lost": 0, "draining": 0}
			for _, h := range o.Hosts() {
				switch {
				case !h.LostAt.IsZero():
					by["lost"]++
				case !h.Live:
					by["silent"]++
				case !h.DrainingSince.IsZero():
					by["draining"]++
				default:
					by["live"]++
				}
			}
			for s, n := range by {
				obs.Observe(n, metric.WithAttributes(attribute.String("state", s)))
			}
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableGauge("openagent.driver.breaker.open", metric.WithDescription("1 while a host's driver's circuit breaker is open"),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			for _, h := range o.Hosts() {
				for _, d := range h.Drivers {
					open := int64(0)
					if d.Breaker == "open" {
						open = 1
					}
					obs.Observe(open, metric.WithAttributes(attribute.String("host", h.ID), attribute.String("driver", d.Name)))
				}
			}
			return nil
		}))
	if err != nil {
		return err
	}
	_, err = meter.Int64ObservableCounter("openagent.driver.errors", metric.WithDescription("A host's driver's failed calls since its worker started, by kind"),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			for _, h := range o.Hosts() {
				for _, d := range h.Drivers {
					for kind, n := range d.Errors {
						obs.Observe(int64(n), metric.WithAttributes(attribute.String("host", h.ID), attribute.String("driver", d.Name), attribute.String("kind", kind)))
					}
				}
			}
			return nil
		}))
	if err != nil {
		return err
	}
	if err := o.instrumentSamples(meter); err != nil {
		return err
	}
	return o.instrumentConsumers(meter)
}

// instrumentSamples reports the containers' last resource samples, as
// their hosts' records carry them.
func (o *Orchestrator) instrumentSamples(meter metric.Meter) error {
	cpu, err := meter.Float64ObservableGauge("openagent.container.cpu.cores", metric.WithDescription("A running container's cpu use at its last sample, in cores"))
	if err != nil {
		return err
	}
	mem, err := meter.Int64ObservableGauge("openagent.container.memory.bytes", metric.WithDescription("A running container's memory use at its last sample"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		for _, s := range o.Samples() {
			attrs := metric.WithAttributes(attribute.String("host", s.Host), attribute.String("container", s.ContainerID))
			obs.ObserveFloat64(cpu, s.CPU, attrs)
			obs.ObserveInt64(mem, int64(s.MemoryBytes), attrs)
		}
		return nil
	}, cpu, mem)
	return err
}

// instrumentConsumers reports the durable consumers' lag and what they
// hold unacknowledged, asked of JetStream at each collection.
func (o *Orchestrator) instrumentConsumers(meter metric.Meter) error {
	pending, err := meter.Int64ObservableGauge("openagent.consumer.pending", metric.WithDescription("Messages a durable consumer has yet to be given: its lag"))
	if err != nil {
		return err
	}
	acks, err := meter.Int64ObservableGauge("openagent.consumer.ack_pending", metric.WithDescription("Messages given to a durable consumer and not yet acknowledged"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(ctx context.Context, obs metric.Observer) error {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		for _, name := range []string{events.StreamRequests, events.StreamCommands, events.StreamIngest, events.StreamEvents} {
			stream, err := o.js.Stream(ctx, name)
			if err != nil {
				continue // not reachable now: no figure rather than a false one
			}
			infos := stream.ListConsumers(ctx)
			for ci := range infos.Info() {
				if ci.Config.Durable == "" {
					continue
				}
				attrs := metric.WithAttributes(attribute.String("stream", name), attribute.String("consumer", ci.Name))
				obs.ObserveInt64(pending, int64(ci.NumPending), attrs)
				obs.ObserveInt64(acks, int64(ci.NumAckPending), attrs)
			}
		}
		return nil
	}, pending, acks)
	return err
}

// stage records how long a stage took.
func (o *Orchestrator) stage(ctx context.Context, name string, d time.Duration) {
	o.metrics.stages.Record(ctx, d.Seconds(), metric.WithAttributes(attribute.String("stage", name)))
}

// observeStages records the create and start stages from the events
// stream as the leader's projection reads it live: placed to created,
// created to started, by the events' own times (stamped by the leader and
// the host, whose clocks may differ a little).
func (o *Orchestrator) observeStages(ctx context.Context, e events.Event) {
	id := events.Ext(e, events.ExtContainerID)
	m := &o.metrics
	m.stageMu.Lock()
	defer m.stageMu.Unlock()
	switch e.Type() {
	case events.ContainerPlaced:
		if len(m.placedAt) < maxInFlightStages {
			m.placedAt[id] = e.Time()
		}
	case events.ContainerCreated:
		if at, ok := m.placedAt[id]; ok {
			delete(m.placedAt, id)
			o.stage(ctx, "create", e.Time().Sub(at))
			if len(m.createdAt) < maxInFlightStages {
				m.createdAt[id] = e.Time()
			}
		}
	case events.ContainerStarted:
		if at, ok := m.createdAt[id]; ok {
			delete(m.createdAt, id)
			o.stage(ctx, "start", e.Time().Sub(at))
		}
	case events.ContainerFailed, events.ContainerRemoved, events.ContainerLost:
		delete(m.placedAt, id)
		delete(m.createdAt, id)
	}
}

// maxInFlightStages bounds the containers whose stages are being timed.
const maxInFlightStages = 100000

// measure records a request's outcome and how long it took.
func (o *Orchestrator) measure(ctx context.Context, req, out events.Event, err error, since time.Time) {
	typ := strings.TrimPrefix(req.Type(), events.Prefix)
	outcome := "accepted"
	switch {
	case err != nil:
		return // not decided: it is handled again
	case out.Type() == events.RequestRejected:
		var d events.RejectedData
		_ = events.Data(out, &d)
		outcome = string(d.Error.Kind)
	}
	o.metrics.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("type", typ), attribute.String("outcome", outcome)))
	o.metrics.duration.Record(ctx, time.Since(since).Seconds(), metric.WithAttributes(attribute.String("type", typ)))
}
