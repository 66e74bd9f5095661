package telemetry

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Exporters of spans.
const (
	ExportNone   = "none"   // trace nothing (the default): no spans are made, at no cost
	ExportStdout = "stdout" // spans as JSON, one object each, for development
	ExportOTLP   = "otlp"   // OTLP over HTTP to a collector
)

// TracingConfig says whether and where spans go.
type TracingConfig struct {
	// Exporter is ExportNone (or empty), ExportStdout or ExportOTLP.
	Exporter string
	// Endpoint is the collector's OTLP/HTTP URL (http://collector:4318;
	// the path /v1/traces is added when there is none). Empty takes
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT,
	// else http://localhost:4318, as every OTLP exporter does.
	Endpoint string
	// Stdout is where ExportStdout writes; os.Stdout when nil.
	Stdout io.Writer
	// SampleRatio is the share of the traces begun here that are kept
	// (1 when zero); a trace a caller began keeps the caller's choice.
	SampleRatio float64
	// Service and Instance name this process in its spans' resource:
	// service.name ("openagent" when empty) and service.instance.id.
	Service, Instance string
}

// Tracing is a tracer provider with its exporter.
type Tracing struct {
	provider *sdktrace.TracerProvider
}

// NewTracing makes the provider a config asks for; nil, with no error,
// when tracing is off.
func NewTracing(ctx context.Context, cfg TracingConfig) (*Tracing, error) {
	if cfg.Exporter == "" || cfg.Exporter == ExportNone {
		return nil, nil
	}
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	if ratio < 0 || ratio > 1 {
		return nil, fmt.Errorf("telemetry: trace sample ratio %g: must be in (0, 1]", ratio)
	}
	var exp sdktrace.SpanExporter
	var err error
	switch cfg.Exporter {
	case ExportStdout:
		w := cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
	case ExportOTLP:
		var opts []otlptracehttp.Option
		if cfg.Endpoint != "" {
			u, err := url.Parse(cfg.Endpoint)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return nil, fmt.Errorf("telemetry: trace endpoint %q: want a URL such as http://collector:4318", cfg.Endpoint)
			}
			if u.Path == "" || u.Path == "/" {
				u.Path = "/v1/traces" // a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is
			}
			opts = append(opts, otlptracehttp.WithEndpointURL(u.String()))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("telemetry: trace exporter %q: use %s, %s or %s", cfg.Exporter, ExportNone, ExportStdout, ExportOTLP)
	}
	if err != nil {
		return nil, fmt.Errorf("telemetry: %s exporter: %w", cfg.Exporter, err)
	}
	return &Tracing{provider: NewTracerProvider(exp, ratio, cfg.Service, cfg.Instance)}, nil
}

// NewTracerProvider batches spans to exp, keeping ratio of the traces
// begun here. Tests pass an in-memory exporter.
func NewTracerProvider(exp sdktrace.SpanExporter, ratio float64, service, instance string) *sdktrace.TracerProvider {
	if service == "" {
		service = "openagent"
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(service)}
	if instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(instance))
	}
	return sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio))),
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
	)
}

// Provider is the tracer provider; nil when tracing is off.
func (t *Tracing) Provider() trace.TracerProvider {
	if t == nil {
		return nil
	}
	return t.provider
}

// Shutdown sends the spans still batched and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// TracingFlags registers the tracing flags of a command on fs and returns
// the config they fill in.
func TracingFlags(fs *flag.FlagSet) *TracingConfig {
	cfg := &TracingConfig{}
	fs.StringVar(&cfg.Exporter, "trace-exporter", ExportNone, "where spans go: none (no tracing, no cost), stdout (JSON, for development) or otlp")
	fs.StringVar(&cfg.Endpoint, "trace-endpoint", "", "the collector's OTLP/HTTP URL, e.g. http://collector:4318 (default: OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:4318)")
	fs.Float64Var(&cfg.SampleRatio, "trace-sample-ratio", 1, "the share of traces begun here that are kept; a caller's traceparent keeps the caller's choice")
	return cfg
}
