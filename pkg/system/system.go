// Package system wires a whole OpenAgent system in one process: NATS with
// JetStream (embedded, or an external server), the orchestrator with the
// sessions and the two doors (request/reply and HTTP) and, optionally, a
// worker for this host. cmd/orchestrator is a thin
// shell around it; tests and benchmarks use it too.
package system

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/gateway/httpapi"
	"github.com/openagent/orchestrator/pkg/gateway/natsrpc"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/sessions"
	"github.com/openagent/orchestrator/pkg/worker"
)

// Config of a system. The zero value, with a DataDir, is the embedded
// single-machine default.
type Config struct {
	DataDir    string // state: data-dir/nats (JetStream), data-dir/local (local driver)
	HTTPAddr   string // "" serves no HTTP
	NATSListen string // where the embedded server listens; "" picks a free loopback port
	NATSURL    string // use this external server instead of embedding one
	// SyncAlways makes the embedded server fsync every write (slower,
	// survives power loss); by default it fsyncs every 2 minutes.
	SyncAlways   bool
	Orchestrator bool   // run the orchestrator
	Worker       bool   // run a worker for this host
	HostID       string // the worker's host id; the hostname when empty
	Labels       map[string]string
	Drivers      []string // the worker's drivers: local, fake
	Capacity     api.Resources
	Logger       *slog.Logger
	// KeepCode keeps the code and output of session runs in their audit
	// events, not only hashes and sizes.
	KeepCode bool
	// PendingDeadline is how long a placed container may wait for its host
	// to create it; orchestrator.DefaultPendingDeadline when zero.
	PendingDeadline time.Duration
}

// System is a running system.
type System struct {
	Server       *server.Server // nil with an external NATS
	NC           *nats.Conn
	JS           jetstream.JetStream
	Validator    *events.Validator
	Orchestrator *orchestrator.Orchestrator
	Sessions     *sessions.Service
	HTTPURL      string // "http://host:port" when serving HTTP
	NATSURL      string

	cancel context.CancelFunc
	wg     sync.WaitGroup
	failed chan struct{} // closed when a component fails
	fail   sync.Once
	http   *http.Server
	mu     sync.Mutex
	errs   []error
	log    *slog.Logger
}

// Start brings a system up and returns once it serves requests.
func Start(ctx context.Context, cfg Config) (*System, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &System{log: cfg.Logger, failed: make(chan struct{})}
	if err := s.startNATS(cfg); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			s.Stop()
		}
	}()
	var err error
	if s.Validator, err = events.NewValidator(); err != nil {
		return nil, err
	}
	clustered := s.NC.ConnectedClusterName() != ""
	if _, err := events.Provision(ctx, s.JS, events.ProvisionConfig{Clustered: clustered}); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if cfg.Orchestrator {
		protected := []string{}
		if cfg.DataDir != "" {
			protected = append(protected, cfg.DataDir)
		}
		o, err := orchestrator.New(ctx, orchestrator.Config{JS: s.JS, Validator: s.Validator, Logger: cfg.Logger, Protected: protected, PendingDeadline: cfg.PendingDeadline})
		if err != nil {
			return nil, err
		}
		sess, err := sessions.New(ctx, sessions.Config{NC: s.NC, JS: s.JS, Validator: s.Validator, Containers: o, Logger: cfg.Logger, KeepCode: cfg.KeepCode})
		if err != nil {
			return nil, err
		}
		rpc := natsrpc.New(natsrpc.Config{NC: s.NC, Validator: s.Validator, Orchestrator: o, Sessions: sess, Logger: cfg.Logger})
		s.Orchestrator, s.Sessions = o, sess
		s.run("orchestrator", func() error { return o.Run(runCtx) })
		s.run("sessions", func() error { return sess.Run(runCtx) })
		s.run("request/reply", func() error { return rpc.Run(runCtx) })
		// Serving starts once the doors take requests: the orchestrator
		// and the sessions are ready before the request/reply door is.
		select {
		case <-rpc.Ready():
		case <-s.failed:
			return nil, s.Wait(ctx)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(2 * time.Minute):
			return nil, errors.New("system: orchestrator not ready after 2 minutes")
		}
		if cfg.HTTPAddr != "" {
			if err := s.serveHTTP(cfg.HTTPAddr); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Worker {
		drivers, err := worker.Drivers(ctx, cfg.DataDir, cfg.Drivers)
		if err != nil {
			return nil, err
		}
		if err := s.AddWorker(ctx, worker.Config{HostID: cfg.HostID, Labels: cfg.Labels, Drivers: drivers, Capacity: cfg.Capacity, Logger: cfg.Logger}); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func (s *System) startNATS(cfg Config) error {
	url := cfg.NATSURL
	if url == "" {
		host, port := "127.0.0.1", server.RANDOM_PORT
		if cfg.NATSListen != "" {
			h, p, err := net.SplitHostPort(cfg.NATSListen)
			if err != nil {
				return fmt.Errorf("system: nats listen address %q: %w", cfg.NATSListen, err)
			}
			if port, err = strconv.Atoi(p); err != nil {
				return fmt.Errorf("system: nats listen port %q: %w", p, err)
			}
			if port == 0 {
				port = server.RANDOM_PORT // nats-server reads 0 as its default port
			}
			host = h
		}
		if cfg.DataDir == "" {
			return errors.New("system: an embedded server needs a data directory")
		}
		opts := &server.Options{Host: host, Port: port, JetStream: true, StoreDir: filepath.Join(cfg.DataDir, "nats"),
			NoSigs: true, NoLog: true, SyncAlways: cfg.SyncAlways, MaxPayload: events.DefaultMaxSize}
		ns, err := server.NewServer(opts)
		if err != nil {
			return fmt.Errorf("system: nats server: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			ns.Shutdown()
			return fmt.Errorf("system: nats server not ready on %s", cfg.NATSListen)
		}
		s.Server, url = ns, ns.ClientURL()
	}
	nc, err := nats.Connect(url, nats.Name("openagent"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("system: connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s.NC, s.JS, s.NATSURL = nc, js, url
	return nil
}

func (s *System) run(name string, f func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := f(); err != nil && !errors.Is(err, context.Canceled) {
			s.log.Error("system: component stopped", "component", name, "err", err)
			s.mu.Lock()
			s.errs = append(s.errs, fmt.Errorf("%s: %w", name, err))
			s.mu.Unlock()
			s.fail.Do(func() { close(s.failed) })
		}
	}()
}

// Wait returns when ctx ends, with nil, or when a component of the system
// failed, with its error: a system missing a part does not go on as if
// whole. Stop it either way.
func (s *System) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-s.failed:
		s.mu.Lock()
		defer s.mu.Unlock()
		return errors.Join(s.errs...)
	}
}

func (s *System) serveHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("system: http: %w", err)
	}
	handler := httpapi.New(httpapi.Config{NC: s.NC, JS: s.JS, Validator: s.Validator, Orchestrator: s.Orchestrator, Sessions: s.Sessions})
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	s.HTTPURL = "http://" + ln.Addr().String()
	s.run("http", func() error {
		if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// AddWorker runs a worker in this process, on this system's connection.
func (s *System) AddWorker(ctx context.Context, cfg worker.Config) error {
	if cfg.HostID == "" {
		h, _ := os.Hostname()
		cfg.HostID = worker.HostID(h)
	}
	if cfg.Capacity == (api.Resources{}) {
		cfg.Capacity = worker.MachineCapacity()
	}
	cfg.NC, cfg.JS, cfg.Validator = s.NC, s.JS, s.Validator
	w, err := worker.New(ctx, cfg)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancel(context.Background())
	prev := s.cancel
	s.cancel = func() {
		cancel()
		if prev != nil {
			prev()
		}
	}
	s.run("worker "+cfg.HostID, func() error { return w.Run(runCtx) })
	return nil
}

// Stop shuts down gracefully: consumers drain, containers keep running.
func (s *System) Stop() error {
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.http.Shutdown(ctx)
		cancel()
	}
	if s.cancel != nil {
		s.cancel()
	}
	s.wg.Wait()
	if s.NC != nil {
		_ = s.NC.Drain()
		for s.NC.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s.Server != nil {
		s.Server.Shutdown()
		s.Server.WaitForShutdown()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}
