// Package telemetry is the system's metrics and traces, through
// go.opentelemetry.io/otel. Metrics are read by a Prometheus exporter into
// a registry of the system's own, which the HTTP API serves at /metrics;
// every name starts with openagent_. Traces go to an OTLP collector or to
// stdout, or nowhere (the default), where no span is made at all.
package telemetry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// Metrics holds the meter provider and the registry it is read into.
type Metrics struct {
	provider *sdkmetric.MeterProvider
	registry *prometheus.Registry
	meter    metric.Meter
}

// New makes the system's metrics.
func New() (*Metrics, error) {
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	p := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	return &Metrics{provider: p, registry: reg, meter: p.Meter("github.com/openagent/orchestrator")}, nil
}

// Meter makes the instruments.
func (m *Metrics) Meter() metric.Meter { return m.meter }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// Shutdown stops the provider.
func (m *Metrics) Shutdown(ctx context.Context) error { return m.provider.Shutdown(ctx) }
