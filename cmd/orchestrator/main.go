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
	"path/filepath"
	"strings"
	"syscall"

	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/system"
)

func main() {
	local.MaybeRunShim()
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "orchestrator:", err)
		os.Exit(1)
	}
}

// defaultDataDir is /var/lib/openagent for root (the local driver's
// containers run as other users and must reach their directories, which a
// root home does not let them), else the user's XDG data directory.
func defaultDataDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/openagent"
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "openagent")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "openagent-data"
	}
	return filepath.Join(home, ".local", "share", "openagent")
}

func run() error {
	var (
		dataDir    = flag.String("data-dir", defaultDataDir(), "where JetStream and the local driver keep their state")
		httpAddr   = flag.String("http", "127.0.0.1:8080", "address of the HTTP API")
		natsListen = flag.String("nats-listen", "127.0.0.1:4222", "address the embedded NATS server listens on")
		natsURL    = flag.String("nats-url", "", "use this external NATS JetStream instead of embedding one (no embedded worker then unless --worker)")
		withWorker = flag.Bool("worker", true, "run a worker for this host in the same process")
		drivers    = flag.String("drivers", "auto", "the embedded worker's drivers: local, fake, docker; auto is local and fake, and docker when an engine answers")
		hostID     = flag.String("host-id", "", "the embedded worker's host id (default: the hostname)")
		syncAlways = flag.Bool("sync-always", false, "fsync every JetStream write (slower; survives power loss)")
		keepCode   = flag.Bool("keep-code", false, "keep the code and output of session runs in their audit events (default: hashes and sizes only)")
		pending    = flag.Duration("pending-deadline", orchestrator.DefaultPendingDeadline, "how long a placed container may wait for its host to create it before it fails")
		verbose    = flag.Bool("v", false, "log debug messages")
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
		DataDir: *dataDir, HTTPAddr: *httpAddr, NATSListen: *natsListen, NATSURL: *natsURL, SyncAlways: *syncAlways,
		Orchestrator: true, Worker: *withWorker, HostID: *hostID, Drivers: splitList(*drivers), Logger: log, KeepCode: *keepCode,
		PendingDeadline: *pending,
	}
	sys, err := system.Start(ctx, cfg)
	if err != nil {
		return err
	}
	fmt.Printf(`OpenAgent orchestrator is running.
  HTTP API   %s   (OpenAPI: %s/v1/openapi.json)
  NATS       %s
  data       %s
  worker     %v (drivers: %s)

Try:
  go run ./cmd/openagent run --driver local host -- /bin/sh -c 'echo hello; sleep 60'
  go run ./cmd/openagent ps
  go run ./cmd/openagent hosts
Stop with Ctrl-C: consumers drain, containers keep running.
`, sys.HTTPURL, sys.HTTPURL, sys.NATSURL, *dataDir, *withWorker, *drivers)
	failed := sys.Wait(ctx)
	if failed != nil {
		log.Error("a component failed; shutting down", "err", failed)
	} else {
		log.Info("shutting down")
	}
	return errors.Join(failed, sys.Stop())
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
