package orchestrator

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Session defaults; docs/SESSIONS.md explains them.
const (
	DefaultSessionTimeout = 30 * time.Minute
	DefaultIdleTimeout    = 10 * time.Minute
	MaxSessionTimeout     = 24 * time.Hour
	DefaultCodeTimeout    = 30 * time.Second
	// MaxCodeBytes bounds code run in a session: it travels as an argument.
	MaxCodeBytes = 64 << 10
	// LabelSession marks a session's container.
	LabelSession = driver.LabelSession
)

// languages maps a language to the interpreter that runs code given as an
// argument.
var languages = map[string][]string{
	"python":     {"python3", "-c"},
	"javascript": {"node", "-e"},
	"bash":       {"bash", "-c"},
	"sh":         {"sh", "-c"},
}

// sessions are the orchestrator's sessions, kept in the sessions bucket so
// that their timers survive a restart.
type sessions struct {
	mu     sync.Mutex
	m      map[string]*api.Session
	warned map[string]time.Time // session → the expiry its expiring event announced
	timers timerHeap            // when to look at which session next
	firing map[string]bool      // sessions whose expiry is being carried out
	wake   chan struct{}        // a timer was added; capacity 1
	kv     jetstream.KeyValue
	// KeepCode keeps code and output in the audit events.
	keepCode bool
}

func (o *Orchestrator) loadSessions(ctx context.Context) error {
	o.sess = &sessions{m: map[string]*api.Session{}, warned: map[string]time.Time{}, firing: map[string]bool{},
		wake: make(chan struct{}, 1), keepCode: o.keepCode}
	kv, err := o.js.KeyValue(ctx, events.BucketSessions)
	if err != nil {
		return err
	}
	o.sess.kv = kv
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for key := range lister.Keys() {
		if strings.HasPrefix(key, poolKeyPrefix) {
			continue
		}
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var s api.Session
		if json.Unmarshal(entry.Value(), &s) == nil {
			o.sess.m[s.ID] = &s
			o.scheduleLocked(&s)
		}
	}
	return nil
}

// save writes a session to its bucket.
func (o *Orchestrator) saveSession(ctx context.Context, s *api.Session) error {
	b, _ := json.Marshal(s)
	_, err := o.sess.kv.Put(ctx, s.ID, b)
	return err
}

// sessionEvent publishes an event about a session and returns it as
// stored. Sessions are events-first: the event is published before the
// bucket is written, and an event that cannot be stored fails the
// operation.
func (o *Orchestrator) sessionEvent(ctx context.Context, typ string, id string, data any, s *api.Session, opts ...events.Option) (events.Event, error) {
	opts = append(opts, events.WithSession(s.ID), events.WithID(id), events.WithContainer(s.ContainerID))
	return o.publish(ctx, typ, data, opts...)
}

// sessionRef is what every session event says of its session.
func sessionRef(s *api.Session) events.SessionRef {
	return events.SessionRef{SessionID: s.ID, ContainerID: s.ContainerID, HostID: s.Host}
}

// unstored is the error of an operation whose event could not be stored.
func unstored(err error) *api.Error {
	return &api.Error{Kind: api.KindUnavailable, Message: "the event could not be stored: " + err.Error()}
}

// defaultsFor fills a session's driver and image from its languages.
func defaultsFor(req *api.SessionRequest) *api.Error {
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

// CreateSession makes a session and waits until its sandbox runs.
func (o *Orchestrator) CreateSession(ctx context.Context, req api.SessionRequest, by string) (*api.Session, *api.Error) {
	s, _, aerr := o.createSession(ctx, req, by, nil)
	return s, aerr
}

// createSession is CreateSession; it returns the stored session.ready
// event too, for the doors that answer with it.
func (o *Orchestrator) createSession(ctx context.Context, req api.SessionRequest, by string, cause *events.Event) (*api.Session, events.Event, *api.Error) {
	if aerr := defaultsFor(&req); aerr != nil {
		return nil, events.Event{}, aerr
	}
	var causeOpts []events.Option
	if cause != nil {
		causeOpts = append(causeOpts, events.CausedBy(*cause))
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
	s := &api.Session{ID: "s" + newContainerID()[:20], Status: api.SessionRequested, Driver: req.Driver, Image: req.Image,
		Languages: req.Languages, AgentType: req.AgentType, Labels: req.Labels, CreatedAt: now, ExpiresAt: now.Add(ttl),
		TimeoutMs: ttl.Milliseconds(), IdleTimeoutMs: idle.Milliseconds(), LastActivityAt: now, SetBy: by}
	if _, err := o.sessionEvent(ctx, events.SessionRequested, derive(s.ID, "requested"), events.SessionRequestedData{SessionRef: sessionRef(s),
		Languages: s.Languages, Image: s.Image, Driver: s.Driver, AgentType: s.AgentType, ExpiresAt: s.ExpiresAt, IdleTimeoutMs: s.IdleTimeoutMs, RequestedBy: by,
	}, s, causeOpts...); err != nil {
		return nil, events.Event{}, unstored(err)
	}
	if err := o.saveSession(ctx, s); err != nil {
		return nil, events.Event{}, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
	}
	o.sess.mu.Lock()
	o.sess.m[s.ID] = s
	o.sess.mu.Unlock()

	begin := time.Now()
	var c *api.Container
	warm := false
	if id, ok := o.take(profile(s.Driver, s.Image, req.CPU, req.MemoryMB)); ok {
		if r, ok := o.state.get(id); ok {
			view := o.state.view(r, o.live)
			c, warm = &view, true
		}
	}
	var aerr *api.Error
	if c == nil {
		spec := sandboxSpec(s.Driver, s.Image, req.CPU, req.MemoryMB, req.Labels)
		spec.SessionID = s.ID
		spec.Labels[LabelSession] = s.ID
		e, err := events.New(events.ContainerCreateRequested, "/openagent/sessions", api.CreateRequest{Driver: s.Driver, Start: true, Spec: spec},
			events.WithSession(s.ID), events.WithID(derive(s.ID, "create")))
		if err != nil {
			return nil, events.Event{}, &api.Error{Kind: api.KindInternal, Message: err.Error()}
		}
		c, aerr = o.runContainer(ctx, e)
	}
	if aerr != nil {
		return o.failSession(ctx, s, aerr, causeOpts)
	}
	o.sess.mu.Lock()
	cp := *s
	o.sess.mu.Unlock()
	cp.Status, cp.ContainerID, cp.Host, cp.ReadyAt = api.SessionReady, c.ID, c.Host, time.Now().UTC()
	cp.LastActivityAt = cp.ReadyAt
	ready, err := o.sessionEvent(ctx, events.SessionReady, derive(s.ID, "ready"), events.SessionReadyData{SessionRef: sessionRef(&cp),
		ReadyMs: float64(time.Since(begin).Microseconds()) / 1000, Warm: warm, ExpiresAt: cp.ExpiresAt,
	}, &cp, causeOpts...)
	if err != nil {
		s.ContainerID, s.Host = c.ID, c.Host
		return o.failSession(ctx, s, unstored(err), causeOpts)
	}
	o.sess.mu.Lock()
	*s = cp
	o.scheduleLocked(s)
	o.sess.mu.Unlock()
	if err := o.saveSession(ctx, &cp); err != nil {
		o.log.Warn("orchestrator: save session", "session_id", s.ID, "err", err)
	}
	return &cp, ready, nil
}

// failSession ends a session that could not be made ready, with the
// reason, and removes what it had.
func (o *Orchestrator) failSession(ctx context.Context, s *api.Session, aerr *api.Error, causeOpts []events.Option) (*api.Session, events.Event, *api.Error) {
	o.endSession(ctx, s, api.SessionFailed, aerr.Message, s.ContainerID)
	o.sess.mu.Lock()
	s.Error = aerr
	cp := *s
	o.sess.mu.Unlock()
	failed, err := o.sessionEvent(ctx, events.SessionFailed, derive(s.ID, "failed"), events.SessionFailedData{SessionRef: sessionRef(&cp), Error: *aerr}, &cp, causeOpts...)
	if err != nil {
		o.log.Warn("orchestrator: publish a session's failure", "session_id", s.ID, "err", err)
	}
	if err := o.saveSession(ctx, &cp); err != nil {
		o.log.Warn("orchestrator: save session", "session_id", s.ID, "err", err)
	}
	return &cp, failed, aerr
}

// sandboxSpec is the container of a session or a pool: secure defaults, a
// process that waits forever, the resources asked for.
func sandboxSpec(drv, image string, cpu float64, mem int64, labels map[string]string) driver.ContainerConfig {
	spec := driver.DefaultConfig()
	spec.Image = image
	spec.Command = []string{"sleep", "2147483647"}
	if drv == "fake" {
		spec.Command = []string{"fake", "--forever"}
	}
	if drv == "docker" {
		// The images' sandbox user; with a read-only root the workspace is
		// the writable tmpfs on /tmp.
		spec.Security.User = "1000:1000"
		spec.WorkingDir = "/tmp"
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

// runContainer handles a create-and-start request and waits until the
// container runs.
func (o *Orchestrator) runContainer(ctx context.Context, e events.Event) (*api.Container, *api.Error) {
	acc, aerr := o.accept(ctx, e)
	if aerr != nil {
		return nil, aerr
	}
	wctx, cancel := context.WithTimeout(ctx, waitLimit)
	defer cancel()
	rec, err := o.state.waitFor(wctx, acc.ContainerID, func(r *record) bool {
		return r.Status == api.StatusRunning || r.Status == api.StatusFailed || r.Status == api.StatusExited || r.FailedRequest == acc.RequestID
	})
	if err != nil {
		return nil, &api.Error{Kind: api.KindTimeout, ID: acc.ContainerID, Message: "the sandbox did not start within " + waitLimit.String()}
	}
	if rec.Status != api.StatusRunning {
		if rec.Error != nil {
			return nil, rec.Error
		}
		return nil, &api.Error{Kind: api.KindUnavailable, ID: rec.ID, Message: fmt.Sprintf("the sandbox is %s", rec.Status)}
	}
	c := o.state.view(rec, o.live)
	return &c, nil
}

// Session returns a session.
func (o *Orchestrator) Session(id string) (*api.Session, bool) {
	o.sess.mu.Lock()
	defer o.sess.mu.Unlock()
	s, ok := o.sess.m[id]
	if !ok {
		return nil, false
	}
	cp := *s
	return &cp, true
}

// Sessions returns the sessions, newest last; ended ones only with all.
func (o *Orchestrator) Sessions(all bool) []api.Session {
	o.sess.mu.Lock()
	defer o.sess.mu.Unlock()
	out := []api.Session{}
	for _, s := range o.sess.m {
		if all || s.Status == api.SessionReady || s.Status == api.SessionRequested {
			out = append(out, *s)
		}
	}
	slices.SortFunc(out, func(a, b api.Session) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

func (o *Orchestrator) liveSession(id string) (*api.Session, *api.Error) {
	s, ok := o.Session(id)
	if !ok {
		return nil, &api.Error{Kind: api.KindNotFound, ID: id, Message: "no session " + id}
	}
	if s.Status != api.SessionReady {
		return nil, &api.Error{Kind: api.KindConflict, ID: id, Message: fmt.Sprintf("session %s is %s", id, s.Status)}
	}
	return s, nil
}

// ExtendSession makes a session expire timeout from now.
func (o *Orchestrator) ExtendSession(ctx context.Context, id string, timeout time.Duration, by string) (*api.Session, *api.Error) {
	s, _, aerr := o.extendSession(ctx, id, timeout, by, nil)
	return s, aerr
}

func (o *Orchestrator) extendSession(ctx context.Context, id string, timeout time.Duration, by string, opts []events.Option) (*api.Session, events.Event, *api.Error) {
	if timeout <= 0 || timeout > MaxSessionTimeout {
		return nil, events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "timeoutMs", Message: fmt.Sprintf("timeoutMs must be between 1 and %d", MaxSessionTimeout.Milliseconds())}
	}
	cur, aerr := o.liveSession(id)
	if aerr != nil {
		return nil, events.Event{}, aerr
	}
	cp := *cur
	cp.ExpiresAt, cp.TimeoutMs, cp.SetBy = time.Now().UTC().Add(timeout), timeout.Milliseconds(), by
	extended, err := o.sessionEvent(ctx, events.SessionExtended, derive(id, "extended "+cp.ExpiresAt.String()),
		events.SessionExtendedData{SessionRef: sessionRef(&cp), ExpiresAt: cp.ExpiresAt, SetBy: by}, &cp, opts...)
	if err != nil {
		return nil, events.Event{}, unstored(err)
	}
	o.sess.mu.Lock()
	if s := o.sess.m[id]; s != nil {
		s.ExpiresAt, s.TimeoutMs, s.SetBy = cp.ExpiresAt, cp.TimeoutMs, cp.SetBy
		o.scheduleLocked(s)
		cp = *s
	}
	o.sess.mu.Unlock()
	if err := o.saveSession(ctx, &cp); err != nil {
		return nil, events.Event{}, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
	}
	return &cp, extended, nil
}

// CloseSession removes a session's sandbox.
func (o *Orchestrator) CloseSession(ctx context.Context, id, by string) (*api.Session, *api.Error) {
	s, _, aerr := o.closeSession(ctx, id, by, nil)
	return s, aerr
}

func (o *Orchestrator) closeSession(ctx context.Context, id, by string, opts []events.Option) (*api.Session, events.Event, *api.Error) {
	s, aerr := o.liveSession(id)
	if aerr != nil {
		return nil, events.Event{}, aerr
	}
	closed, err := o.sessionEvent(ctx, events.SessionClosed, derive(id, "closed"),
		events.SessionClosedData{SessionRef: sessionRef(s), ClosedBy: by, Reason: "closed on request"}, s, opts...)
	if err != nil {
		return nil, events.Event{}, unstored(err)
	}
	o.endSession(ctx, s, api.SessionClosed, "closed on request", s.ContainerID)
	cp, _ := o.Session(id)
	return cp, closed, nil
}

// endSession marks a session ended and removes its sandbox.
func (o *Orchestrator) endSession(ctx context.Context, s *api.Session, st api.SessionStatus, reason, containerID string) {
	o.sess.mu.Lock()
	live := o.sess.m[s.ID]
	if live != nil {
		live.Status, live.Reason, live.EndedAt = st, reason, time.Now().UTC()
		*s = *live
	}
	o.sess.mu.Unlock()
	if err := o.saveSession(ctx, s); err != nil {
		o.log.Warn("orchestrator: save session", "session_id", s.ID, "err", err)
	}
	if containerID == "" {
		return
	}
	rm, err := events.New(events.ContainerRemoveRequested, "/openagent/sessions", events.ContainerRequestedData{ContainerID: containerID, Force: true},
		events.WithSession(s.ID), events.WithID(derive(s.ID, "remove")))
	if err != nil {
		return
	}
	if _, aerr := o.accept(ctx, rm); aerr != nil {
		o.log.Warn("orchestrator: remove a session's sandbox", "session_id", s.ID, "err", aerr.Message)
		return
	}
	// A closed session's sandbox is gone when the answer comes.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := o.state.waitFor(wctx, containerID, func(r *record) bool { return r.Status == api.StatusRemoved }); err != nil {
		o.log.Warn("orchestrator: a session's sandbox not removed in time", "session_id", s.ID, "container_id", containerID)
	}
}

// RunCode runs code in a session and audits it. With onChunk, output is
// handed over while it is produced, in order, before RunCode returns.
func (o *Orchestrator) RunCode(ctx context.Context, id string, req api.RunCodeRequest, by string, onChunk func(events.Chunk)) (*api.ExecResult, *api.Error) {
	res, _, aerr := o.runCode(ctx, id, req, by, onChunk, nil)
	return res, aerr
}

// runCode is RunCode; it returns the stored exec.completed event too,
// which, given a cause, belongs to the cause's chain.
func (o *Orchestrator) runCode(ctx context.Context, id string, req api.RunCodeRequest, by string, onChunk func(events.Chunk), cause *events.Event) (res *api.ExecResult, completed events.Event, aerr *api.Error) {
	s, aerr := o.liveSession(id)
	if aerr != nil {
		return nil, completed, aerr
	}
	if req.Language == "" {
		req.Language = s.Languages[0]
	}
	interp, ok := languages[req.Language]
	if !ok || !slices.Contains(s.Languages, req.Language) {
		return nil, completed, &api.Error{Kind: api.KindInvalid, Field: "language", Message: fmt.Sprintf("session %s runs %v, not %q", id, s.Languages, req.Language)}
	}
	if len(req.Code) > MaxCodeBytes {
		return nil, completed, &api.Error{Kind: api.KindTooLarge, Field: "code", Message: fmt.Sprintf("code is %d bytes; at most %d", len(req.Code), MaxCodeBytes)}
	}
	if req.TimeoutMs < 0 {
		return nil, completed, &api.Error{Kind: api.KindInvalid, Field: "timeoutMs", Message: "timeoutMs must be positive (0: the default of 30s)"}
	}
	timeout := DefaultCodeTimeout
	if req.TimeoutMs > 0 {
		timeout = time.Duration(req.TimeoutMs) * time.Millisecond
	}
	o.touch(s.ID)
	cmd := append(slices.Clone(interp), req.Code)
	if s.Driver == "fake" {
		cmd = []string{"fake", "--stdout", req.Code}
	}
	data := events.ExecRequestedData{ContainerID: s.ContainerID, Command: cmd, TimeoutMs: timeout.Milliseconds(),
		Env: req.Env, WorkingDir: req.WorkingDir, Stdin: req.Stdin}
	var chunks chan *nats.Msg
	if onChunk != nil {
		inbox := nats.NewInbox()
		chunks = make(chan *nats.Msg, 1024)
		sub, err := o.nc.ChanSubscribe(inbox, chunks)
		if err != nil {
			return nil, completed, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
		}
		defer sub.Unsubscribe()
		data.StreamTo = inbox
	}
	var opts []events.Option
	if cause != nil {
		opts = append(opts, events.CausedBy(*cause))
	}
	e, aerr := o.newRequest(data, s.ID, opts...)
	if aerr != nil {
		return nil, completed, aerr
	}
	if onChunk == nil {
		res, completed, aerr = o.execWaitEvent(ctx, e)
	} else {
		done := make(chan struct{})
		go func() {
			defer close(done)
			res, completed, aerr = o.execWaitEvent(ctx, e)
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
		_ = o.nc.FlushTimeout(time.Second)
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
	o.touch(s.ID)
	if aerr != nil {
		return nil, completed, aerr
	}
	if res == nil {
		return nil, completed, &api.Error{Kind: api.KindTimeout, ID: id, Message: "no result in time"}
	}
	sum := sha256.Sum256([]byte(req.Code))
	audit := events.CodeExecutedData{SessionRef: sessionRef(s), ExecID: res.ExecID, Language: req.Language, CodeSHA256: hex.EncodeToString(sum[:]),
		CodeBytes: len(req.Code), ExitCode: res.ExitCode, DurationMs: res.DurationMs, TimedOut: res.TimedOut,
		Truncated: res.Truncated, StdoutBytes: len(res.Stdout), StderrBytes: len(res.Stderr), By: by}
	if o.sess.keepCode {
		audit.Code, audit.Stdout, audit.Stderr = req.Code, res.Stdout, res.Stderr
	}
	// A run that cannot be audited is not answered as if it were.
	if _, err := o.sessionEvent(ctx, events.SessionCodeExecuted, derive(res.ExecID, "audit"), audit, s); err != nil {
		return nil, completed, unstored(err)
	}
	return res, completed, nil
}

// newRequest builds an exec request on behalf of a session.
func (o *Orchestrator) newRequest(data events.ExecRequestedData, sessionID string, opts ...events.Option) (events.Event, *api.Error) {
	e, err := events.New(events.ContainerExecRequested, "/openagent/sessions", data, append(opts, events.WithSession(sessionID))...)
	if err != nil {
		return events.Event{}, &api.Error{Kind: api.KindInternal, Message: err.Error()}
	}
	return e, nil
}

// touch records activity, which holds off the idle timer.
func (o *Orchestrator) touch(id string) {
	o.sess.mu.Lock()
	defer o.sess.mu.Unlock()
	if s, ok := o.sess.m[id]; ok {
		s.LastActivityAt = time.Now().UTC()
		delete(o.sess.warned, id)
	}
}
