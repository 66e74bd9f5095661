package worker

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Labels the worker puts on every container, so that the runtime object
// says which container and command made it.
const (
	LabelContainerID = driver.LabelContainerID
	LabelCommandID   = driver.LabelCommandID
	LabelSessionID   = driver.LabelSessionID
)

// maxOutput caps each of an exec's stdout and stderr, streamed and in its
// event.
const maxOutput = events.MaxExecOutput

// command is what the worker reads of any command's data: the exec
// command's fields (container, host, timeout and the exec's own) and what
// the create, stop and remove commands add (events.CreateCommandData,
// events.ContainerCommandData).
type command struct {
	events.ExecCommandData
	Driver string                 `json:"driver"`
	Spec   driver.ContainerConfig `json:"spec"`
	Start  bool                   `json:"start"`
	Force  bool                   `json:"force"`
	Reason string                 `json:"reason"`
	// stored is when the commands stream stored it: what decides whether
	// a former leader sent it before or after its successor took over.
	stored time.Time
}

var opOf = map[string]string{
	events.CommandCreate: "create", events.CommandStart: "start", events.CommandStop: "stop",
	events.CommandRemove: "remove", events.CommandExec: "exec",
}

// handle runs one command. It returns once the resulting state event is
// stored, so the command is acked only then. A command older than what
// this worker carried out for the container is refused. A driver error
// that cannot pass by trying again becomes a failed event at once; any
// other error (a driver's that may pass, the bus's) is retried.
func (w *Worker) handle(ctx context.Context, d *events.Delivery) error {
	e := d.Event
	var c command
	if err := events.Data(e, &c); err != nil {
		return events.Permanent(err)
	}
	if md, err := d.Msg.Metadata(); err == nil {
		c.stored = md.Timestamp
	}
	log := w.log.With("container_id", c.ContainerID, "event_id", e.ID())
	if e.Type() != events.CommandCreate { // a create is fenced while the runtime makes it
		refused, err := w.admitCommand(ctx, e, &c)
		if err != nil {
			return events.Retry(err, 0)
		}
		if refused {
			log.Warn("worker: refused a command older than what was carried out", "type", e.Type())
			return nil
		}
	}
	if e.Type() == events.CommandCreate || e.Type() == events.CommandStart || e.Type() == events.CommandRemove {
		// A container's creates, starts and removes run one at a time (a
		// stop does not wait: a forced remove may cut a long one short).
		// Two creates of one container (a new leader announces a pending
		// container again, under its own command id) must not both start
		// it, the second finding it created while the first is about to
		// start it; a remove delivered twice at once (a pull renewed after
		// a partition healed, while the old one's messages still came) is
		// carried out once, the second finding nothing left to remove.
		unlock := w.lockLifecycle(c.ContainerID)
		defer unlock()
	}
	err := w.guarded(ctx, e, &c)
	var fe *fenceError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errRefused):
		log.Warn("worker: refused a command older than what was carried out", "type", e.Type())
		return nil
	case errors.As(err, &fe):
		return events.Retry(err, 0)
	case ctx.Err() != nil:
		return err
	case permanent(err):
		log.Warn("worker: command failed", "type", e.Type(), "err", err)
		return w.fail(ctx, e, err)
	}
	log.Info("worker: command failed, will retry", "err", err)
	var open *breakerOpen
	if errors.As(err, &open) {
		return events.Retry(err, max(open.wait, 10*time.Millisecond))
	}
	return events.Retry(err, 0)
}

// guarded runs a command under its driver's retries and circuit breaker
// (see Resilience); an exec, which is not safe to run twice, runs once.
func (w *Worker) guarded(ctx context.Context, e events.Event, c *command) error {
	run := func() error { return w.run(ctx, e, c) }
	name := c.Driver
	if name == "" {
		w.mu.Lock()
		if d := w.owner[c.ContainerID]; d != nil {
			name = d.Name()
		}
		w.mu.Unlock()
	}
	g := w.guards[name]
	if g == nil || e.Type() == events.CommandExec {
		return run()
	}
	return g.do(ctx, run)
}

// call runs one driver call of a command, in a span of its own when
// tracing, and counts its failure by kind (the host record's
// drivers[].errors). What a retried command is meant to find (a create
// that made its container before, a remove of one gone) is no failure.
func (w *Worker) call(ctx context.Context, drv driver.Driver, op, id string, f func(context.Context) error) error {
	var err error
	if w.tracer == nil {
		err = f(ctx)
	} else {
		sctx, span := w.tracer.Start(ctx, "driver "+op, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(attribute.String("openagent.driver", drv.Name()), attribute.String("openagent.container.id", id)))
		err = f(sctx)
		events.EndSpan(span, err)
	}
	expected := op == "create" && errors.Is(err, driver.ErrAlreadyExists) || op == "remove" && errors.Is(err, driver.ErrNotFound)
	if err != nil && !expected && ctx.Err() == nil {
		w.countError(drv.Name(), driver.KindOf(err))
	}
	return err
}

// withTraceEnv gives a sandbox (or an exec in it) the trace context of
// the step that makes it, as TRACEPARENT and TRACESTATE, so that what it
// runs can continue the trace; variables the spec sets itself are kept.
func withTraceEnv(ctx context.Context, e events.Event, env map[string]string) map[string]string {
	tp, ts := events.TraceParent(ctx, e)
	if tp == "" {
		return env
	}
	env = maps.Clone(env)
	if env == nil {
		env = map[string]string{}
	}
	if _, set := env["TRACEPARENT"]; !set {
		env["TRACEPARENT"] = tp
		if ts != "" {
			env["TRACESTATE"] = ts
		}
	}
	return env
}

// lifecycleLock serialises one container's creates, starts and removes.
type lifecycleLock struct {
	sync.Mutex
	users int
}

// lockLifecycle takes a container's lifecycle lock; the returned function
// gives it back.
func (w *Worker) lockLifecycle(id string) func() {
	w.mu.Lock()
	l := w.lifecycle[id]
	if l == nil {
		l = &lifecycleLock{}
		w.lifecycle[id] = l
	}
	l.users++
	w.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		w.mu.Lock()
		if l.users--; l.users == 0 {
			delete(w.lifecycle, id)
		}
		w.mu.Unlock()
	}
}

// permanent reports whether a command's error will be the same however
// often it is tried: a driver's refusal of the config, of the operation, or
// of an id it does not know.
func permanent(err error) bool {
	var de *driver.Error
	if errors.As(err, &de) {
		return !de.Retryable
	}
	for _, kind := range []error{driver.ErrInvalid, driver.ErrNotSupported, driver.ErrPermission,
		driver.ErrNotFound, driver.ErrConflict, driver.ErrResourceLimit} {
		if errors.Is(err, kind) {
			return true
		}
	}
	return false
}

// fail publishes a failed event for a command, so that its request ends
// with an outcome.
func (w *Worker) fail(ctx context.Context, e events.Event, cause error) error {
	var c command
	_ = events.Data(e, &c)
	var de *driver.Error
	data := events.FailedData{ContainerID: c.ContainerID, HostID: w.cfg.HostID, Operation: opOf[e.Type()], ExecID: c.ExecID,
		Error: events.Error{Kind: events.ErrorKind(driver.KindOf(cause)), Message: cause.Error(), Retryable: errors.As(cause, &de) && de.Retryable}}
	var ce *driver.ConfigError
	if errors.As(cause, &ce) {
		data.Error.Field = "spec." + ce.Field
	}
	return w.emit(ctx, events.ContainerFailed, c.ContainerID, derive(e.ID(), "failed"), data, &e)
}

func (w *Worker) run(ctx context.Context, e events.Event, c *command) error {
	if e.Type() == events.CommandCreate {
		return w.create(ctx, e, c)
	}
	drv, err := w.driverOf(ctx, c.ContainerID)
	if err != nil {
		if e.Type() == events.CommandRemove && errors.Is(err, driver.ErrNotFound) {
			// Removed already (a redelivered command): say so again; the
			// derived id makes it the same event.
			return w.emit(ctx, events.ContainerRemoved, c.ContainerID, derive(e.ID(), "removed"), events.RemovedData{ContainerID: c.ContainerID, HostID: w.cfg.HostID, Reason: "not on this host"}, &e)
		}
		return err
	}
	w.mu.Lock()
	switch e.Type() {
	case events.CommandStart:
		delete(w.held, c.ContainerID)
		w.restarts[c.ContainerID] = 0
	case events.CommandStop, events.CommandRemove:
		w.held[c.ContainerID] = true
	}
	w.mu.Unlock()
	switch e.Type() {
	case events.CommandStart:
		return w.start(ctx, drv, c.ContainerID, &e)
	case events.CommandStop:
		opts := driver.StopOptions{Timeout: time.Duration(c.TimeoutMs) * time.Millisecond, Force: c.Force}
		if err := w.call(ctx, drv, "stop", c.ContainerID, func(ctx context.Context) error { return drv.Stop(ctx, c.ContainerID, opts) }); err != nil {
			return err
		}
		if c.Reason != "" {
			w.log.Info("worker: stopped a container", "container_id", c.ContainerID, "reason", c.Reason)
		}
		ct, err := drv.Get(ctx, c.ContainerID)
		if err != nil {
			return err
		}
		return w.ended(ctx, ct, &e)
	case events.CommandRemove:
		err := w.call(ctx, drv, "remove", c.ContainerID, func(ctx context.Context) error {
			return drv.Remove(ctx, c.ContainerID, driver.RemoveOptions{Force: c.Force})
		})
		if err != nil && !errors.Is(err, driver.ErrNotFound) {
			return err
		}
		w.mu.Lock()
		delete(w.owner, c.ContainerID)
		w.mu.Unlock()
		if c.Reason != "" {
			w.log.Info("worker: removed a container", "container_id", c.ContainerID, "reason", c.Reason)
		}
		return w.emit(ctx, events.ContainerRemoved, c.ContainerID, derive(e.ID(), "removed"), events.RemovedData{ContainerID: c.ContainerID, HostID: w.cfg.HostID, Reason: c.Reason}, &e)
	case events.CommandExec:
		return w.exec(ctx, drv, &e, c)
	}
	return events.Permanent(errors.New("unknown command " + e.Type()))
}

func (w *Worker) create(ctx context.Context, e events.Event, c *command) error {
	drv, ok := w.drivers[c.Driver]
	if !ok {
		return driver.Errorf("create", c.ContainerID, driver.ErrNotSupported, "host %s has no %s driver", w.cfg.HostID, c.Driver)
	}
	spec := c.Spec
	spec.Labels = maps.Clone(spec.Labels)
	if spec.Labels == nil {
		spec.Labels = map[string]string{}
	}
	spec.Labels[LabelContainerID], spec.Labels[LabelCommandID], spec.Labels[LabelSessionID] = c.ContainerID, e.ID(), spec.SessionID
	// The worker restarts a container by its policy, for every driver:
	// the runtime is told never to, so that each restart is the worker's,
	// and an event.
	if p := spec.RestartPolicy; p == driver.RestartAlways || p == driver.RestartOnFailure {
		spec.Labels[driver.LabelRestart] = string(p)
	}
	spec.RestartPolicy = driver.RestartNo
	// A health check is a liveness probe, acted on by the worker (the
	// Docker engine only reports it).
	if h := spec.HealthCheck; h != nil && (spec.Probes == nil || spec.Probes.Liveness == nil) {
		ps := driver.Probes{}
		if spec.Probes != nil {
			ps = *spec.Probes
		}
		ps.Liveness = &driver.Probe{Exec: h.Command, IntervalMs: h.Interval().Milliseconds(), TimeoutMs: h.Timeout().Milliseconds(), FailureThreshold: h.Retries}
		spec.Probes = &ps
	}
	if ps := spec.Probes; ps != nil {
		for name, p := range map[string]*driver.Probe{"startup": ps.Startup, "liveness": ps.Liveness, "readiness": ps.Readiness} {
			if _, ok := drv.(driver.Addresser); p != nil && len(p.Exec) == 0 && !ok {
				return driver.Errorf("create", c.ContainerID, driver.ErrNotSupported, "spec.probes.%s: the %s driver does not say where a container listens; use an exec probe", name, drv.Name())
			}
		}
		b, _ := json.Marshal(ps)
		spec.Labels[LabelProbes] = string(b)
	}
	var err error
	if spec.Volumes, err = w.resolveMounts(c.ContainerID, spec.Volumes); err != nil {
		return err
	}
	// The fence is read while the runtime makes the container: making one
	// runs nothing, so a refused create only takes back what it made.
	type verdict struct {
		refused bool
		err     error
	}
	fenced := make(chan verdict, 1)
	if w.remembers(c.ContainerID, events.Generation(e)) {
		refused, err := w.admitCommand(ctx, e, c) // no read of the log
		fenced <- verdict{refused, err}
	} else {
		go func() {
			refused, err := w.admitCommand(ctx, e, c)
			fenced <- verdict{refused, err}
		}()
	}
	var ct *driver.Container
	err = w.call(ctx, drv, "create", c.ContainerID, func(ctx context.Context) (err error) {
		spec.Env = withTraceEnv(ctx, e, spec.Env)
		ct, err = drv.Create(ctx, c.ContainerID, spec.WithSecrets())
		return err
	})
	adopted := errors.Is(err, driver.ErrAlreadyExists)
	v := <-fenced
	switch {
	case v.err != nil:
		return &fenceError{v.err} // what was made is adopted when the command comes again
	case v.refused:
		if err == nil {
			_ = drv.Remove(ctx, c.ContainerID, driver.RemoveOptions{Force: true})
		}
		return errRefused
	}
	if adopted {
		// A redelivered create: the first delivery made it. Adopt it.
		ct, err = drv.Get(ctx, c.ContainerID)
	}
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.owner[c.ContainerID] = drv
	w.mu.Unlock()
	if err := w.emit(ctx, events.ContainerCreated, c.ContainerID, derive(e.ID(), "created"), events.CreatedData{
		ContainerID: c.ContainerID, HostID: w.cfg.HostID, Driver: drv.Name(), RuntimeID: ct.RuntimeID, SessionID: ct.SessionID, Image: ct.Image,
	}, &e); err != nil {
		return err
	}
	switch {
	case !c.Start:
		return nil
	case adopted && ct.Status != driver.StatusCreated:
		// The first delivery started it: report that run, never another.
		return w.reportRun(ctx, drv, ct, &e)
	}
	return w.start(ctx, drv, c.ContainerID, &e)
}

func (w *Worker) start(ctx context.Context, drv driver.Driver, id string, cause *events.Event) error {
	if err := w.call(ctx, drv, "start", id, func(ctx context.Context) error { return drv.Start(ctx, id) }); err != nil {
		return err
	}
	ct, err := drv.Get(ctx, id)
	if err != nil {
		return err
	}
	return w.reportRun(ctx, drv, ct, cause)
}

// reportRun publishes a container's run, whose id comes from its start
// time, and then watches it or says how it ended.
func (w *Worker) reportRun(ctx context.Context, drv driver.Driver, ct *driver.Container, cause *events.Event) error {
	w.mu.Lock()
	restarts := w.restarts[ct.ID]
	w.mu.Unlock()
	if err := w.emit(ctx, events.ContainerStarted, ct.ID, derive(ct.ID, "started", ct.StartedAt.UnixNano()),
		events.StartedData{ContainerID: ct.ID, HostID: w.cfg.HostID, StartedAt: ct.StartedAt, Restarts: restarts}, cause); err != nil {
		return err
	}
	if ct.Status == driver.StatusRunning || ct.Status == driver.StatusPaused {
		w.watch(ctx, drv, ct.ID)
		return nil
	}
	return w.ended(ctx, ct, cause) // it ended before the watcher could see it
}

// ended publishes how a container's run ended, if it did. Its id comes
// from the container and the end time: the stop command, the watcher and a
// reconcile all publish the same event.
func (w *Worker) ended(ctx context.Context, ct *driver.Container, cause *events.Event) error {
	switch ct.Status {
	case driver.StatusStopped:
		return w.emit(ctx, events.ContainerStopped, ct.ID, derive(ct.ID, "ended", ct.FinishedAt.UnixNano()),
			events.StoppedData{ContainerID: ct.ID, HostID: w.cfg.HostID, ExitCode: ct.ExitCode, FinishedAt: ct.FinishedAt}, cause)
	case driver.StatusExited:
		reason := "exited"
		if ct.OOMKilled {
			reason = "oom-killed"
		}
		return w.emit(ctx, events.ContainerExited, ct.ID, derive(ct.ID, "ended", ct.FinishedAt.UnixNano()),
			events.ExitedData{ContainerID: ct.ID, HostID: w.cfg.HostID, ExitCode: ct.ExitCode, OOMKilled: ct.OOMKilled, Reason: reason, FinishedAt: ct.FinishedAt}, cause)
	}
	return nil
}

// watchRequest asks the watch loop to follow a running container.
type watchRequest struct {
	drv driver.Driver
	id  string
}

// watch has a running container followed until it ends by itself, by a
// watcher that lives as long as the worker, not as the command.
func (w *Worker) watch(ctx context.Context, drv driver.Driver, id string) {
	w.mu.Lock()
	if w.watching[id] {
		w.mu.Unlock()
		return
	}
	w.watching[id] = true
	w.mu.Unlock()
	select {
	case w.watches <- watchRequest{drv, id}:
	case <-ctx.Done():
		w.mu.Lock()
		delete(w.watching, id)
		w.mu.Unlock()
	}
}

// watchLoop starts the watchers asked for, each for the worker's lifetime
// ctx, and waits for them when it ends.
func (w *Worker) watchLoop(ctx context.Context) error {
	var watchers sync.WaitGroup
	defer watchers.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case r := <-w.watches:
			watchers.Add(1)
			go func() {
				defer watchers.Done()
				// The run's supervisor lasts as long as the run.
				run, stop := context.WithCancel(ctx)
				var supervisor sync.WaitGroup
				if ct, err := r.drv.Get(ctx, r.id); err == nil && ct.Status == driver.StatusRunning {
					if probes := probesOf(ct); probes != nil {
						supervisor.Add(1)
						go func() { defer supervisor.Done(); w.supervise(run, r.drv, ct, probes) }()
					}
				}
				ct := w.awaitEnd(ctx, r.drv, r.id)
				stop()
				supervisor.Wait()
				w.mu.Lock()
				delete(w.watching, r.id)
				w.mu.Unlock()
				if ct != nil {
					w.restart(ctx, r.drv, ct)
				}
			}()
		}
	}
}

// awaitEnd waits for a container to end and reports how it did; it
// returns the container as it ended, nil when it is gone or the wait was
// cut short.
func (w *Worker) awaitEnd(ctx context.Context, drv driver.Driver, id string) *driver.Container {
	_, err := drv.Wait(ctx, id)
	if errors.Is(err, driver.ErrNotFound) {
		w.vanished(ctx, drv, id)
		return nil
	}
	if err != nil {
		return nil
	}
	ct, err := drv.Get(ctx, id)
	if errors.Is(err, driver.ErrNotFound) {
		w.vanished(ctx, drv, id) // removed as it ended: docker rm -f
		return nil
	}
	if err != nil {
		return nil
	}
	for ctx.Err() == nil {
		if err := w.ended(ctx, ct, nil); err == nil {
			return ct
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// Restart policies are the worker's, for every driver. A container that
// exited by itself (not stopped or removed by a command) is started again
// if its policy is always, or on-failure and it failed (a non-zero exit,
// or killed for its memory), after a backoff that doubles with each
// restart in a row up to a cap, and starts again from the first once a
// run lasted restartResetAfter. Each restart is a started event counting
// the restarts.

// DefaultRestartBackoff and DefaultRestartBackoffMax bound the wait
// before a restart (Docker waits 100 ms doubling, Kubernetes 10 s
// doubling to 5 minutes).
const (
	DefaultRestartBackoff    = time.Second
	DefaultRestartBackoffMax = 5 * time.Minute
	restartResetAfter        = 10 * time.Second
)

// restart starts an exited container again if its policy says so.
func (w *Worker) restart(ctx context.Context, drv driver.Driver, ct *driver.Container) {
	policy := driver.RestartPolicy(ct.Labels[driver.LabelRestart])
	w.mu.Lock()
	killed := w.probeKilled[ct.ID] // its probe failed: a failure, though the runtime says stopped
	delete(w.probeKilled, ct.ID)
	w.mu.Unlock()
	failed := ct.ExitCode != 0 || ct.OOMKilled || killed
	if ct.Status != driver.StatusExited && !killed || !(policy == driver.RestartAlways || policy == driver.RestartOnFailure && failed) {
		return
	}
	w.mu.Lock()
	n := w.restarts[ct.ID]
	if ct.FinishedAt.Sub(ct.StartedAt) >= restartResetAfter {
		n = 0
	}
	held := w.held[ct.ID]
	w.mu.Unlock()
	if held {
		return
	}
	wait := w.cfg.RestartBackoff << min(n, 30)
	if wait <= 0 || wait > w.cfg.RestartBackoffMax {
		wait = w.cfg.RestartBackoffMax
	}
	select {
	case <-ctx.Done():
		return
	case <-time.After(wait):
	}
	// A command may have stopped, removed or started it meanwhile.
	now, err := drv.Get(ctx, ct.ID)
	w.mu.Lock()
	held = w.held[ct.ID]
	_, owned := w.owner[ct.ID]
	if err != nil || held || !owned || (now.Status == driver.StatusRunning || now.Status == driver.StatusPaused) || !now.StartedAt.Equal(ct.StartedAt) {
		w.mu.Unlock()
		return
	}
	w.restarts[ct.ID] = n + 1
	w.mu.Unlock()
	w.log.Info("worker: restarting a container by its policy", "container_id", ct.ID, "policy", policy, "exit_code", ct.ExitCode, "restarts", n+1, "after", wait)
	if err := w.start(ctx, drv, ct.ID, nil); err != nil && ctx.Err() == nil {
		w.log.Warn("worker: restart a container", "container_id", ct.ID, "err", err)
	}
}

func (w *Worker) driverOf(ctx context.Context, id string) (driver.Driver, error) {
	w.mu.Lock()
	drv, ok := w.owner[id]
	w.mu.Unlock()
	if ok {
		return drv, nil
	}
	for _, d := range w.cfg.Drivers {
		if _, err := d.Get(ctx, id); err == nil {
			w.mu.Lock()
			w.owner[id] = d
			w.mu.Unlock()
			return d, nil
		}
	}
	return nil, driver.NotFound("find", id)
}

func (w *Worker) exec(ctx context.Context, drv driver.Driver, e *events.Event, c *command) error {
	opts := driver.ExecOptions{Command: c.Command, Env: c.Env, WorkingDir: c.WorkingDir, Timeout: time.Duration(c.TimeoutMs) * time.Millisecond}
	if c.Stdin != "" {
		opts.Stdin = strings.NewReader(c.Stdin)
	}
	var out, errOut *chunker
	if c.StreamTo != "" {
		out = &chunker{w: w, subject: c.StreamTo, stream: "stdout"}
		errOut = &chunker{w: w, subject: c.StreamTo, stream: "stderr"}
		opts.Stdout, opts.Stderr = out, errOut
	}
	var upload *objectWriter
	if c.StdinObject != "" || c.StdoutObject != "" {
		files, err := w.cfg.JS.ObjectStore(ctx, events.BucketFiles)
		if err != nil {
			return err
		}
		if c.StdinObject != "" {
			// Read as the command consumes it; the store checks the
			// object's SHA-256 at its end.
			in, err := files.Get(ctx, c.StdinObject)
			if err != nil {
				return events.Permanent(fmt.Errorf("the exec's input %s: %w", c.StdinObject, err))
			}
			defer in.Close()
			opts.Stdin = in
		}
		if c.StdoutObject != "" {
			upload = newObjectWriter(ctx, files, c.StdoutObject)
			opts.Stdout = upload
		}
	}
	var res *driver.ExecResult
	err := w.call(ctx, drv, "exec", c.ContainerID, func(ctx context.Context) (err error) {
		opts.Env = withTraceEnv(ctx, *e, opts.Env)
		res, err = drv.Exec(ctx, c.ContainerID, opts)
		return err
	})
	var stored *events.ObjectRef
	if upload != nil {
		ref, uerr := upload.finish(err == nil)
		if err == nil && uerr != nil {
			return uerr
		}
		stored = ref
	}
	if err != nil {
		return err
	}
	if out != nil {
		res.Stdout, res.Stderr = out.buf.Bytes(), errOut.buf.Bytes()
	}
	stdout, t1 := clip(res.Stdout)
	stderr, t2 := clip(res.Stderr)
	return w.emit(ctx, events.ExecCompleted, c.ContainerID, derive(e.ID(), "completed"), events.ExecCompletedData{
		ContainerID: c.ContainerID, HostID: w.cfg.HostID, ExecID: c.ExecID, ExitCode: res.ExitCode, Stdout: stdout, Stderr: stderr,
		Truncated: t1 || t2, TimedOut: res.TimedOut, DurationMs: float64(res.Duration.Microseconds()) / 1000, StdoutObject: stored,
	}, e)
}

// objectWriter streams what a command writes into an object of the files
// store, hashing it on the way, in the store's chunks: memory stays
// bounded whatever the size.
type objectWriter struct {
	pw   *io.PipeWriter
	hash hash.Hash
	size uint64
	done chan error
	name string
}

func newObjectWriter(ctx context.Context, store jetstream.ObjectStore, name string) *objectWriter {
	pr, pw := io.Pipe()
	o := &objectWriter{pw: pw, hash: sha256.New(), done: make(chan error, 1), name: name}
	go func() {
		_, err := store.Put(ctx, jetstream.ObjectMeta{Name: name}, pr)
		pr.CloseWithError(err) // the command's writes fail rather than block
		o.done <- err
	}()
	return o
}

func (o *objectWriter) Write(p []byte) (int, error) {
	n, err := o.pw.Write(p)
	o.hash.Write(p[:n])
	o.size += uint64(n)
	return n, err
}

// finish ends the object: complete when the command ran, abandoned when it
// could not.
func (o *objectWriter) finish(complete bool) (*events.ObjectRef, error) {
	if complete {
		o.pw.Close()
	} else {
		o.pw.CloseWithError(errors.New("the command did not run"))
	}
	if err := <-o.done; err != nil {
		return nil, fmt.Errorf("the exec's output %s: %w", o.name, err)
	}
	return &events.ObjectRef{Name: o.name, Size: o.size, SHA256: hex.EncodeToString(o.hash.Sum(nil))}, nil
}

// chunker publishes output as it comes to a subject (core NATS: not
// stored) and keeps it, up to the cap, for the completed event.
type chunker struct {
	w       *Worker
	subject string
	stream  string
	mu      sync.Mutex
	buf     bytes.Buffer
}

// Chunk is one piece of streamed output (events.Chunk).
type Chunk = events.Chunk

func (c *chunker) Write(p []byte) (int, error) {
	c.mu.Lock()
	// What streams is what the result keeps: the first maxOutput bytes,
	// and one more to know that the output went past the cap.
	sent := min(c.buf.Len(), maxOutput)
	if room := maxOutput + 1 - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	part := c.buf.Bytes()[sent:min(c.buf.Len(), maxOutput)]
	b, _ := json.Marshal(Chunk{Stream: c.stream, Data: strings.ToValidUTF8(string(part), "\uFFFD")})
	c.mu.Unlock()
	if len(part) > 0 {
		_ = c.w.cfg.NC.Publish(c.subject, b)
	}
	return len(p), nil
}

// clip caps output at maxOutput bytes on a rune boundary, and replaces
// invalid UTF-8, which JSON cannot carry.
func clip(b []byte) (string, bool) {
	truncated := len(b) > maxOutput
	if truncated {
		b = b[:maxOutput] // a rune cut in two becomes U+FFFD below
	}
	return strings.ToValidUTF8(string(b), "\uFFFD"), truncated
}

// resolveMounts resolves each bind mount's host path on this host, symbolic
// links followed, checks the resolved path against the policy again (the
// orchestrator saw only the path as written), and mounts the resolved path:
// a link made to point elsewhere after this changes nothing mounted.
func (w *Worker) resolveMounts(id string, vols []driver.VolumeMount) ([]driver.VolumeMount, error) {
	out := slices.Clone(vols)
	for i, v := range out {
		if v.Type != "" && v.Type != driver.MountBind {
			continue
		}
		resolved, err := driver.ResolveHostPath(v.Source)
		if err != nil {
			return nil, driver.Errorf("create", id, driver.ErrInvalid, "spec.volumes[%d].source: %v", i, err)
		}
		if why := driver.DeniedHostPath(resolved, w.cfg.Protected); why != "" {
			return nil, driver.Errorf("create", id, driver.ErrPermission, "spec.volumes[%d].source: %s is %s on host %s; mounting it is refused by policy (%s)",
				i, v.Source, resolved, w.cfg.HostID, why)
		}
		out[i].Source = resolved
	}
	return out, nil
}
