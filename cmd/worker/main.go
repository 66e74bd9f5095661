// Command worker runs the OpenAgent agent of one host: it registers the
// host with the orchestrator through NATS, runs its commands through the
// host's drivers and reports what happens. It links the worker and the
// drivers only, never the control plane: the streams and buckets it needs
// are the orchestrator's to make, and it says so when they are missing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/telemetry"
	"github.com/openagent/orchestrator/pkg/worker"
)

func main() {
	local.MaybeRunShim()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run() error {
	capacity := worker.MachineCapacity()
	home, _ := os.UserHomeDir()
	defaultData := filepath.Join(home, ".local", "share", "openagent-worker")
	if os.Geteuid() == 0 {
		// Containers run as other users and must reach their directories.
		defaultData = "/var/lib/openagent-worker"
	}
	hostname, _ := os.Hostname()
	var (
		natsURL = flag.String("nats-url", "nats://127.0.0.1:4222", "the NATS JetStream server")
		tlsCA   = flag.String("tls-ca", "", "the authorities (PEM) to trust for a NATS that takes TLS")
		credsF  = flag.String("creds", "", "this host's worker credential (openagent creds issue --role worker --host ID)")
		hostID  = flag.String("host-id", worker.HostID(hostname), "this host's id")
		labels  = flag.String("labels", "", "labels of this host: k=v,k=v")
		drivers = flag.String("drivers", "auto", "drivers to offer: local, fake, docker; auto is local and fake, and docker when an engine answers")
		cpu     = flag.Float64("cpu", capacity.CPU, "cpu cores to offer")
		memory  = flag.Int64("memory", capacity.Memory, "memory to offer, MB")
		pids    = flag.Int64("pids", capacity.Pids, "processes to offer")
		gpus    = flag.Int64("gpus", 0, "GPUs to offer (placement counts them; the drivers here give none to containers)")
		resCPU  = flag.Float64("reserve-cpu", 0, "cpu cores kept for the host's own processes: nothing is placed on them")
		resMem  = flag.Int64("reserve-memory", 0, "memory kept for the host's own processes, MB")
		reap    = flag.Duration("reap-after", 0, "remove containers the orchestrator has not known for this long (0: never)")
		beat    = flag.Duration("heartbeat", 2*time.Second, "how often the host reports that it is alive; keep it well under the orchestrator's --host-ttl")
		dryRun  = flag.Bool("reap-dry-run", false, "only log what the reaper would remove")
		dataDir = flag.String("data-dir", defaultData, "where the local driver keeps its state")
	)
	tracingCfg := telemetry.TracingFlags(flag.CommandLine)
	flag.Parse()
	lbls := map[string]string{}
	for _, kv := range strings.Split(*labels, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return fmt.Errorf("--labels: %q is not k=v", kv)
		}
		lbls[k] = v
	}
	if *cpu <= 0 || *memory <= 0 || *pids <= 0 {
		return fmt.Errorf("--cpu, --memory and --pids must be positive")
	}
	if *gpus < 0 || *resCPU < 0 || *resMem < 0 || *resCPU >= *cpu || *resMem >= *memory {
		return fmt.Errorf("--gpus, --reserve-cpu and --reserve-memory must not be negative, and what is reserved less than what is offered")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := os.MkdirAll(*dataDir, 0o711); err != nil {
		return err
	}
	drvs, err := worker.Drivers(ctx, *dataDir, strings.Split(*drivers, ","))
	if err != nil {
		return err
	}
	opts := []nats.Option{nats.Name("openagent-worker " + *hostID), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("worker: nats", "err", err) })}
	if *credsF != "" {
		copts, err := creds.NATSOptions(*credsF)
		if err != nil {
			return err
		}
		opts = append(opts, copts...)
	}
	if *tlsCA != "" {
		opts = append(opts, nats.RootCAs(*tlsCA))
	}
	nc, err := creds.Dial(*natsURL, time.Minute, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *natsURL, err)
	}
	defer nc.Close()
	if !nc.AuthRequired() {
		log.Warn("the NATS server takes connections without credentials: anyone who reaches it can command this host", "nats", *natsURL)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	v, err := events.NewValidator()
	if err != nil {
		return err
	}
	tracingCfg.Instance = *hostID
	tracing, err := telemetry.NewTracing(ctx, *tracingCfg)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = tracing.Shutdown(sctx) // the last spans
	}()
	w, err := worker.New(ctx, worker.Config{NC: nc, JS: js, Validator: v, HostID: *hostID, Labels: lbls, Drivers: drvs, Logger: log, Tracer: tracing.Provider(),
		Capacity: api.Resources{CPU: *cpu, Memory: *memory, Pids: *pids, GPUs: *gpus}, Reserved: api.Resources{CPU: *resCPU, Memory: *resMem}, ReapAfter: *reap, ReapDryRun: *dryRun, Protected: []string{*dataDir}, Heartbeat: *beat})
	if err != nil {
		return err
	}
	log.Info("worker running", "nats", *natsURL, "host_id", *hostID, "drivers", *drivers)
	err = w.Run(ctx)
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	log.Info("shut down; containers keep running")
	return nc.Drain()
}
