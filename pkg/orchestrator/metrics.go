package orchestrator

import (
	"context"
	"strings"
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
type instruments struct {
	requests metric.Int64Counter
	duration metric.Float64Histogram
}

func (o *Orchestrator) instrument(meter metric.Meter) error {
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	var err error
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
	return err
}

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
