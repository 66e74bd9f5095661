// Command orchestrator runs the OpenAgent control plane. With no flags it is
// a complete single-machine system: NATS with JetStream embedded, the
// orchestrator, its HTTP API and a worker for this host.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/openagent/orchestrator/pkg/coord"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/scheduler"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/telemetry"
)

func main() {
	local.MaybeRunShim()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "orchestrator:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		dataDir    = flag.String("data-dir", system.DefaultDataDir(), "where JetStream and the local driver keep their state")
		httpAddr   = flag.String("http", "127.0.0.1:8080", "address of the HTTP API")
		natsListen = flag.String("nats-listen", "127.0.0.1:4222", "address the embedded NATS server listens on")
		natsURL    = flag.String("nats-url", "", "use this external NATS JetStream instead of embedding one (no embedded worker then unless --worker)")
		credsFile  = flag.String("creds", "", "the orchestrator's credential for the external NATS (--nats-url); the embedded server makes its own in DATA/credentials")
		withWorker = flag.Bool("worker", true, "run a worker for this host in the same process")
		drivers    = flag.String("drivers", "auto", "the embedded worker's drivers: local, fake, docker; auto is local and fake, and docker when an engine answers")
		hostID     = flag.String("host-id", "", "the embedded worker's host id (default: the hostname)")
		syncAlways = flag.Bool("sync-always", false, "fsync every JetStream write (slower; survives power loss)")
		keepCode   = flag.Bool("keep-code", false, "keep the code and output of session runs in their audit events (default: hashes and sizes only)")
		tlsCert    = flag.String("tls-cert", "", "serve the HTTP API and the embedded NATS with TLS only: the certificate (PEM)")
		tlsKey     = flag.String("tls-key", "", "the certificate's key (PEM)")
		tlsCA      = flag.String("tls-ca", "", "the authorities (PEM) to trust for NATS; default: the system's, or the embedded server's own certificate")
		policyDir  = flag.String("policy", "", "a directory of admission policies (*.json, CEL); default: the built-in pack")
		policyPar  = flag.String("policy-params", "", "a JSON file of the policies' params (image allowlist, allowRoot, maxima), over the defaults")
		policyDry  = flag.Bool("policy-dry-run", false, "only report what the policies would refuse")
		pending    = flag.Duration("pending-deadline", orchestrator.DefaultPendingDeadline, "how long a placed container may wait for its host to create it before it fails")
		id         = flag.String("id", "", "this orchestrator's name in the control plane's election (default: hostname-pid)")
		advertise  = flag.String("advertise", "", "the HTTP API's URL told to the other orchestrators, for callers they send to the leader (default: the address it listens on)")
		leaseTTL   = flag.Duration("lease-ttl", coord.DefaultTTL, "the leader's lease: a leader that stops renewing it is replaced within it and a third more")
		hostTTL    = flag.Duration("host-ttl", scheduler.DefaultLiveWithin, "how recent a host's heartbeat must be for it to take containers")
		hostGrace  = flag.Duration("host-grace", orchestrator.DefaultHostGrace, "how much longer than --host-ttl a host may be silent before it is declared lost and its containers rescheduled")
		verbose    = flag.Bool("v", false, "log debug messages")
		alerts     = flag.String("alerts", "", "an alerts file (JSON): the alert rules (CEL over containers' and hosts' figures) and their webhooks; default: the built-in rules")
		tracing    = telemetry.TracingFlags(flag.CommandLine)
	)
	flag.Parse()
	workerSet := false
	flag.Visit(func(f *flag.Flag) { workerSet = workerSet || f.Name == "worker" })
	if *natsURL != "" && !workerSet {
		*withWorker = false
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if err := os.MkdirAll(*dataDir, 0o711); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := system.Config{
		DataDir: *dataDir, HTTPAddr: *httpAddr, NATSListen: *natsListen, NATSURL: *natsURL, CredsFile: *credsFile, SyncAlways: *syncAlways,
		Orchestrator: true, Worker: *withWorker, HostID: *hostID, Drivers: splitList(*drivers), Logger: log, KeepCode: *keepCode,
		TLSCert: *tlsCert, TLSKey: *tlsKey, TLSCA: *tlsCA,
		PendingDeadline: *pending, PolicyDir: *policyDir, PolicyParams: *policyPar, PolicyDryRun: *policyDry,
		ID: *id, Advertise: *advertise, LeaseTTL: *leaseTTL, HostTTL: *hostTTL, HostGrace: *hostGrace, Tracing: *tracing,
		Alerts: *alerts,
	}
	if *leaseTTL < 300*time.Millisecond {
		return fmt.Errorf("--lease-ttl %v: at least 300ms (the leader renews at a third of it)", *leaseTTL)
	}
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf(`OpenAgent orchestrator is running.
  HTTP API   %s   (OpenAPI: %s/v1/openapi.json)
  NATS       %s   (credentials: %s)
  data       %s
  worker     %v (drivers: %s)

Try:
  go run ./cmd/openagent run --driver local host -- /bin/sh -c 'echo hello; sleep 60'
  go run ./cmd/openagent ps
  go run ./cmd/openagent hosts
Stop with Ctrl-C: consumers drain, containers keep running.
`, sys.HTTPURL, sys.HTTPURL, sys.NATSURL, credsDir(sys, *credsFile), *dataDir, *withWorker, *drivers)
	failed := sys.Wait(ctx)
	if failed != nil {
		log.Error("a component failed; shutting down", "err", failed)
	} else {
		log.Info("shutting down")
	}
	return errors.Join(failed, sys.Stop())
}

// credsDir says where the credentials to reach NATS are.
func credsDir(sys *system.System, file string) string {
	switch {
	case sys.Credentials != "":
		return sys.Credentials
	case file != "":
		return file
	}
	return "none: the server is open"
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
