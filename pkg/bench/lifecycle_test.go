package bench

import (
	"context"
	"testing"
)

// BenchmarkLifecycle runs b.N container starts through an embedded system:
// go test -bench Lifecycle -cpuprofile cpu.out ./pkg/bench
func BenchmarkLifecycle(b *testing.B) {
	res, err := Lifecycle(context.Background(), LifecycleConfig{Embedded: true, Hosts: 100, Clients: 64, Requests: max(b.N, 64), Baseline: 200})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(res.LatencyP50, "p50-ms")
	b.ReportMetric(res.LatencyP99, "p99-ms")
	b.ReportMetric(res.Throughput, "starts/s")
	b.ReportMetric(res.BaselineJSPublish, "js-publish-p50-ms")
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
