package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Spans reach a collector by OTLP over HTTP: an in-process receiver
// decodes what the exporter sends.
func TestOTLPExport(t *testing.T) {
	got := make(chan *coltrace.ExportTraceServiceRequest, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %s; want /v1/traces as protobuf", r.URL.Path, r.Header.Get("Content-Type"))
		}
		b, _ := io.ReadAll(r.Body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Errorf("not an OTLP export: %v", err)
		}
		got <- &req
		w.Header().Set("Content-Type", "application/x-protobuf")
		b, _ = proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Write(b)
	}))
	defer srv.Close()

	ctx := context.Background()
	tr, err := NewTracing(ctx, TracingConfig{Exporter: ExportOTLP, Endpoint: srv.URL, Instance: "orchestrator-1"})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider().Tracer("test").Start(ctx, "handle container.create.requested")
	span.End()
	if err := tr.Shutdown(ctx); err != nil { // flushes the batch
		t.Fatal(err)
	}
	select {
	case req := <-got:
		rs := req.GetResourceSpans()
		if len(rs) != 1 || len(rs[0].GetScopeSpans()) != 1 || rs[0].GetScopeSpans()[0].GetSpans()[0].GetName() != "handle container.create.requested" {
			t.Fatalf("exported %v; want the one span", req)
		}
		attrs := map[string]string{}
		for _, a := range rs[0].GetResource().GetAttributes() {
			attrs[a.GetKey()] = a.GetValue().GetStringValue()
		}
		if attrs["service.name"] != "openagent" || attrs["service.instance.id"] != "orchestrator-1" {
			t.Errorf("resource %v; want service openagent, instance orchestrator-1", attrs)
		}
	default:
		t.Fatal("the collector received nothing")
	}
}

// The stdout exporter writes each span as JSON, for development.
func TestStdoutExport(t *testing.T) {
	var buf bytes.Buffer
	ctx := context.Background()
	tr, err := NewTracing(ctx, TracingConfig{Exporter: ExportStdout, Stdout: &buf})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider().Tracer("test").Start(ctx, "driver create")
	span.End()
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var s struct{ Name string }
	if err := json.NewDecoder(&buf).Decode(&s); err != nil || s.Name != "driver create" {
		t.Fatalf("stdout: %q (%v); want the span as JSON", buf.String(), err)
	}
}

// Off is the default and makes no provider; an unknown exporter or a
// ratio out of range is refused, named.
func TestTracingConfig(t *testing.T) {
	ctx := context.Background()
	for _, off := range []string{"", ExportNone} {
		tr, err := NewTracing(ctx, TracingConfig{Exporter: off})
		if err != nil || tr != nil || tr.Provider() != nil {
			t.Errorf("exporter %q: %v, %v; want tracing off", off, tr, err)
		}
	}
	if _, err := NewTracing(ctx, TracingConfig{Exporter: "jaeger"}); err == nil || !strings.Contains(err.Error(), `"jaeger"`) {
		t.Errorf("exporter jaeger: %v; want it refused by name", err)
	}
	if _, err := NewTracing(ctx, TracingConfig{Exporter: ExportOTLP, Endpoint: "collector:4318"}); err == nil || !strings.Contains(err.Error(), "collector:4318") {
		t.Errorf("endpoint without a scheme: %v; want it refused by name", err)
	}
	if _, err := NewTracing(ctx, TracingConfig{Exporter: ExportStdout, SampleRatio: 2}); err == nil || !strings.Contains(err.Error(), "ratio") {
		t.Errorf("ratio 2: %v; want it refused", err)
	}
}
