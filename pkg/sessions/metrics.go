package sessions

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/openagent/orchestrator/pkg/api"
)

// instrument makes the sessions' metrics (package telemetry):
//
//	openagent_sessions{status}                     sessions by status: requested, ready, closed, failed, expired
//	openagent_pool_sandboxes{pool,driver,image,state} a pool's sandboxes: warm (waiting for a session) or creating
//	openagent_pool_size{pool,driver,image}          the least a pool keeps warm
func (s *Service) instrument(meter metric.Meter) error {
	if meter == nil {
		return nil
	}
	_, err := meter.Int64ObservableGauge("openagent.sessions", metric.WithDescription("Sessions by status"),
		metric.WithInt64Callback(func(_ context.Context, obs metric.Int64Observer) error {
			by := map[api.SessionStatus]int64{}
			s.mu.Lock()
			for _, sess := range s.m {
				by[sess.Status]++
			}
			s.mu.Unlock()
			for st, n := range by {
				obs.Observe(n, metric.WithAttributes(attribute.String("status", string(st))))
			}
			return nil
		}))
	if err != nil {
		return err
	}
	sandboxes, err := meter.Int64ObservableGauge("openagent.pool.sandboxes", metric.WithDescription("A warm pool's sandboxes: warm, waiting for a session, or being created"))
	if err != nil {
		return err
	}
	size, err := meter.Int64ObservableGauge("openagent.pool.size", metric.WithDescription("The least a warm pool keeps warm"))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		s.pools.mu.Lock()
		defer s.pools.mu.Unlock()
		for key, pl := range s.pools.m {
			v := pl.view()
			of := []attribute.KeyValue{attribute.String("pool", key), attribute.String("driver", v.Driver), attribute.String("image", v.Image)}
			obs.ObserveInt64(sandboxes, int64(v.Warm), metric.WithAttributes(append(of, attribute.String("state", "warm"))...))
			obs.ObserveInt64(sandboxes, int64(v.Creating), metric.WithAttributes(append(of, attribute.String("state", "creating"))...))
			obs.ObserveInt64(size, int64(v.Size), metric.WithAttributes(of...))
		}
		return nil
	}, sandboxes, size)
	return err
}
