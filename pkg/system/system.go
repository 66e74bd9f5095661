// Package system wires a whole OpenAgent system in one process: NATS with
// JetStream (embedded, or an external server), the orchestrator with the
// sessions and the two doors (request/reply and HTTP) and, optionally, a
// worker for this host. cmd/orchestrator is a thin
// shell around it; tests and benchmarks use it too.
package system

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/coord"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/gateway/httpapi"
	"github.com/openagent/orchestrator/pkg/gateway/natsrpc"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/policy"
	"github.com/openagent/orchestrator/pkg/sessions"
	"github.com/openagent/orchestrator/pkg/telemetry"
	"github.com/openagent/orchestrator/pkg/worker"
)

// Config of a system. The zero value, with a DataDir, is the embedded
// single-machine default.
type Config struct {
	DataDir    string // state: data-dir/nats (JetStream), data-dir/local (local driver)
	HTTPAddr   string // "" serves no HTTP
	NATSListen string // where the embedded server listens; "" picks a free loopback port
	NATSURL    string // use this external server instead of embedding one
	// CredsFile is the credential to connect to an external server with;
	// an embedded server makes its own (see Credentials).
	CredsFile string
	// TLSCert and TLSKey make the HTTP API and the embedded NATS server
	// take TLS only (PEM files). TLSCA is a PEM file of the authorities a
	// client of this system's servers trusts: the system's own
	// connections, and an external NATS's; the certificate itself when
	// empty and self-signed.
	TLSCert, TLSKey, TLSCA string
	// PolicyDir holds the admission policies (*.json); empty applies the
	// default pack. PolicyParams is a JSON file of their params, over the
	// defaults. PolicyDryRun only reports what the policies would refuse.
	PolicyDir    string
	PolicyParams string
	PolicyDryRun bool
	// TokensDir keeps the HTTP API's bearer tokens; data-dir/credentials
	// when empty and there is a data directory. Without either the API
	// takes any caller, with a warning.
	TokensDir string
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
	// MaxFileBytes caps a file copied into or out of a session;
	// sessions.MaxFileBytes when zero.
	MaxFileBytes int64
	// PendingDeadline is how long a placed container may wait for its host
	// to create it; orchestrator.DefaultPendingDeadline when zero.
	PendingDeadline time.Duration
	// ID names this orchestrator in the control plane's election (the
	// hostname and process id when empty); Advertise is the HTTP API's
	// address told to the others (the one it listens on when empty).
	ID, Advertise string
	// LeaseTTL is the leader's lease; coord.DefaultTTL when zero. A
	// leader that stops renewing is replaced within it and a third more.
	LeaseTTL time.Duration
	// HostTTL is how recent a host's heartbeat must be for it to be live
	// (scheduler.DefaultLiveWithin when zero); HostGrace how much longer
	// it may be silent before it is declared lost and its containers
	// rescheduled (orchestrator.DefaultHostGrace when zero).
	HostTTL, HostGrace time.Duration
	// CheckpointEvery is how often the leader signs the audit chain
	// (audit.CheckpointEvery when zero), with the key kept as audit.key
	// in the credentials directory (TokensDir, or data-dir/credentials);
	// without one, no checkpoints are signed.
	CheckpointEvery time.Duration
	// Tracing says whether and where spans go (off by default). A
	// TracerProvider, when set, is used instead: tests give one that
	// records in memory.
	Tracing        telemetry.TracingConfig
	TracerProvider trace.TracerProvider
	// Alerts is an alerts file (JSON: rules, webhooks; see package
	// telemetry); the default rules when empty.
	Alerts string
	// NoMetrics leaves out the control plane's metrics (GET /metrics
	// answers 404): to measure what they cost.
	NoMetrics bool
}

// System is a running system.
type System struct {
	metrics      *telemetry.Metrics   // the control plane's; nil without one
	tracing      *telemetry.Tracing   // the exporter this system made; nil without one
	tracer       trace.TracerProvider // nil traces nothing
	Server       *server.Server       // nil with an external NATS
	NC           *nats.Conn
	JS           jetstream.JetStream
	Validator    *events.Validator
	Orchestrator *orchestrator.Orchestrator
	Sessions     *sessions.Service
	HTTPURL      string // "http://host:port" when serving HTTP
	NATSURL      string
	// Credentials is where an embedded server's keys and credentials are:
	// data-dir/credentials; empty with an external server.
	Credentials string
	// TokensDir is where the HTTP API's tokens are, admin.token among
	// them; empty when the API is open.
	TokensDir string

	auth            *creds.Authority // an embedded server's keys; nil with an external server
	tlsCA           string           // what this system's connections trust, "" for the system's roots
	tlsCert, tlsKey string           // the HTTP API's certificate and key, "" for plain HTTP
	tokens          *creds.Tokens    // the HTTP API's tokens; nil leaves it open
	conns           []*nats.Conn     // connections of the components that have their own
	cancel          context.CancelFunc
	wg              sync.WaitGroup
	failed          chan struct{} // closed when a component fails
	fail            sync.Once
	http            *http.Server
	mu              sync.Mutex
	errs            []error
	log             *slog.Logger
}

// Start brings a system up and returns once it serves requests.
func Start(ctx context.Context, cfg Config) (*System, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &System{log: cfg.Logger, failed: make(chan struct{}), tracer: cfg.TracerProvider}
	if s.tracer == nil {
		var err error
		if s.tracing, err = telemetry.NewTracing(ctx, tracingOf(cfg)); err != nil {
			return nil, err
		}
		s.tracer = s.tracing.Provider()
	}
	if err := s.startNATS(cfg); err != nil {
		_ = s.tracing.Shutdown(ctx)
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
	pc := events.ProvisionConfig{Clustered: clustered}
	if cfg.NATSURL != "" {
		// An external cluster may be coming up with this process.
		pc.Wait = ClusterWait
	}
	changes, err := events.Provision(ctx, s.JS, pc)
	if err != nil {
		return nil, err
	}
	for _, c := range changes {
		if c.Action == events.Drifted {
			s.log.Warn("system: the audit log's settings are not those provisioned; only an admin may change them, and the orchestrator reports how they differ", "stream", c.Name)
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if s.auth != nil {
		s.run("credentials", func() error { return s.auth.Watch(runCtx, s.Server, 2*time.Second) })
	}
	if cfg.Orchestrator {
		protected := []string{}
		if cfg.DataDir != "" {
			protected = append(protected, cfg.DataDir)
		}
		engine, err := policyEngine(cfg)
		if err != nil {
			return nil, err
		}
		replicas := 1
		if clustered {
			replicas = 3
		}
		openLeases := func(ctx context.Context) (*coord.Leases, error) {
			return coord.Open(ctx, s.JS, events.BucketLeases, cfg.LeaseTTL, replicas)
		}
		var leases *coord.Leases
		if cfg.NATSURL != "" {
			// A cluster coming up with this process may not take the
			// bucket yet, as provisioning found: the same wait.
			leases, err = events.WhileUnready(ctx, ClusterWait, openLeases)
		} else {
			leases, err = openLeases(ctx)
		}
		if err != nil {
			return nil, err
		}
		var ln net.Listener
		if cfg.HTTPAddr != "" {
			if ln, err = s.listenHTTP(cfg.HTTPAddr); err != nil {
				return nil, err
			}
		}
		advertise := cfg.Advertise
		if advertise == "" {
			advertise = s.HTTPURL
		}
		// The sessions and the request/reply door are the leader's: each
		// term serves them afresh, from the buckets as they then are.
		var sess *sessions.Service
		var o *orchestrator.Orchestrator
		leading, firstTerm := make(chan struct{}), sync.Once{}
		lead := func(ctx context.Context) error {
			sess.Reset()
			rpc := natsrpc.New(natsrpc.Config{NC: s.NC, Validator: s.Validator, Orchestrator: o, Sessions: sess, Logger: cfg.Logger, Serve: natsrpc.Sessions,
				Tracer: s.tracer})
			g, ctx := errgroup.WithContext(ctx)
			g.Go(func() error { return sess.Run(ctx) })
			g.Go(func() error { return rpc.Run(ctx) })
			g.Go(func() error {
				select {
				case <-rpc.Ready():
					firstTerm.Do(func() { close(leading) })
				case <-ctx.Done():
				}
				return nil
			})
			return g.Wait()
		}
		auditKey, err := openAuditKey(cfg)
		if err != nil {
			return nil, err
		}
		alerts, err := alertsOf(cfg)
		if err != nil {
			return nil, err
		}
		var meter metric.Meter
		if !cfg.NoMetrics {
			if s.metrics, err = telemetry.New(); err != nil {
				return nil, err
			}
			meter = s.metrics.Meter()
		}
		o, err = orchestrator.New(ctx, orchestrator.Config{Policy: engine, JS: s.JS, Validator: s.Validator, Logger: cfg.Logger, Protected: protected,
			PendingDeadline: cfg.PendingDeadline, Clustered: clustered, Leases: leases, ID: cfg.ID, Address: advertise, Lead: lead,
			HostLiveness: cfg.HostTTL, HostGrace: cfg.HostGrace, AuditKey: auditKey, CheckpointEvery: cfg.CheckpointEvery,
			Meter: meter, Tracer: s.tracer, Alerts: alerts})
		if err != nil {
			return nil, err
		}
		sess, err = sessions.New(ctx, sessions.Config{NC: s.NC, JS: s.JS, Validator: s.Validator, Containers: o, Logger: cfg.Logger, KeepCode: cfg.KeepCode,
			MaxFileBytes: cfg.MaxFileBytes, Leader: o.Token, Tracer: s.tracer, Meter: meter})
		if err != nil {
			return nil, err
		}
		s.Orchestrator, s.Sessions = o, sess
		s.run("orchestrator", func() error { return o.Run(runCtx) })
		// Every orchestrator answers the containers' requests: a follower
		// hands writes to the leader, so a failover is a wait, not a gap.
		doors := natsrpc.New(natsrpc.Config{NC: s.NC, Validator: s.Validator, Orchestrator: o, Sessions: sess, Logger: cfg.Logger, Serve: natsrpc.Containers,
			Tracer: s.tracer})
		s.run("request/reply", func() error { return doors.Run(runCtx) })
		// Serving starts once the doors take requests: once this
		// orchestrator leads with its request/reply door open, or, when
		// another leads, once its projection caught up.
		if err := s.awaitControlPlane(ctx, o, leading); err != nil {
			return nil, err
		}
		select {
		case <-doors.Ready():
		case <-s.failed:
			return nil, s.Wait(ctx)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if ln != nil {
			if err := s.openTokens(cfg); err != nil {
				return nil, err
			}
			s.serveHTTP(ln)
		}
	}
	if cfg.Worker {
		drivers, err := worker.Drivers(ctx, cfg.DataDir, cfg.Drivers)
		if err != nil {
			return nil, err
		}
		if err := s.AddWorker(ctx, worker.Config{HostID: cfg.HostID, Labels: cfg.Labels, Drivers: drivers, Capacity: cfg.Capacity, Logger: cfg.Logger,
			Protected: []string{cfg.DataDir}}); err != nil {
			return nil, err
		}
	}
	ok = true
	return s, nil
}

func (s *System) startNATS(cfg Config) error {
	url, credsFile := cfg.NATSURL, cfg.CredsFile
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return errors.New("system: TLS needs both a certificate and its key")
	}
	s.tlsCA, s.tlsCert, s.tlsKey = cfg.TLSCA, cfg.TLSCert, cfg.TLSKey
	if s.tlsCA == "" && url == "" {
		s.tlsCA = cfg.TLSCert // the embedded server's; a self-signed certificate is its own authority
	}
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
		if cfg.TLSCert != "" {
			tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey})
			if err != nil {
				return fmt.Errorf("system: nats tls: %w", err)
			}
			opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, tc, 5
		}
		// The bus is closed: every connection needs a credential, which
		// the keys kept in the data directory issue.
		if err := s.openCredentials(cfg, opts); err != nil {
			return err
		}
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
		credsFile = filepath.Join(s.Credentials, string(events.RoleOrchestrator)+".creds")
	}
	nc, err := s.connect(url, credsFile, "openagent")
	if err != nil {
		return err
	}
	if !nc.AuthRequired() {
		s.log.Warn("system: the NATS server takes connections without credentials: anyone who reaches it can command the hosts; see docs/SECURITY.md", "url", url)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	s.NC, s.JS, s.NATSURL = nc, js, url
	return nil
}

// openCredentials opens the embedded server's keys, writes the
// credentials of this machine's roles next to them, and makes the server
// trust them.
func (s *System) openCredentials(cfg Config, opts *server.Options) error {
	s.Credentials = filepath.Join(cfg.DataDir, "credentials")
	auth, err := creds.Open(s.Credentials)
	if err != nil {
		return err
	}
	for _, role := range []events.Role{events.RoleAdmin, events.RoleOrchestrator, events.RoleService, events.RoleAuditor} {
		if err := auth.WriteCreds(filepath.Join(s.Credentials, string(role)+".creds"), role, ""); err != nil {
			return err
		}
	}
	if cfg.Worker {
		if err := auth.WriteCreds(s.WorkerCreds(hostIDOf(cfg.HostID)), events.RoleWorker, hostIDOf(cfg.HostID)); err != nil {
			return err
		}
	}
	s.auth = auth
	return auth.Configure(opts)
}

// policyEngine compiles the admission policies a system runs with.
func policyEngine(cfg Config) (*policy.Engine, error) {
	pc := policy.Config{Params: policy.DefaultParams(), DryRun: cfg.PolicyDryRun}
	if cfg.PolicyDir != "" {
		ps, err := policy.Load(cfg.PolicyDir)
		if err != nil {
			return nil, err
		}
		pc.Policies = ps
	}
	if cfg.PolicyParams != "" {
		b, err := os.ReadFile(cfg.PolicyParams)
		if err != nil {
			return nil, fmt.Errorf("system: policy params: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&pc.Params); err != nil {
			return nil, fmt.Errorf("system: policy params %s: %w", cfg.PolicyParams, err)
		}
	}
	return policy.New(pc)
}

// openAuditKey opens the key that signs the audit chain, kept beside the
// tokens (shared by every orchestrator of a deployment that shares them);
// nil when there is nowhere to keep it.
func openAuditKey(cfg Config) (ed25519.PrivateKey, error) {
	dir := cfg.TokensDir
	if dir == "" && cfg.DataDir != "" {
		dir = filepath.Join(cfg.DataDir, "credentials")
	}
	if dir == "" {
		cfg.Logger.Warn("system: no data directory keeps the audit key: the audit chain is not signed")
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return audit.OpenKey(filepath.Join(dir, AuditKeyFile))
}

// AuditKeyFile is the audit key's file in the credentials directory; its
// public half, which verifiers trust, is AuditKeyFile + ".pub".
const AuditKeyFile = "audit.key"

// openTokens opens the HTTP API's token store and makes sure an admin
// token is there for the CLI, in admin.token beside the store.
func (s *System) openTokens(cfg Config) error {
	dir := cfg.TokensDir
	if dir == "" && cfg.DataDir != "" {
		dir = filepath.Join(cfg.DataDir, "credentials")
	}
	if dir == "" {
		s.log.Warn("system: the HTTP API takes any caller: no data directory keeps its tokens")
		return nil
	}
	tokens, err := creds.OpenTokens(dir)
	if err != nil {
		return err
	}
	if err := tokens.EnsureAdminToken(filepath.Join(dir, "admin.token")); err != nil {
		return err
	}
	s.tokens, s.TokensDir = tokens, dir
	return nil
}

// AdminToken is the admin's token for the HTTP API, "" when the API is
// open.
func (s *System) AdminToken() string {
	if s.TokensDir == "" {
		return ""
	}
	b, _ := os.ReadFile(filepath.Join(s.TokensDir, "admin.token"))
	return strings.TrimSpace(string(b))
}

// Tokens is the HTTP API's token store; nil when the API is open.
func (s *System) Tokens() *creds.Tokens { return s.tokens }

// WorkerCreds is where an embedded server's credential for a worker of
// host is.
func (s *System) WorkerCreds(host string) string {
	return filepath.Join(s.Credentials, "worker-"+host+".creds")
}

// Authority is the embedded server's keys, to issue and revoke
// credentials with; nil with an external server.
func (s *System) Authority() *creds.Authority { return s.auth }

// Revoked tells the embedded server of the revocations made since it
// started, in this process or by the CLI.
func (s *System) Revoked() error {
	if s.auth == nil || s.Server == nil {
		return errors.New("system: no embedded server")
	}
	if err := s.auth.Reload(); err != nil {
		return err
	}
	return s.auth.Apply(s.Server)
}

// connect opens a connection that reconnects forever, with a credential
// when one is named.
// ClusterWait is how long the system waits for an external NATS to answer
// and for its JetStream to take the streams, while a deployment comes up
// all at once.
const ClusterWait = 2 * time.Minute

func (s *System) connect(url, credsFile, name string) (*nats.Conn, error) {
	opts := []nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			s.log.Warn("system: nats", "connection", name, "err", err)
		})}
	if credsFile != "" {
		copts, err := creds.NATSOptions(credsFile)
		if err != nil {
			return nil, fmt.Errorf("system: connect as %s: %w", name, err)
		}
		opts = append(opts, copts...)
	}
	if s.tlsCA != "" {
		opts = append(opts, nats.RootCAs(s.tlsCA))
	}
	nc, err := creds.Dial(url, ClusterWait, opts...)
	if err != nil {
		return nil, fmt.Errorf("system: connect to %s as %s: %w", url, name, err)
	}
	return nc, nil
}

// hostIDOf is the host id a worker runs as: the one given, or the
// hostname's.
func hostIDOf(id string) string {
	if id != "" {
		return id
	}
	h, _ := os.Hostname()
	return worker.HostID(h)
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

// awaitControlPlane waits until this orchestrator leads with its doors
// open, or another leads and this one's projection caught up.
func (s *System) awaitControlPlane(ctx context.Context, o *orchestrator.Orchestrator, leading <-chan struct{}) error {
	limit := time.After(2 * time.Minute)
	for {
		select {
		case <-leading:
			return nil
		case <-s.failed:
			return s.Wait(ctx)
		case <-ctx.Done():
			return ctx.Err()
		case <-limit:
			return errors.New("system: orchestrator not ready after 2 minutes")
		case <-time.After(50 * time.Millisecond):
		}
		select {
		case <-o.Ready():
			if h := o.Leader(ctx); h != nil && h.Holder != o.ID() {
				s.log.Info("system: following", "leader", h.Holder, "address", h.Address)
				return nil
			}
		default:
		}
	}
}

// listenHTTP binds the HTTP API's address, so that its URL is known
// before it serves.
func (s *System) listenHTTP(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("system: http: %w", err)
	}
	s.HTTPURL = "http://" + ln.Addr().String()
	if s.tlsCert != "" {
		s.HTTPURL = "https://" + ln.Addr().String()
	}
	return ln, nil
}

func (s *System) serveHTTP(ln net.Listener) {
	var metrics http.Handler
	if s.metrics != nil {
		metrics = s.metrics.Handler()
	}
	handler := httpapi.New(httpapi.Config{NC: s.NC, JS: s.JS, Validator: s.Validator, Orchestrator: s.Orchestrator, Sessions: s.Sessions, Tokens: s.tokens,
		Metrics: metrics, Tracer: s.tracer})
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	serve := func() error { return s.http.Serve(ln) }
	if s.tlsCert != "" {
		serve = func() error { return s.http.ServeTLS(ln, s.tlsCert, s.tlsKey) }
	}
	s.run("http", func() error {
		if err := serve(); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
}

// AddWorker runs a worker in this process. With an embedded server it
// connects with its own worker credential, so that it can do only what a
// worker on another host could; else it shares this system's connection
// unless cfg names one.
func (s *System) AddWorker(ctx context.Context, cfg worker.Config) error {
	cfg.HostID = hostIDOf(cfg.HostID)
	if cfg.Capacity == (api.Resources{}) {
		cfg.Capacity = worker.MachineCapacity()
	}
	if cfg.NC == nil && s.auth != nil {
		path := s.WorkerCreds(cfg.HostID)
		if err := s.auth.WriteCreds(path, events.RoleWorker, cfg.HostID); err != nil {
			return err
		}
		nc, err := s.connect(s.NATSURL, path, "worker "+cfg.HostID)
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.conns = append(s.conns, nc)
		s.mu.Unlock()
		if cfg.JS, err = jetstream.New(nc); err != nil {
			return err
		}
		cfg.NC = nc
	}
	if cfg.NC == nil {
		cfg.NC, cfg.JS = s.NC, s.JS
	}
	cfg.Validator = s.Validator
	if cfg.Tracer == nil {
		cfg.Tracer = s.tracer
	}
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
	s.mu.Lock()
	conns := append(slices.Clone(s.conns), s.NC)
	s.mu.Unlock()
	for _, nc := range conns {
		if nc == nil {
			continue
		}
		_ = nc.Drain()
		for nc.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if s.Server != nil {
		s.Server.Shutdown()
		s.Server.WaitForShutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.tracing.Shutdown(ctx); err != nil {
		s.log.Warn("system: send the last spans", "err", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return errors.Join(s.errs...)
}

// alertsOf compiles the alert rules a config names.
func alertsOf(cfg Config) (*telemetry.Alerts, error) {
	ac := &telemetry.AlertsConfig{}
	if cfg.Alerts != "" {
		var err error
		if ac, err = telemetry.LoadAlerts(cfg.Alerts); err != nil {
			return nil, err
		}
	}
	return telemetry.NewAlerts(*ac)
}

// tracingOf is the tracing a system's config asks for, naming this
// process in its spans.
func tracingOf(cfg Config) telemetry.TracingConfig {
	t := cfg.Tracing
	if t.Instance == "" {
		t.Instance = cfg.ID
		if t.Instance == "" && cfg.Worker && !cfg.Orchestrator {
			t.Instance = hostIDOf(cfg.HostID)
		}
	}
	return t
}

// DefaultDataDir is the data directory of the embedded default: /var/lib/openagent for root (the local driver's
// containers run as other users and must reach their directories, which a
// root home does not let them), else the user's XDG data directory.
func DefaultDataDir() string {
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
