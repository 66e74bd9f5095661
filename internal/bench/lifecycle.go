package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/telemetry"
	"github.com/openagent/orchestrator/pkg/worker"
)

// LifecycleConfig says what to run.
type LifecycleConfig struct {
	Embedded   bool   // start a system in this process; else use NATSURL
	NATSURL    string // a running system's NATS
	CredsFile  string // a credential for it: admin's, to watch the events and reach the doors
	Hosts      int    // simulated worker hosts on the fake driver (embedded)
	Clients    int    // concurrent clients
	Requests   int    // container starts in all
	SyncAlways bool   // the embedded server fsyncs every write
	Baseline   int    // samples of each baseline; 2000 when zero
	// Telemetry is what the embedded system measures itself with:
	// TelemetryDefault (metrics, no tracing), TelemetryOff or TelemetryOn
	// (metrics, and every span exported by OTLP to a receiver in this
	// process).
	Telemetry string
}

// The embedded system's telemetry in a lifecycle run.
const (
	TelemetryDefault = "default"
	TelemetryOff     = "off"
	TelemetryOn      = "on"
)

// LifecycleResult is what a run measured.
type LifecycleResult struct {
	Requests            int     `json:"requests"`
	Clients             int     `json:"clients"`
	Hosts               int     `json:"hosts"`
	Sync                string  `json:"sync"`
	Errors              int     `json:"errors"`
	LatencyP50          float64 `json:"latency_p50_ms"`
	LatencyP90          float64 `json:"latency_p90_ms"`
	LatencyP99          float64 `json:"latency_p99_ms"`
	LatencyMax          float64 `json:"latency_max_ms"`
	Throughput          float64 `json:"throughput_per_s"`
	BaselineJSPublish   float64 `json:"baseline_js_publish_p50_ms"`
	BaselineJSPublish99 float64 `json:"baseline_js_publish_p99_ms"`
	BaselineReqReply    float64 `json:"baseline_request_reply_p50_ms"`
	BaselineReqReply99  float64 `json:"baseline_request_reply_p99_ms"`
	Seconds             float64 `json:"seconds"`
	Telemetry           string  `json:"telemetry,omitempty"`
	SpanExports         int64   `json:"span_exports,omitempty"`      // OTLP requests the receiver took (telemetry on)
	SpanBytes           int64   `json:"span_export_bytes,omitempty"` // and their bytes

	latencies []time.Duration
}

// Lifecycle measures request → running: a create-and-start request sent by
// NATS request/reply to the orchestrator, until the container's started
// event is published by its worker.
func Lifecycle(ctx context.Context, cfg LifecycleConfig) (_ *LifecycleResult, err error) {
	if cfg.Clients <= 0 || cfg.Requests <= 0 {
		return nil, errors.New("bench: clients and requests must be positive")
	}
	if cfg.Baseline == 0 {
		cfg.Baseline = 2000
	}
	res := &LifecycleResult{Requests: cfg.Requests, Clients: cfg.Clients, Hosts: cfg.Hosts, Sync: "interval"}
	if cfg.SyncAlways {
		res.Sync = "always"
	}
	var nc *nats.Conn
	if cfg.Embedded {
		if cfg.Hosts <= 0 {
			return nil, errors.New("bench: --hosts must be positive")
		}
		dir, err := os.MkdirTemp("", "openagent-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		scfg := system.Config{DataDir: dir, SyncAlways: cfg.SyncAlways, Orchestrator: true}
		switch cfg.Telemetry {
		case "", TelemetryDefault:
		case TelemetryOff:
			scfg.NoMetrics = true
		case TelemetryOn:
			rcv, err := startOTLPReceiver()
			if err != nil {
				return nil, err
			}
			defer func() {
				rcv.Close()
				res.SpanExports, res.SpanBytes = rcv.requests.Load(), rcv.bytes.Load()
			}()
			scfg.Tracing = telemetry.TracingConfig{Exporter: telemetry.ExportOTLP, Endpoint: rcv.URL}
		default:
			return nil, fmt.Errorf("bench: telemetry %q: use %s, %s or %s", cfg.Telemetry, TelemetryDefault, TelemetryOff, TelemetryOn)
		}
		res.Telemetry = cfg.Telemetry
		sys, err := system.Start(ctx, scfg)
		if err != nil {
			return nil, err
		}
		defer sys.Stop()
		if err := addFakeHosts(ctx, sys, "bench", cfg.Hosts); err != nil {
			return nil, err
		}
		// Clients use a connection of their own, as services would.
		if nc, err = nats.Connect(sys.NATSURL, nats.UserCredentials(filepath.Join(sys.Credentials, "admin.creds"))); err != nil { // admin may use any inbox
			return nil, err
		}
		defer nc.Close()
		if err := waitHosts(ctx, nc, cfg.Hosts); err != nil {
			return nil, err
		}
	} else {
		var err error
		var opts []nats.Option
		if cfg.CredsFile != "" {
			if opts, err = creds.NATSOptions(cfg.CredsFile); err != nil {
				return nil, fmt.Errorf("bench: %w", err)
			}
		}
		if nc, err = nats.Connect(cfg.NATSURL, opts...); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		defer nc.Close()
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if err := baselines(ctx, nc, js, cfg.Baseline, res); err != nil {
		return nil, err
	}

	prefix := fmt.Sprintf("b%x", time.Now().UnixNano()&0xffffffff)
	all, failures, elapsed, err := startMany(ctx, nc, cfg.Clients, cfg.Requests, prefix)
	if err != nil {
		return nil, err
	}
	p := percentiles(all)
	res.LatencyP50, res.LatencyP90, res.LatencyP99, res.LatencyMax = p.P50, p.P90, p.P99, p.Max
	res.Errors = failures
	res.latencies = all
	res.Throughput = float64(len(all)) / elapsed.Seconds()
	res.Seconds = elapsed.Seconds()
	return res, nil
}

var spec = func() driver.ContainerConfig {
	s := driver.DefaultConfig()
	s.Image, s.Command = "fake", []string{"fake", "--forever"}
	s.Resources = driver.Resources{CPU: 0.001, MemoryMB: 1, DiskMB: 1, Pids: 1}
	return s
}()

// startMany starts n containers through the request door from clients
// concurrent clients, each waiting for its container to run, and returns
// each start's latency, the failures and the time it all took.
func startMany(ctx context.Context, nc *nats.Conn, clients, n int, prefix string) ([]time.Duration, int, time.Duration, error) {
	// Every started event is published on the container's subject; one
	// subscription routes them to the waiting clients.
	var waiting sync.Map // container id → chan time.Time
	sub, err := nc.Subscribe(events.EventsRoot+".container.*."+events.Name(events.ContainerStarted), func(m *nats.Msg) {
		at := time.Now()
		if ch, ok := waiting.Load(m.Header.Get("ce-" + events.ExtContainerID)); ok {
			select {
			case ch.(chan time.Time) <- at:
			default:
			}
		}
	})
	if err != nil {
		return nil, 0, 0, err
	}
	defer sub.Unsubscribe()
	var next, failures atomic.Int64
	lat := make([][]time.Duration, clients)
	var wg sync.WaitGroup
	begin := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) || ctx.Err() != nil {
					return
				}
				d, err := startOne(ctx, nc, &waiting, fmt.Sprintf("%s-%d", prefix, i))
				if err != nil {
					failures.Add(1)
					continue
				}
				lat[c] = append(lat[c], d)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(begin)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return all, int(failures.Load()), elapsed, nil
}

func startOne(ctx context.Context, nc *nats.Conn, waiting *sync.Map, id string) (time.Duration, error) {
	ch := make(chan time.Time, 1)
	waiting.Store(id, ch)
	defer waiting.Delete(id)
	e, err := events.New(events.ContainerCreateRequested, "/openagent/bench", api.CreateRequest{ContainerID: id, Driver: "fake", Start: true, Spec: spec})
	if err != nil {
		return 0, err
	}
	m, err := events.ToMsg(events.SubjectRequest, e)
	if err != nil {
		return 0, err
	}
	begin := time.Now()
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return 0, err
	}
	if reply.Header.Get("ce-type") != events.RequestAccepted {
		return 0, fmt.Errorf("bench: %s: %s", reply.Header.Get("ce-type"), reply.Data)
	}
	select {
	case at := <-ch:
		return at.Sub(begin), nil
	case <-time.After(30 * time.Second):
		return 0, errors.New("bench: no started event within 30s")
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// addFakeHosts runs n simulated hosts on the fake driver, roomy enough
// that capacity never decides.
func addFakeHosts(ctx context.Context, sys *system.System, prefix string, n int) error {
	for i := range n {
		if err := sys.AddWorker(ctx, worker.Config{HostID: fmt.Sprintf("%s-%03d", prefix, i), Drivers: []driver.Driver{fake.New()},
			Capacity: api.Resources{CPU: 1000, Memory: 1e9, Pids: 1e9}}); err != nil {
			return err
		}
	}
	return nil
}

func waitHosts(ctx context.Context, nc *nats.Conn, n int) error {
	wait := max(time.Minute, time.Duration(n)*200*time.Millisecond) // a large fleet takes a while to come up
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		m, err := nc.RequestWithContext(ctx, events.SubjectHosts, nil)
		if err == nil && countHosts(m.Data) >= n {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("bench: %d hosts did not register within %s", n, wait)
}

// baselines measures, on the same server, a JetStream publish that waits
// for its ack (file storage, as the system's streams) and a core NATS
// request/reply.
func baselines(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, n int, res *LifecycleResult) error {
	name := fmt.Sprintf("BENCH_%d", time.Now().UnixNano())
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{"bench." + name}, Storage: jetstream.FileStorage}); err != nil {
		return err
	}
	defer js.DeleteStream(context.Background(), name)
	payload := make([]byte, 512)
	var pub []time.Duration
	for range n {
		begin := time.Now()
		if _, err := js.Publish(ctx, "bench."+name, payload); err != nil {
			return err
		}
		pub = append(pub, time.Since(begin))
	}
	sub, err := nc.Subscribe("bench.echo."+name, func(m *nats.Msg) { _ = m.Respond(m.Data) })
	if err != nil {
		return err
	}
	defer sub.Unsubscribe()
	var rr []time.Duration
	for range n {
		begin := time.Now()
		if _, err := nc.RequestWithContext(ctx, "bench.echo."+name, payload); err != nil {
			return err
		}
		rr = append(rr, time.Since(begin))
	}
	p, r := percentiles(pub), percentiles(rr)
	res.BaselineJSPublish, res.BaselineJSPublish99 = p.P50, p.P99
	res.BaselineReqReply, res.BaselineReqReply99 = r.P50, r.P99
	return nil
}
