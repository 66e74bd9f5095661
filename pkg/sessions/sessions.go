// Package sessions runs sandboxes for agents' code: a session is a running
// container with timers (a time to live and an idle timeout), code runs
// that are audited, and files in its workspace; pools keep sandboxes warm
// so that a session starts at once. Its containers are asked of the
// control plane like any other, through Containers.
//
// Sessions are events-first: an operation publishes its event and then
// writes the sessions bucket; an event that cannot be stored fails the
// operation, and the answer to a request is the stored event itself.
package sessions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator"
)

// Session defaults; docs/SESSIONS.md explains them.
const (
	DefaultSessionTimeout = 30 * time.Minute
	DefaultIdleTimeout    = 10 * time.Minute
	MaxSessionTimeout     = 24 * time.Hour
	DefaultCodeTimeout    = 30 * time.Second
	// MaxCodeBytes bounds code run in a session: it travels as an argument.
	MaxCodeBytes = 64 << 10
)

// admin is the sessions' own view: every session.
var admin = api.Principal{Name: "sessions", Role: events.RoleAdmin}

// source is the CloudEvents source of what sessions publish and ask.
const source = "/openagent/sessions"

// languages maps a language to the interpreter that runs code given as an
// argument.
var languages = map[string][]string{
	"python":     {"python3", "-u", "-c"}, // unbuffered: output streams as it is printed
	"javascript": {"node", "-e"},
	"bash":       {"bash", "-c"},
	"sh":         {"sh", "-c"},
}

// Containers is what sessions ask of the control plane; an
// *orchestrator.Orchestrator is one.
type Containers interface {
	Accept(ctx context.Context, req events.Event) (api.Accepted, error)
	Do(ctx context.Context, req events.Event) (api.Accepted, api.Container, error)
	Exec(ctx context.Context, req events.Event) (*api.ExecResult, events.Event, error)
	Container(id string) (api.Container, bool)
	List(q events.ListQuery) []api.Container
	Hosts() []api.Host
	Ready() <-chan struct{}
}

// Config wires the sessions.
type Config struct {
	NC         *nats.Conn
	JS         jetstream.JetStream
	Validator  *events.Validator
	Containers Containers
	Logger     *slog.Logger
	// KeepCode keeps the code and output of runs in their audit events; by
	// default only hashes and sizes are.
	KeepCode bool
	// MaxFileBytes caps a file copied into or out of a session;
	// MaxFileBytes (the constant) when zero.
	MaxFileBytes int64
	// Leader says the token of the control plane's term this process
	// leads, if it leads: the sessions' events carry it. Nil when there is
	// no election (one orchestrator, always leading).
	Leader func() (token uint64, leading bool)
	// Tracer traces the sessions' requests (package telemetry); nil
	// traces nothing.
	Tracer trace.TracerProvider
	// Meter makes the sessions' and pools' metrics; nil records none.
	Meter metric.Meter
}

// Service keeps the sessions and pools. Run it; its methods serve the doors.
type Service struct {
	nc       *nats.Conn
	pub      *events.Publisher
	ctl      Containers
	log      *slog.Logger
	tracer   trace.Tracer // nil traces nothing
	keepCode bool
	kv       jetstream.KeyValue    // the sessions bucket
	files    jetstream.ObjectStore // files in transit
	maxFile  int64
	pools    pools
	leader   func() (uint64, bool)
	ready    chan struct{} // under mu: a term's Run makes a new one
	serving  atomic.Bool

	mu     sync.Mutex
	m      map[string]*api.Session
	warned map[string]time.Time // session → the expiry its expiring event announced
	timers timerHeap            // when to look at which session next
	firing map[string]bool      // sessions whose expiry is being carried out
	wake   chan struct{}        // a timer was added; capacity 1
}

// New returns the sessions service on provisioned buckets.
func New(ctx context.Context, cfg Config) (*Service, error) {
	var tracer trace.Tracer
	if cfg.Tracer != nil {
		tracer = cfg.Tracer.Tracer("github.com/openagent/orchestrator/pkg/sessions")
	}
	s := &Service{nc: cfg.NC, pub: events.NewPublisher(cfg.JS, cfg.Validator, events.WithPublishTracer(tracer)), tracer: tracer, ctl: cfg.Containers, log: cfg.Logger,
		keepCode: cfg.KeepCode, ready: make(chan struct{}), pools: pools{m: map[string]*pool{}}, leader: cfg.Leader,
		m: map[string]*api.Session{}, warned: map[string]time.Time{}, firing: map[string]bool{}, wake: make(chan struct{}, 1)}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.instrument(cfg.Meter); err != nil {
		return nil, err
	}
	var err error
	if s.kv, err = cfg.JS.KeyValue(ctx, events.BucketSessions); err != nil {
		return nil, fmt.Errorf("sessions: bucket %s: %w", events.BucketSessions, err)
	}
	if s.pools.kv, err = cfg.JS.KeyValue(ctx, events.BucketPools); err != nil {
		return nil, fmt.Errorf("sessions: bucket %s: %w", events.BucketPools, err)
	}
	if s.maxFile = cfg.MaxFileBytes; s.maxFile <= 0 {
		s.maxFile = MaxFileBytes
	}
	if s.files, err = cfg.JS.ObjectStore(ctx, events.BucketFiles); err != nil {
		return nil, fmt.Errorf("sessions: object store %s: %w", events.BucketFiles, err)
	}
	return s, nil
}

// Ready is closed once the sessions and pools are loaded and the control
// plane is ready: from then on the methods may be called.
func (s *Service) Ready() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// Serving reports whether the sessions are served here: loaded, and Run
// not ended. Only the leader of the control plane serves them.
func (s *Service) Serving() bool { return s.serving.Load() }

// Reset forgets what a former Run loaded, for a new one: a leader's term
// serves the sessions as the buckets hold them at its start.
func (s *Service) Reset() {
	s.mu.Lock()
	select {
	case <-s.ready:
		s.ready = make(chan struct{})
	default:
	}
	s.m, s.warned, s.firing, s.timers = map[string]*api.Session{}, map[string]time.Time{}, map[string]bool{}, nil
	s.mu.Unlock()
	s.pools.mu.Lock()
	s.pools.m = map[string]*pool{}
	s.pools.mu.Unlock()
}

// Run loads the sessions and pools, then fires the sessions' timers and
// keeps the pools filled until ctx ends. It may run again after it
// returned (a new term of the leader), after Reset.
func (s *Service) Run(ctx context.Context) error {
	defer s.serving.Store(false)
	if err := s.load(ctx); err != nil {
		return fmt.Errorf("sessions: load: %w", err)
	}
	if err := s.loadPools(ctx); err != nil {
		return fmt.Errorf("sessions: load pools: %w", err)
	}
	select {
	case <-s.ctl.Ready():
	case <-ctx.Done():
		return nil
	}
	s.adoptWarm()
	s.serving.Store(true)
	s.mu.Lock()
	close(s.ready)
	s.mu.Unlock()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.runTimers(ctx) })
	g.Go(func() error { return s.poolLoop(ctx) })
	return g.Wait()
}

// load reads the sessions bucket and schedules the ready sessions' timers.
func (s *Service) load(ctx context.Context) error {
	lister, err := s.kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for key := range lister.Keys() {
		if strings.HasPrefix(key, poolKeyPrefix) {
			continue
		}
		entry, err := s.kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var sess api.Session
		if json.Unmarshal(entry.Value(), &sess) == nil {
			s.m[sess.ID] = &sess
			s.scheduleLocked(&sess)
		}
	}
	return nil
}

// save writes a session to its bucket.
func (s *Service) save(ctx context.Context, sess *api.Session) error {
	b, _ := json.Marshal(sess)
	_, err := s.kv.Put(ctx, sess.ID, b)
	return err
}

// publish publishes an event and returns it as stored.
func (s *Service) publish(ctx context.Context, typ string, data any, opts ...events.Option) (events.Event, error) {
	if s.leader != nil {
		token, leading := s.leader()
		if !leading {
			return events.Event{}, errors.New("sessions: this orchestrator no longer leads the control plane")
		}
		opts = append(opts, events.WithLeaderToken(token))
	}
	e, err := events.New(typ, source, data, append(opts, events.WithTraceFrom(ctx))...)
	if err != nil {
		return events.Event{}, err
	}
	if _, err := s.pub.Publish(ctx, e); err != nil {
		return events.Event{}, err
	}
	return e, nil
}

// event publishes an event about a session, with an id derived from what
// caused it, and returns it as stored.
func (s *Service) event(ctx context.Context, typ string, id string, data any, sess *api.Session, opts ...events.Option) (events.Event, error) {
	opts = append(opts, events.WithSession(sess.ID), events.WithID(id), events.WithContainer(sess.ContainerID))
	return s.publish(ctx, typ, data, opts...)
}

// ref is what every session event says of its session.
func ref(sess *api.Session) events.SessionRef {
	return events.SessionRef{SessionID: sess.ID, ContainerID: sess.ContainerID, HostID: sess.Host}
}

// unstored is the error of an operation whose event could not be stored.
func unstored(err error) error {
	return &api.Error{Kind: api.KindUnavailable, Message: "the event could not be stored: " + err.Error()}
}

// unavailable is the error of a bucket or bus that did not answer.
func unavailable(err error) error {
	return &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
}

// defaultsFor fills a session's driver and image from its languages.
func defaultsFor(req *api.SessionRequest) error {
	// Left out, a resource takes its default; given, it must be one.
	if req.CPU < 0 {
		return &api.Error{Kind: api.KindInvalid, Field: "cpu", Message: fmt.Sprintf("cpu must be > 0 cores (leave it out for the default %g), got %g", driver.DefaultCPU, req.CPU)}
	}
	if req.MemoryMB < 0 {
		return &api.Error{Kind: api.KindInvalid, Field: "memoryMB", Message: fmt.Sprintf("memoryMB must be > 0 (leave it out for the default %d), got %d", driver.DefaultMemoryMB, req.MemoryMB)}
	}
	if len(req.Languages) == 0 {
		req.Languages = []string{"python"}
	}
	for i, l := range req.Languages {
		if _, ok := languages[l]; !ok {
			return &api.Error{Kind: api.KindInvalid, Field: fmt.Sprintf("languages[%d]", i), Message: fmt.Sprintf("language %q: use python, javascript, bash or sh", l)}
		}
	}
	if req.Driver == "" {
		req.Driver = "local"
		if req.Image != "" && req.Image != "host" {
			req.Driver = "docker"
		}
	}
	if req.Image == "" {
		switch req.Driver {
		case "local":
			req.Image = "host"
		case "fake":
			req.Image = "fake"
		default:
			req.Image = "openagent/sandbox:shell"
			if slices.Contains(req.Languages, "python") {
				req.Image = "openagent/sandbox:python"
			}
		}
	}
	return nil
}

// Create makes a session and waits until its sandbox runs.
func (s *Service) Create(ctx context.Context, req api.SessionRequest, who api.Principal) (*api.Session, error) {
	sess, _, err := s.create(ctx, req, who, nil)
	return sess, err
}

// create is Create; it returns the stored session.ready event too, for
// the doors that answer with it. Given a cause, the events belong to the
// cause's chain.
func (s *Service) create(ctx context.Context, req api.SessionRequest, who api.Principal, cause []events.Option) (*api.Session, events.Event, error) {
	by := who.Name
	if err := defaultsFor(&req); err != nil {
		return nil, events.Event{}, err
	}
	ttl := DefaultSessionTimeout
	if req.TimeoutMs != nil {
		ttl = time.Duration(*req.TimeoutMs) * time.Millisecond
		if ttl <= 0 || ttl > MaxSessionTimeout {
			return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "timeoutMs", Message: fmt.Sprintf("timeoutMs must be between 1 and %d: a session must end", MaxSessionTimeout.Milliseconds())}
		}
	}
	idle := DefaultIdleTimeout
	if req.IdleTimeoutMs != nil {
		if *req.IdleTimeoutMs < 0 {
			return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "idleTimeoutMs", Message: "idleTimeoutMs must be 0 (no idle expiry) or positive"}
		}
		idle = time.Duration(*req.IdleTimeoutMs) * time.Millisecond
	}
	now := time.Now().UTC()
	sess := &api.Session{ID: "s" + events.NewContainerID()[:20], Status: api.SessionRequested, Driver: req.Driver, Image: req.Image,
		Languages: req.Languages, AgentType: req.AgentType, Labels: req.Labels, CreatedAt: now, ExpiresAt: now.Add(ttl),
		TimeoutMs: ttl.Milliseconds(), IdleTimeoutMs: idle.Milliseconds(), LastActivityAt: now, SetBy: by, Owner: by}
	if _, err := s.event(ctx, events.SessionRequested, events.DeriveID(sess.ID, "requested"), events.SessionRequestedData{SessionRef: ref(sess),
		Languages: sess.Languages, Image: sess.Image, Driver: sess.Driver, AgentType: sess.AgentType, ExpiresAt: sess.ExpiresAt, IdleTimeoutMs: sess.IdleTimeoutMs, RequestedBy: by,
	}, sess, cause...); err != nil {
		return nil, events.Event{}, unstored(err)
	}
	if err := s.save(ctx, sess); err != nil {
		return nil, events.Event{}, unavailable(err)
	}
	s.mu.Lock()
	s.m[sess.ID] = sess
	s.mu.Unlock()

	begin := time.Now()
	var c api.Container
	warm := false
	if id, ok := s.take(profile(sess.Driver, sess.Image, req.CPU, req.MemoryMB, req.Egress)); ok {
		c, warm = s.ctl.Container(id)
	}
	if !warm {
		spec := sandboxSpec(sess.Driver, sess.Image, req.CPU, req.MemoryMB, req.Egress, req.Labels)
		spec.SessionID = sess.ID
		spec.Labels[driver.LabelSession] = sess.ID
		e, err := events.New(events.ContainerCreateRequested, source, api.CreateRequest{Driver: sess.Driver, Start: true, Spec: spec},
			events.WithSession(sess.ID), events.WithID(events.DeriveID(sess.ID, "create")), events.WithTraceFrom(ctx))
		if err != nil {
			return nil, events.Event{}, &api.Error{Kind: api.KindInternal, Message: err.Error()}
		}
		if c, err = s.runContainer(ctx, e); err != nil {
			return s.fail(ctx, sess, err, cause)
		}
	}
	s.mu.Lock()
	cp := *sess
	s.mu.Unlock()
	cp.Status, cp.ContainerID, cp.Host, cp.ReadyAt = api.SessionReady, c.ID, c.Host, time.Now().UTC()
	cp.LastActivityAt = cp.ReadyAt
	ready, err := s.event(ctx, events.SessionReady, events.DeriveID(sess.ID, "ready"), events.SessionReadyData{SessionRef: ref(&cp),
		ReadyMs: float64(time.Since(begin).Microseconds()) / 1000, Warm: warm, ExpiresAt: cp.ExpiresAt,
	}, &cp, cause...)
	if err != nil {
		sess.ContainerID, sess.Host = c.ID, c.Host
		return s.fail(ctx, sess, unstored(err), cause)
	}
	s.mu.Lock()
	*sess = cp
	s.scheduleLocked(sess)
	s.mu.Unlock()
	if err := s.save(ctx, &cp); err != nil {
		s.log.Warn("sessions: save a session", "session_id", sess.ID, "err", err)
	}
	return &cp, ready, nil
}

// fail ends a session that could not be made ready, with the reason, and
// removes what it had.
func (s *Service) fail(ctx context.Context, sess *api.Session, cause error, opts []events.Option) (*api.Session, events.Event, error) {
	e := api.AsError(cause)
	s.end(ctx, sess, api.SessionFailed, e.Message, sess.ContainerID)
	s.mu.Lock()
	sess.Error = e
	cp := *sess
	s.mu.Unlock()
	failed, err := s.event(ctx, events.SessionFailed, events.DeriveID(sess.ID, "failed"), events.SessionFailedData{SessionRef: ref(&cp), Error: *e}, &cp, opts...)
	if err != nil {
		s.log.Warn("sessions: publish a session's failure", "session_id", sess.ID, "err", err)
	}
	if err := s.save(ctx, &cp); err != nil {
		s.log.Warn("sessions: save a session", "session_id", sess.ID, "err", err)
	}
	return &cp, failed, e
}

// sandboxSpec is the container of a session or a pool: secure defaults, a
// process that waits forever, the resources asked for, and no network
// beyond what the egress rules list.
func sandboxSpec(drv, image string, cpu float64, mem int64, egress []driver.EgressRule, labels map[string]string) driver.ContainerConfig {
	spec := driver.DefaultConfig()
	spec.Image = image
	spec.Command = []string{"sleep", "2147483647"}
	if drv == "fake" {
		spec.Command = []string{"fake", "--forever"}
	}
	if drv == "docker" {
		// The images' sandbox user; with a read-only root the workspace is
		// the writable tmpfs on /tmp. No network: an agent's code reaches
		// neither the host (the control plane's ports) nor the outside.
		// (The local driver gives each container a loopback of its own.)
		spec.Security.User = "1000:1000"
		spec.WorkingDir = "/tmp"
		spec.Network = "none"
	}
	spec.Egress = slices.Clone(egress)
	if drv == "docker" && len(egress) > 0 {
		spec.Network = "" // the driver refuses egress it cannot enforce, and says so
	}
	if cpu > 0 {
		spec.Resources.CPU = cpu
	}
	if mem > 0 {
		spec.Resources.MemoryMB = mem
	}
	spec.Labels = maps.Clone(labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	return spec
}

// runContainer asks for a sandbox to be created and started and waits
// until it runs.
func (s *Service) runContainer(ctx context.Context, e events.Event) (api.Container, error) {
	wctx, cancel := context.WithTimeout(ctx, orchestrator.DefaultWait)
	defer cancel()
	acc, c, err := s.ctl.Do(wctx, e)
	switch {
	case errors.Is(err, orchestrator.ErrNotYet):
		return c, &api.Error{Kind: api.KindTimeout, ID: acc.ContainerID, Message: "the sandbox did not start within " + orchestrator.DefaultWait.String()}
	case err != nil:
		return c, err
	case c.Status != api.StatusRunning && c.Error != nil:
		return c, c.Error
	case c.Status != api.StatusRunning:
		return c, &api.Error{Kind: api.KindUnavailable, ID: c.ID, Message: fmt.Sprintf("the sandbox is %s", c.Status)}
	}
	return c, nil
}

// Get returns a session.
func (s *Service) Get(id string) (*api.Session, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, ok := s.m[id]
	if !ok {
		return nil, false
	}
	cp := *sess
	return &cp, true
}

// Session returns a session its caller may see: their own, or any to an
// admin.
func (s *Service) Session(id string, who api.Principal) (*api.Session, error) {
	sess, ok := s.Get(id)
	if !ok {
		return nil, &api.Error{Kind: api.KindNotFound, ID: id, Message: "no session " + id}
	}
	if err := mayUse(sess, who); err != nil {
		return nil, err
	}
	return sess, nil
}

// sandboxGone says why a ready session's sandbox no longer serves it (it
// was removed, or ended), "" while it does. A sandbox on a host that is
// not heard from is not gone: the host may come back.
func (s *Service) sandboxGone(sess *api.Session) string {
	if sess.Status != api.SessionReady || sess.ContainerID == "" {
		return ""
	}
	c, ok := s.ctl.Container(sess.ContainerID)
	switch {
	case !ok:
		return fmt.Sprintf("its sandbox %s is gone: it was removed", sess.ContainerID)
	case c.Status == api.StatusExited || c.Status == api.StatusStopped || c.Status == api.StatusFailed:
		return fmt.Sprintf("its sandbox %s is gone: it %s", sess.ContainerID, c.Status)
	}
	return ""
}

// failGone fails the ready sessions whose sandboxes are gone.
func (s *Service) failGone(ctx context.Context) {
	for _, sess := range s.List(false, admin) {
		if why := s.sandboxGone(&sess); why != "" {
			s.failSandbox(ctx, sess.ID, why)
		}
	}
}

// failSandbox fails a session for the loss of its sandbox and returns it.
func (s *Service) failSandbox(ctx context.Context, id, why string) *api.Session {
	s.mu.Lock()
	sess, ok := s.m[id]
	if !ok || sess.Status != api.SessionReady {
		var cp api.Session
		if ok {
			cp = *sess
		}
		s.mu.Unlock()
		return &cp
	}
	s.mu.Unlock()
	failed, _, _ := s.fail(ctx, sess, &api.Error{Kind: api.KindUnavailable, ID: id, Message: "the session failed: " + why}, nil)
	return failed
}

// mayUse says whether a principal may use a session: its owner may, and an
// admin.
func mayUse(sess *api.Session, who api.Principal) error {
	if who.Admin() || (sess.Owner != "" && sess.Owner == who.Name) {
		return nil
	}
	return &api.Error{Kind: api.KindPermission, ID: sess.ID, Message: fmt.Sprintf("session %s belongs to another principal than %s", sess.ID, who.Name)}
}

// List returns the sessions a principal may see (their own; every one to
// an admin), oldest first; ended ones only with all.
func (s *Service) List(all bool, who api.Principal) []api.Session {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []api.Session{}
	for _, sess := range s.m {
		if mayUse(sess, who) != nil {
			continue
		}
		if all || sess.Status == api.SessionReady || sess.Status == api.SessionRequested {
			out = append(out, *sess)
		}
	}
	slices.SortFunc(out, func(a, b api.Session) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// live returns a session that is ready and that who may use, or why not.
func (s *Service) live(id string, who api.Principal) (*api.Session, error) {
	sess, err := s.Session(id, who)
	if err != nil {
		return nil, err
	}
	if why := s.sandboxGone(sess); why != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		sess = s.failSandbox(ctx, sess.ID, why)
	}
	if sess.Status != api.SessionReady {
		return nil, &api.Error{Kind: api.KindConflict, ID: id, Message: fmt.Sprintf("session %s is %s", id, sess.Status)}
	}
	return sess, nil
}

// Extend makes a session expire timeout from now.
func (s *Service) Extend(ctx context.Context, id string, timeout time.Duration, who api.Principal) (*api.Session, error) {
	sess, _, err := s.extend(ctx, id, timeout, who, nil)
	return sess, err
}

func (s *Service) extend(ctx context.Context, id string, timeout time.Duration, who api.Principal, opts []events.Option) (*api.Session, events.Event, error) {
	by := who.Name
	if timeout <= 0 || timeout > MaxSessionTimeout {
		return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "timeoutMs", Message: fmt.Sprintf("timeoutMs must be between 1 and %d", MaxSessionTimeout.Milliseconds())}
	}
	cur, err := s.live(id, who)
	if err != nil {
		return nil, events.Event{}, err
	}
	cp := *cur
	cp.ExpiresAt, cp.TimeoutMs, cp.SetBy = time.Now().UTC().Add(timeout), timeout.Milliseconds(), by
	extended, err := s.event(ctx, events.SessionExtended, events.DeriveID(id, "extended "+cp.ExpiresAt.String()),
		events.SessionExtendedData{SessionRef: ref(&cp), ExpiresAt: cp.ExpiresAt, SetBy: by}, &cp, opts...)
	if err != nil {
		return nil, events.Event{}, unstored(err)
	}
	s.mu.Lock()
	if sess := s.m[id]; sess != nil {
		sess.ExpiresAt, sess.TimeoutMs, sess.SetBy = cp.ExpiresAt, cp.TimeoutMs, cp.SetBy
		s.scheduleLocked(sess)
		cp = *sess
	}
	s.mu.Unlock()
	if err := s.save(ctx, &cp); err != nil {
		return nil, events.Event{}, unavailable(err)
	}
	return &cp, extended, nil
}

// Close removes a session's sandbox.
func (s *Service) Close(ctx context.Context, id string, who api.Principal) (*api.Session, error) {
	sess, _, err := s.close(ctx, id, who, nil)
	return sess, err
}

func (s *Service) close(ctx context.Context, id string, who api.Principal, opts []events.Option) (*api.Session, events.Event, error) {
	by := who.Name
	sess, err := s.live(id, who)
	if err != nil {
		return nil, events.Event{}, err
	}
	closed, err := s.event(ctx, events.SessionClosed, events.DeriveID(id, "closed"),
		events.SessionClosedData{SessionRef: ref(sess), ClosedBy: by, Reason: "closed on request"}, sess, opts...)
	if err != nil {
		return nil, events.Event{}, unstored(err)
	}
	s.end(ctx, sess, api.SessionClosed, "closed on request", sess.ContainerID)
	cp, _ := s.Get(id)
	return cp, closed, nil
}

// end marks a session ended and removes its sandbox.
func (s *Service) end(ctx context.Context, sess *api.Session, st api.SessionStatus, reason, containerID string) {
	s.mu.Lock()
	if kept := s.m[sess.ID]; kept != nil {
		kept.Status, kept.Reason, kept.EndedAt = st, reason, time.Now().UTC()
		*sess = *kept
	}
	s.mu.Unlock()
	if err := s.save(ctx, sess); err != nil {
		s.log.Warn("sessions: save a session", "session_id", sess.ID, "err", err)
	}
	if containerID == "" {
		return
	}
	rm, err := events.New(events.ContainerRemoveRequested, source, events.ContainerRequestedData{ContainerID: containerID, Force: true},
		events.WithSession(sess.ID), events.WithID(events.DeriveID(sess.ID, "remove")), events.WithTraceFrom(ctx))
	if err != nil {
		return
	}
	// A closed session's sandbox is gone when the answer comes.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	switch _, _, err := s.ctl.Do(wctx, rm); {
	case errors.Is(err, orchestrator.ErrNotYet):
		s.log.Warn("sessions: a session's sandbox not removed in time", "session_id", sess.ID, "container_id", containerID)
	case err != nil:
		s.log.Warn("sessions: remove a session's sandbox", "session_id", sess.ID, "container_id", containerID, "err", err)
	}
}

// RunCode runs code in a session and audits it. With onChunk, output is
// handed over while it is produced, in order, before RunCode returns.
func (s *Service) RunCode(ctx context.Context, id string, req api.RunCodeRequest, who api.Principal, onChunk func(events.Chunk)) (*api.ExecResult, error) {
	res, _, err := s.runCode(ctx, id, req, who, onChunk, nil)
	return res, err
}

// runCode is RunCode; it returns the stored exec.completed event too,
// which, given a cause, belongs to the cause's chain.
func (s *Service) runCode(ctx context.Context, id string, req api.RunCodeRequest, who api.Principal, onChunk func(events.Chunk), cause []events.Option) (*api.ExecResult, events.Event, error) {
	by := who.Name
	sess, err := s.live(id, who)
	if err != nil {
		return nil, events.Event{}, err
	}
	if req.Language == "" {
		req.Language = sess.Languages[0]
	}
	interp, ok := languages[req.Language]
	if !ok || !slices.Contains(sess.Languages, req.Language) {
		return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "language", Message: fmt.Sprintf("session %s runs %v, not %q", id, sess.Languages, req.Language)}
	}
	if len(req.Code) > MaxCodeBytes {
		return nil, events.Event{}, &api.Error{Kind: api.KindTooLarge, Field: "code", Message: fmt.Sprintf("code is %d bytes; at most %d", len(req.Code), MaxCodeBytes)}
	}
	if strings.TrimSpace(req.Code) == "" {
		return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "code", Message: "no code to run"}
	}
	if req.TimeoutMs < 0 || req.TimeoutMs > events.MaxExecTimeout.Milliseconds() {
		return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "timeoutMs", Message: fmt.Sprintf(
			"timeoutMs must be between 1 and %d (an hour; 0: the default of %s), got %d", events.MaxExecTimeout.Milliseconds(), DefaultCodeTimeout, req.TimeoutMs)}
	}
	timeout := DefaultCodeTimeout
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	cmd := append(slices.Clone(interp), req.Code)
	if sess.Driver == "fake" {
		cmd = []string{"fake", "--stdout", req.Code}
	}
	s.touch(sess.ID)
	defer s.touch(sess.ID)
	res, completed, err := s.exec(ctx, sess, events.ExecRequestedData{ContainerID: sess.ContainerID, Command: cmd, TimeoutMs: timeout.Milliseconds(),
		Env: req.Env, WorkingDir: req.WorkingDir, Stdin: req.Stdin}, onChunk, cause...)
	if err != nil {
		return nil, completed, err
	}
	sum := sha256.Sum256([]byte(req.Code))
	audit := events.CodeExecutedData{SessionRef: ref(sess), ExecID: res.ExecID, Language: req.Language, CodeSHA256: hex.EncodeToString(sum[:]),
		CodeBytes: len(req.Code), ExitCode: res.ExitCode, DurationMs: res.DurationMs, TimedOut: res.TimedOut,
		Truncated: res.Truncated, StdoutBytes: len(res.Stdout), StderrBytes: len(res.Stderr), By: by}
	if s.keepCode {
		audit.Code, audit.Stdout, audit.Stderr = req.Code, res.Stdout, res.Stderr
	}
	// A run that cannot be audited is not answered as if it were.
	if _, err := s.event(ctx, events.SessionCodeExecuted, events.DeriveID(res.ExecID, "audit"), audit, sess); err != nil {
		return nil, completed, unstored(err)
	}
	return res, completed, nil
}

// exec runs a command in a session's sandbox and waits for its result.
// With onChunk, output is handed over while it is produced, in order,
// before exec returns.
func (s *Service) exec(ctx context.Context, sess *api.Session, data events.ExecRequestedData, onChunk func(events.Chunk), opts ...events.Option) (*api.ExecResult, events.Event, error) {
	var chunks chan *nats.Msg
	if onChunk != nil {
		inbox := s.nc.NewInbox() // under the connection's own prefix
		chunks = make(chan *nats.Msg, 1024)
		sub, err := s.nc.ChanSubscribe(inbox, chunks)
		if err != nil {
			return nil, events.Event{}, unavailable(err)
		}
		defer sub.Unsubscribe()
		data.StreamTo = inbox
	}
	e, err := events.New(events.ContainerExecRequested, source, data, append(opts, events.WithSession(sess.ID), events.WithTraceFrom(ctx))...)
	if err != nil {
		return nil, events.Event{}, &api.Error{Kind: api.KindInternal, Message: err.Error()}
	}
	var res *api.ExecResult
	var completed events.Event
	if onChunk == nil {
		res, completed, err = s.ctl.Exec(ctx, e)
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, completed, err = s.ctl.Exec(ctx, e)
		}()
		forward := func(m *nats.Msg) {
			var c events.Chunk
			if json.Unmarshal(m.Data, &c) == nil {
				onChunk(c)
			}
		}
	wait:
		for {
			select {
			case m := <-chunks:
				forward(m)
			case <-done:
				break wait
			}
		}
		// Chunks travel apart from the completed event: take the stragglers.
		_ = s.nc.FlushTimeout(time.Second)
		for {
			select {
			case m := <-chunks:
				forward(m)
				continue
			case <-time.After(20 * time.Millisecond):
			}
			break
		}
	}
	if errors.Is(err, orchestrator.ErrNotYet) {
		return nil, completed, &api.Error{Kind: api.KindTimeout, ID: sess.ID, Message: "no result in time"}
	}
	return res, completed, err
}

// touch records activity, which holds off the idle timer.
func (s *Service) touch(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sess, ok := s.m[id]; ok {
		sess.LastActivityAt = time.Now().UTC()
		delete(s.warned, id)
	}
}
