package bench

import (
	"context"
	"os"
	"testing"

	"github.com/openagent/orchestrator/pkg/driver/local"
)

func TestMain(m *testing.M) {
	local.MaybeRunShim()
	os.Exit(m.Run())
}

// BenchmarkLifecycle runs b.N container starts through an embedded system,
// in each telemetry mode:
// go test -bench Lifecycle/on -cpuprofile cpu.out ./internal/bench
func BenchmarkLifecycle(b *testing.B) {
	for _, mode := range TelemetryModes {
		b.Run(mode, func(b *testing.B) {
			res, err := Lifecycle(context.Background(), LifecycleConfig{Embedded: true, Hosts: 100, Clients: 64, Requests: max(b.N, 64), Baseline: 200,
				Telemetry: mode})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(res.LatencyP50, "p50-ms")
			b.ReportMetric(res.LatencyP99, "p99-ms")
			b.ReportMetric(res.Throughput, "starts/s")
			b.ReportMetric(res.BaselineJSPublish, "js-publish-p50-ms")
		})
	}
}

// A small run checks that the benchmark measures real starts.
func TestLifecycleSmall(t *testing.T) {
	res, err := Lifecycle(context.Background(), LifecycleConfig{Embedded: true, Hosts: 2, Clients: 4, Requests: 40, Baseline: 50})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.LatencyP50 <= 0 || res.Throughput <= 0 || res.BaselineJSPublish <= 0 || res.BaselineReqReply <= 0 {
		t.Fatalf("result %+v", res)
	}
}

func TestSessionSmall(t *testing.T) {
	res, err := Session(context.Background(), SessionConfig{Embedded: true, Driver: "local", Warm: 1, Runs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if res.ColdReady <= 0 || res.WarmReady <= 0 || res.Exec <= 0 || res.Image != "host" {
		t.Fatalf("result %+v", res)
	}
}
