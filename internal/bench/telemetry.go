package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// TelemetryResult compares lifecycle runs of one config with the
// system's telemetry off, at its default (metrics) and on (metrics and
// traces), the modes taking turns, round after round, so that a drift of
// the machine falls on each alike.
type TelemetryResult struct {
	Rounds int                         `json:"rounds"`
	Modes  map[string]*LifecycleResult `json:"modes"` // latencies pooled over the rounds; throughput their median
	// Ratios to off, of the pooled p50 and p99 and of the median
	// throughput.
	Ratios map[string]Ratio `json:"ratios"`
}

// Ratio is a mode's figures over the same figures with telemetry off.
type Ratio struct {
	P50        float64 `json:"p50"`
	P99        float64 `json:"p99"`
	Throughput float64 `json:"throughput"`
}

// TelemetryModes are the modes a comparison runs, off first.
var TelemetryModes = []string{TelemetryOff, TelemetryDefault, TelemetryOn}

// LifecycleTelemetry runs cfg rounds times in each telemetry mode.
func LifecycleTelemetry(ctx context.Context, cfg LifecycleConfig, rounds int) (*TelemetryResult, error) {
	if !cfg.Embedded {
		return nil, errors.New("bench: comparing telemetry needs --embedded: it starts the systems it compares")
	}
	if rounds <= 0 {
		return nil, errors.New("bench: rounds must be positive")
	}
	runs := map[string][]*LifecycleResult{}
	for range rounds {
		for _, mode := range TelemetryModes {
			c := cfg
			c.Telemetry = mode
			res, err := Lifecycle(ctx, c)
			if err != nil {
				return nil, fmt.Errorf("bench: telemetry %s: %w", mode, err)
			}
			runs[mode] = append(runs[mode], res)
		}
	}
	out := &TelemetryResult{Rounds: rounds, Modes: map[string]*LifecycleResult{}, Ratios: map[string]Ratio{}}
	for mode, rs := range runs {
		out.Modes[mode] = pool(rs)
	}
	off := out.Modes[TelemetryOff]
	for mode, r := range out.Modes {
		out.Ratios[mode] = Ratio{P50: r.LatencyP50 / off.LatencyP50, P99: r.LatencyP99 / off.LatencyP99, Throughput: r.Throughput / off.Throughput}
	}
	return out, nil
}

// pool merges one mode's runs: percentiles over every latency, the
// median throughput, the sums of errors and exports.
func pool(rs []*LifecycleResult) *LifecycleResult {
	out := *rs[0]
	var all []time.Duration
	var tput []float64
	out.Errors, out.SpanExports, out.SpanBytes, out.Requests, out.Seconds = 0, 0, 0, 0, 0
	for _, r := range rs {
		all = append(all, r.latencies...)
		tput = append(tput, r.Throughput)
		out.Errors += r.Errors
		out.SpanExports += r.SpanExports
		out.SpanBytes += r.SpanBytes
		out.Requests += r.Requests
		out.Seconds += r.Seconds
	}
	p := percentiles(all)
	out.LatencyP50, out.LatencyP90, out.LatencyP99, out.LatencyMax = p.P50, p.P90, p.P99, p.Max
	slices.Sort(tput)
	out.Throughput = tput[(len(tput)-1)/2] // the lower median
	out.latencies = all
	return &out
}

// otlpReceiver takes OTLP/HTTP exports and counts them, as a collector
// would take them, without keeping them.
type otlpReceiver struct {
	URL      string
	srv      *http.Server
	requests atomic.Int64
	bytes    atomic.Int64
}

func startOTLPReceiver() (*otlpReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &otlpReceiver{URL: "http://" + ln.Addr().String()}
	r.srv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		n, _ := io.Copy(io.Discard, req.Body)
		r.requests.Add(1)
		r.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK) // an empty ExportTraceServiceResponse
	})}
	go r.srv.Serve(ln)
	return r, nil
}

func (r *otlpReceiver) Close() { _ = r.srv.Close() }
