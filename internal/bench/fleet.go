package bench

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// FleetConfig configures Fleet.
type FleetConfig struct {
	Hosts      int // simulated workers on the fake driver
	Containers int // containers started in all
	Clients    int // concurrent clients; 64 when zero
	// Window is how long heartbeats are counted; 5 s when zero.
	Window time.Duration
}

// FleetResult is what a fleet run measured: the whole system (server,
// orchestrator, the simulated workers) in this one process.
type FleetResult struct {
	Hosts            int     `json:"hosts"`
	Containers       int     `json:"containers"`
	Errors           int     `json:"errors"`
	RegisterSeconds  float64 `json:"register_s"`        // until every host was live
	PlacementsPerSec float64 `json:"placements_per_s"`  // accepted (placed) requests per second
	AllRunningSec    float64 `json:"all_running_s"`     // until the last container ran
	LatencyP50       float64 `json:"latency_p50_ms"`    // request → running
	LatencyP99       float64 `json:"latency_p99_ms"`    // request → running
	RSSMB            float64 `json:"rss_mb"`            // peak resident memory of the process
	CPUSeconds       float64 `json:"cpu_s"`             // user and system, during the run
	CPUCores         float64 `json:"cpu_cores"`         // CPUSeconds over the run's wall time
	HeartbeatsPerSec float64 `json:"heartbeats_per_s"`  // host records written, measured
	HeartbeatBytes   float64 `json:"heartbeat_bytes_s"` // and their bytes
}

// Fleet starts an embedded system with N simulated hosts and starts M
// containers through it (request/reply, as services do), measuring
// placement, time until all run, memory, cpu and the heartbeats' load.
func Fleet(ctx context.Context, cfg FleetConfig) (*FleetResult, error) {
	if cfg.Hosts <= 0 || cfg.Containers <= 0 {
		return nil, errors.New("bench: --hosts and --containers must be positive")
	}
	if cfg.Clients <= 0 {
		cfg.Clients = 64
	}
	if cfg.Window <= 0 {
		cfg.Window = 5 * time.Second
	}
	dir, err := os.MkdirTemp("", "openagent-fleet-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sys, err := system.Start(ctx, system.Config{DataDir: dir, Orchestrator: true})
	if err != nil {
		return nil, err
	}
	defer sys.Stop()
	res := &FleetResult{Hosts: cfg.Hosts, Containers: cfg.Containers}
	begin := time.Now()
	if err := addFakeHosts(ctx, sys, "fleet", cfg.Hosts); err != nil {
		return nil, err
	}
	nc, err := nats.Connect(sys.NATSURL, nats.UserCredentials(filepath.Join(sys.Credentials, "admin.creds"))) // admin may use any inbox
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := waitHosts(ctx, nc, cfg.Hosts); err != nil {
		return nil, err
	}
	res.RegisterSeconds = time.Since(begin).Seconds()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if res.HeartbeatsPerSec, res.HeartbeatBytes, err = heartbeatLoad(ctx, js, cfg.Window); err != nil {
		return nil, err
	}

	cpu0 := cpuTime()
	all, failures, elapsed, err := startMany(ctx, nc, cfg.Clients, cfg.Containers, "fleet")
	if err != nil {
		return nil, err
	}
	p := percentiles(all)
	res.Errors = failures
	res.AllRunningSec = elapsed.Seconds()
	res.PlacementsPerSec = float64(len(all)) / elapsed.Seconds()
	res.LatencyP50, res.LatencyP99 = p.P50, p.P99
	res.CPUSeconds = (cpuTime() - cpu0).Seconds()
	res.CPUCores = res.CPUSeconds / elapsed.Seconds()
	res.RSSMB = peakRSSMB()
	return res, nil
}

// heartbeatLoad measures the hosts bucket's writes over a window.
func heartbeatLoad(ctx context.Context, js jetstream.JetStream, window time.Duration) (perSec, bytesPerSec float64, err error) {
	s, err := js.Stream(ctx, "KV_"+events.BucketHosts)
	if err != nil {
		return 0, 0, err
	}
	before, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(window)
	after, err := s.Info(ctx)
	if err != nil {
		return 0, 0, err
	}
	writes := float64(after.State.LastSeq - before.State.LastSeq)
	size := float64(after.State.Bytes) / float64(max(after.State.Msgs, 1)) // the bucket keeps one record per host
	return writes / window.Seconds(), writes * size / window.Seconds(), nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// peakRSSMB is the process's peak resident memory (VmHWM).
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
