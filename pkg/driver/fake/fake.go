// Package fake is a real, in-memory driver for tests and benchmarks: its
// containers are goroutines that play a scripted program (see program.go),
// and a hook can delay or fail any operation. It passes the conformance
// suite, so code tested against it behaves the same on a real runtime.
package fake

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Hook is called before every operation with its name ("create", "start",
// "stop", "remove", "exec", ...) and the container id; it may sleep to
// simulate a slow runtime, and an error it returns fails the operation.
type Hook func(ctx context.Context, op, id string) error

// Option configures a Driver.
type Option func(*Driver)

// WithHook installs a hook; see Hook.
func WithHook(h Hook) Option { return func(d *Driver) { d.hook = h } }

// Driver is the fake driver. It is safe for concurrent use.
type Driver struct {
	hook    Hook
	started time.Time

	mu         sync.Mutex
	containers map[string]*container
	volumes    map[string]*driver.Volume
	networks   map[string]*driver.Network
}

type container struct {
	c    driver.Container
	prog program
	logs []driver.LogEntry
	// changed is closed and replaced whenever logs grow or the status
	// changes, waking followers and waiters.
	changed chan struct{}
	sig     chan signal   // to the running process; nil when not running
	exited  chan struct{} // closed when the running process ended
	stopped bool          // the current run was ended by Stop
}

// New returns an empty fake driver.
func New(opts ...Option) *Driver {
	d := &Driver{started: time.Now(), containers: map[string]*container{}, volumes: map[string]*driver.Volume{}, networks: map[string]*driver.Network{}}
	for _, o := range opts {
		o(d)
	}
	return d
}

// Name returns "fake".
func (d *Driver) Name() string { return "fake" }

func (d *Driver) before(ctx context.Context, op, id string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if d.hook != nil {
		if err := d.hook(ctx, op, id); err != nil {
			return err
		}
	}
	return nil
}

// lookup returns a container; d.mu must be held.
func (d *Driver) lookup(op, id string) (*container, error) {
	c, ok := d.containers[id]
	if !ok {
		return nil, driver.NotFound(op, id)
	}
	return c, nil
}

func (c *container) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func snapshot(c *container) *driver.Container {
	out := c.c
	out.Labels = maps.Clone(c.c.Labels)
	return &out
}

// Create implements driver.Driver.
func (d *Driver) Create(ctx context.Context, id string, cfg driver.ContainerConfig) (*driver.Container, error) {
	if err := d.before(ctx, "create", id); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prog, err := parseProgram(cfg.Command)
	if err != nil {
		return nil, driver.Errorf("create", id, driver.ErrInvalid, "command: %v", err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.containers[id]; ok {
		return nil, driver.Errorf("create", id, driver.ErrAlreadyExists, "container %q exists", id)
	}
	for i, v := range cfg.Volumes {
		if v.Type == driver.MountVolume && d.volumes[v.Source] == nil {
			return nil, driver.Errorf("create", id, driver.ErrNotFound, "volumes[%d]: no volume %q", i, v.Source)
		}
	}
	if cfg.Network != "" && d.networks[cfg.Network] == nil {
		return nil, driver.Errorf("create", id, driver.ErrNotFound, "network: no network %q", cfg.Network)
	}
	c := &container{prog: prog, changed: make(chan struct{}), c: driver.Container{
		ID: id, RuntimeID: "fake-" + id, Driver: "fake", SessionID: cfg.SessionID, Image: cfg.Image,
		Labels: maps.Clone(cfg.Labels), Status: driver.StatusCreated, Config: cfg, CreatedAt: time.Now(),
	}}
	d.containers[id] = c
	return snapshot(c), nil
}

// Start implements driver.Driver.
func (d *Driver) Start(ctx context.Context, id string) error {
	if err := d.before(ctx, "start", id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.lookup("start", id)
	if err != nil {
		return err
	}
	if c.c.Status == driver.StatusRunning || c.c.Status == driver.StatusPaused {
		return nil
	}
	sig, exited := make(chan signal, 2), make(chan struct{})
	c.sig, c.exited, c.stopped = sig, exited, false
	c.c.Status, c.c.StartedAt, c.c.FinishedAt, c.c.ExitCode = driver.StatusRunning, time.Now(), time.Time{}, 0
	c.notify()
	go func() {
		code := c.prog.run(context.Background(), nil, sig, func(s driver.Stream, line string) {
			d.mu.Lock()
			c.logs = append(c.logs, driver.LogEntry{Stream: s, Time: time.Now(), Line: line})
			c.notify()
			d.mu.Unlock()
		})
		d.mu.Lock()
		defer d.mu.Unlock()
		c.c.Status = driver.StatusExited
		if c.stopped {
			c.c.Status = driver.StatusStopped
		}
		c.c.ExitCode, c.c.FinishedAt = code, time.Now()
		c.sig = nil
		close(exited)
		c.notify()
	}()
	return nil
}

// Stop implements driver.Driver.
func (d *Driver) Stop(ctx context.Context, id string, opts driver.StopOptions) error {
	if err := d.before(ctx, "stop", id); err != nil {
		return err
	}
	d.mu.Lock()
	c, err := d.lookup("stop", id)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	if c.sig == nil {
		d.mu.Unlock()
		return nil
	}
	sig, exited := c.sig, c.exited
	c.stopped = true
	d.mu.Unlock()
	return stopProcess(ctx, sig, exited, opts.GracePeriod())
}

func stopProcess(ctx context.Context, sig chan<- signal, exited <-chan struct{}, grace time.Duration) error {
	send := func(s signal) {
		select {
		case sig <- s:
		default: // signals already pending; the process will see them
		}
	}
	if grace > 0 {
		send(sigTerm)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case <-exited:
			return nil
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	send(sigKill)
	select {
	case <-exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Remove implements driver.Driver.
func (d *Driver) Remove(ctx context.Context, id string, opts driver.RemoveOptions) error {
	if err := d.before(ctx, "remove", id); err != nil {
		return err
	}
	d.mu.Lock()
	c, err := d.lookup("remove", id)
	if err != nil {
		d.mu.Unlock()
		return err
	}
	if c.sig != nil {
		if !opts.Force {
			d.mu.Unlock()
			return driver.Errorf("remove", id, driver.ErrConflict, "container is %s; stop it or force", c.c.Status)
		}
		sig, exited := c.sig, c.exited
		c.stopped = true
		d.mu.Unlock()
		if err := stopProcess(ctx, sig, exited, 0); err != nil {
			return err
		}
		d.mu.Lock()
	}
	delete(d.containers, id)
	c.notify()
	d.mu.Unlock()
	return nil
}

// Get implements driver.Driver.
func (d *Driver) Get(ctx context.Context, id string) (*driver.Container, error) {
	if err := d.before(ctx, "get", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.lookup("get", id)
	if err != nil {
		return nil, err
	}
	return snapshot(c), nil
}

// List implements driver.Driver.
func (d *Driver) List(ctx context.Context, f driver.Filter) ([]*driver.Container, error) {
	if err := d.before(ctx, "list", ""); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*driver.Container
	for _, c := range d.containers {
		if f.Match(&c.c) {
			out = append(out, snapshot(c))
		}
	}
	slices.SortFunc(out, func(a, b *driver.Container) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Logs implements driver.Driver.
func (d *Driver) Logs(ctx context.Context, id string, opts driver.LogOptions) (iter.Seq2[driver.LogEntry, error], error) {
	if err := d.before(ctx, "logs", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	c, err := d.lookup("logs", id)
	if err != nil {
		d.mu.Unlock()
		return nil, err
	}
	// Select the backlog now, so that Tail counts what existed at the call.
	var start int
	for start < len(c.logs) && c.logs[start].Time.Before(opts.Since) {
		start++
	}
	if opts.Tail > 0 && len(c.logs)-start > opts.Tail {
		start = len(c.logs) - opts.Tail
	}
	d.mu.Unlock()
	return func(yield func(driver.LogEntry, error) bool) {
		next := start
		for {
			d.mu.Lock()
			batch := slices.Clone(c.logs[next:])
			next = len(c.logs)
			running := c.sig != nil && d.containers[id] == c
			changed := c.changed
			d.mu.Unlock()
			for _, e := range batch {
				if !opts.Timestamps {
					e.Time = time.Time{}
				}
				if !yield(e, nil) {
					return
				}
			}
			if !opts.Follow || (!running && len(batch) == 0) {
				return
			}
			if !running {
				continue // drain what the last run wrote before it ended
			}
			select {
			case <-changed:
			case <-ctx.Done():
				yield(driver.LogEntry{}, ctx.Err())
				return
			}
		}
	}, nil
}

// Exec implements driver.Driver.
func (d *Driver) Exec(ctx context.Context, id string, opts driver.ExecOptions) (*driver.ExecResult, error) {
	if err := d.before(ctx, "exec", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	c, err := d.lookup("exec", id)
	var status driver.Status
	if err == nil {
		status = c.c.Status
	}
	d.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if status != driver.StatusRunning {
		return nil, driver.Errorf("exec", id, driver.ErrConflict, "container is %s, not running", status)
	}
	prog, err := parseProgram(opts.Command)
	if err != nil {
		return nil, driver.Errorf("exec", id, driver.ErrInvalid, "command: %v", err)
	}
	return runExec(ctx, prog, opts), nil
}

func runExec(ctx context.Context, prog program, opts driver.ExecOptions) *driver.ExecResult {
	var stdout, stderr bytes.Buffer
	outW, errW := io.Writer(&stdout), io.Writer(&stderr)
	if opts.Stdout != nil {
		outW = opts.Stdout
	}
	if opts.Stderr != nil {
		errW = opts.Stderr
	}
	sig := make(chan signal, 1)
	timedOut := make(chan struct{})
	if opts.Timeout > 0 {
		t := time.AfterFunc(opts.Timeout, func() { close(timedOut); sig <- sigKill })
		defer t.Stop()
	}
	begin := time.Now()
	code := prog.run(ctx, opts.Stdin, sig, func(s driver.Stream, line string) {
		w := outW
		if s == driver.Stderr {
			w = errW
		}
		fmt.Fprintln(w, line)
	})
	res := &driver.ExecResult{ExitCode: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(begin)}
	select {
	case <-timedOut:
		res.TimedOut, res.ExitCode = true, -1
	default:
	}
	return res
}

// Wait implements driver.Driver.
func (d *Driver) Wait(ctx context.Context, id string) (*driver.ExitStatus, error) {
	if err := d.before(ctx, "wait", id); err != nil {
		return nil, err
	}
	for {
		d.mu.Lock()
		c, err := d.lookup("wait", id)
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		st, changed := c.c, c.changed
		d.mu.Unlock()
		if st.Status == driver.StatusExited || st.Status == driver.StatusStopped {
			reason := "exited"
			if st.Status == driver.StatusStopped {
				reason = "stopped"
			}
			return &driver.ExitStatus{ExitCode: st.ExitCode, Reason: reason, FinishedAt: st.FinishedAt}, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Stats implements driver.Driver. A fake process uses one pid and a
// megabyte of memory.
func (d *Driver) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	if err := d.before(ctx, "stats", id); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.lookup("stats", id)
	if err != nil {
		return nil, err
	}
	st := &driver.Stats{Time: time.Now(), MemoryLimitBytes: uint64(c.c.Config.Resources.MemoryMB) << 20}
	if c.sig != nil {
		st.Pids, st.MemoryBytes, st.CPUPercent = 1, 1<<20, c.prog.cpu*100
		if c.prog.memoryMB > 0 {
			st.MemoryBytes = uint64(c.prog.memoryMB) << 20
		}
	}
	return st, nil
}

// Pause implements driver.Pauser.
func (d *Driver) Pause(ctx context.Context, id string) error {
	return d.setPaused(ctx, "pause", id, true)
}

// Resume implements driver.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	return d.setPaused(ctx, "resume", id, false)
}

func (d *Driver) setPaused(ctx context.Context, op, id string, paused bool) error {
	if err := d.before(ctx, op, id); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	c, err := d.lookup(op, id)
	if err != nil {
		return err
	}
	from, to := driver.StatusRunning, driver.StatusPaused
	if !paused {
		from, to = to, from
	}
	if c.c.Status != from {
		return driver.Errorf(op, id, driver.ErrConflict, "container is %s, not %s", c.c.Status, from)
	}
	c.c.Status = to
	c.notify()
	return nil
}

// Health implements driver.Driver. The fake enforces nothing: it says so.
func (d *Driver) Health(ctx context.Context) (*driver.Health, error) {
	if err := d.before(ctx, "health", ""); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	h := &driver.Health{Status: "ok", Version: "fake-1", Uptime: time.Since(d.started), Containers: len(d.containers)}
	for _, c := range d.containers {
		if c.sig != nil {
			h.Running++
		}
	}
	for _, s := range driver.Settings {
		h.Enforcement = append(h.Enforcement, driver.Enforcement{Setting: s, How: "fake driver: nothing runs, nothing is enforced"})
	}
	return h, nil
}

// ContainerHealth implements driver.Driver by playing the check's program.
func (d *Driver) ContainerHealth(ctx context.Context, id string) (driver.HealthStatus, error) {
	d.mu.Lock()
	c, err := d.lookup("health", id)
	var check *driver.HealthCheck
	var status driver.Status
	if err == nil {
		check, status = c.c.Config.HealthCheck, c.c.Status
	}
	d.mu.Unlock()
	if err != nil {
		return "", err
	}
	if check == nil {
		return driver.HealthNone, nil
	}
	if status != driver.StatusRunning {
		return driver.HealthUnhealthy, nil
	}
	res, err := d.Exec(ctx, id, driver.ExecOptions{Command: check.Command, Timeout: check.Timeout()})
	if err != nil {
		return "", err
	}
	if res.ExitCode == 0 {
		return driver.HealthHealthy, nil
	}
	return driver.HealthUnhealthy, nil
}

// Address implements driver.Addresser: a fake container is in the
// worker's process, so it listens where the test's listeners do.
func (d *Driver) Address(ctx context.Context, id string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, err := d.lookup("address", id); err != nil {
		return "", err
	}
	return "127.0.0.1", nil
}
