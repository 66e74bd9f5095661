// Package local runs containers as supervised host processes.
//
// A container is a directory (see state.go) and, while it runs, a process
// tree supervised by a shim that outlives the worker (see shim.go). The only
// image is "host": the host's own filesystem. As root the driver confines
// each container with cgroups (v2, or v1 where that is what the machine
// has) for memory, cpu and pids, a mount namespace for a read-only root,
// volumes and a private /tmp, an empty or reduced capability bounding set,
// no_new_privs and a non-root user. Without root it falls back to rlimits,
// and refuses what it cannot do. Health lists, setting by setting, what is
// enforced on this machine and how, or why not.
package local

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Image is the one image the local driver runs: the host's filesystem.
const Image = "host"

// Driver is the local driver. It keeps no state in memory: everything is in
// its root directory, so a new Driver on the same root (a restarted worker)
// knows every container the last one made.
type Driver struct {
	root    string
	started time.Time
	locks   [64]sync.Mutex

	netMu      sync.Mutex // networks' addresses and the filter table
	dockerOnce sync.Once
}

// New returns a driver keeping its state under root, which it creates.
func New(root string) (*Driver, error) {
	for _, sub := range []string{"containers", "volumes", "networks"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o711); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	// Containers run as other users and must reach their work directories.
	for _, p := range []string{root, filepath.Join(root, "containers"), filepath.Join(root, "volumes")} {
		if err := os.Chmod(p, 0o711); err != nil {
			return nil, fmt.Errorf("local: %w", err)
		}
	}
	return &Driver{root: root, started: time.Now()}, nil
}

// Name returns "local".
func (d *Driver) Name() string { return "local" }

// Root returns the directory the driver keeps its state in.
func (d *Driver) Root() string { return d.root }

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (d *Driver) dir(id string) string { return filepath.Join(d.root, "containers", id) }

// lock serialises lifecycle operations on one container.
func (d *Driver) lock(id string) func() {
	h := fnv.New32a()
	h.Write([]byte(id))
	m := &d.locks[h.Sum32()%uint32(len(d.locks))]
	m.Lock()
	return m.Unlock
}

func (d *Driver) load(op, id string) (*snapshot, error) {
	if !validName.MatchString(id) {
		return nil, driver.NotFound(op, id)
	}
	s, err := loadSnapshot(d.dir(id))
	if errors.Is(err, os.ErrNotExist) {
		return nil, driver.NotFound(op, id)
	}
	if err != nil {
		return nil, driver.Errorf(op, id, driver.ErrUnavailable, "read state: %v", err)
	}
	return s, nil
}

func isRoot() bool { return os.Geteuid() == 0 }

// Create implements driver.Driver.
func (d *Driver) Create(ctx context.Context, id string, cfg driver.ContainerConfig) (*driver.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !validName.MatchString(id) {
		return nil, driver.Errorf("create", id, driver.ErrInvalid, "id must be letters, digits, '.', '_' or '-'")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	uid, gid, err := d.admit(&cfg)
	if err != nil {
		return nil, &driver.Error{Op: "create", ContainerID: id, Kind: kindOf(err), Err: err}
	}
	defer d.lock(id)()
	dir := d.dir(id)
	if _, err := os.Stat(filepath.Join(dir, metaFile)); errors.Is(err, os.ErrNotExist) {
		// The state is written last: a directory without it is what a
		// create interrupted by a crash left. It never ran; make it anew.
		_ = os.RemoveAll(dir)
	}
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, driver.Errorf("create", id, driver.ErrAlreadyExists, "container %q exists", id)
		}
		return nil, driver.Errorf("create", id, driver.ErrUnavailable, "%v", err)
	}
	m := meta{UID: uid, GID: gid, Container: driver.Container{
		ID: id, Driver: "local", SessionID: cfg.SessionID, Image: cfg.Image, Labels: cfg.Labels,
		Config: cfg, CreatedAt: time.Now().UTC(),
	}}
	if err := d.prepare(dir, &m); err != nil {
		_ = os.RemoveAll(dir)
		return nil, driver.Errorf("create", id, driver.ErrUnavailable, "%v", err)
	}
	c := m.Container
	c.Status = driver.StatusCreated
	return &c, nil
}

// configError is a refusal of a config, with its kind.
type configError struct {
	kind error
	msg  string
}

func (e *configError) Error() string { return e.msg }

// MinCPU is the smallest cpu limit the local driver sets: the kernel
// refuses a CFS quota under 1 ms per period.
const MinCPU = 0.01

func refuse(kind error, format string, args ...any) error {
	return &configError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

func kindOf(err error) error {
	var ce *configError
	if errors.As(err, &ce) {
		return ce.kind
	}
	return driver.ErrInvalid
}

// admit refuses what this driver cannot honour on this machine, and
// resolves the user.
func (d *Driver) admit(cfg *driver.ContainerConfig) (uid, gid int, err error) {
	if cfg.Image != Image {
		return 0, 0, refuse(driver.ErrNotSupported, "image: the local driver runs only %q (the host's filesystem), not %q", Image, cfg.Image)
	}
	if len(cfg.Command) == 0 {
		return 0, 0, refuse(driver.ErrInvalid, "command: the host image has no default command; give one")
	}
	if cfg.Resources.CPU < MinCPU {
		return 0, 0, &driver.ConfigError{Field: "resources.cpu", Message: fmt.Sprintf(
			"the local driver's smallest cpu quota is %g cores (the kernel's 1 ms per 100 ms period), got %g", MinCPU, cfg.Resources.CPU)}
	}
	if len(cfg.Ports) > 0 {
		return 0, 0, refuse(driver.ErrNotSupported, "ports: local containers share the host's network; listen on the port directly")
	}
	if cfg.Resources.GPUs > 0 {
		return 0, 0, refuse(driver.ErrNotSupported, "resources.gpus: the local driver gives no GPU devices to containers")
	}
	if cfg.RestartPolicy != "" && cfg.RestartPolicy != driver.RestartNo {
		return 0, 0, refuse(driver.ErrNotSupported, "restartPolicy: the local driver never restarts a container by itself")
	}
	if cfg.WorkingDir != "" {
		if st, err := os.Stat(cfg.WorkingDir); err != nil || !st.IsDir() {
			return 0, 0, refuse(driver.ErrInvalid, "workingDir: %s is not a directory on the host", cfg.WorkingDir)
		}
	}
	if _, err := keptCapabilities(cfg.Security); err != nil {
		return 0, 0, refuse(driver.ErrInvalid, "%v", err)
	}
	uid, gid = os.Getuid(), os.Getgid()
	if cfg.Security.User != "" {
		if uid, gid, err = resolveUser(cfg.Security.User); err != nil {
			return 0, 0, refuse(driver.ErrInvalid, "%v", err)
		}
	}
	if isRoot() && uid != 0 {
		if dir := untraversable(d.root); dir != "" {
			return 0, 0, refuse(driver.ErrPermission, "security.user: the container's user %d cannot reach the driver's directory: %s is not searchable by others (chmod o+x it, or keep the driver's state elsewhere, e.g. /var/lib)", uid, dir)
		}
	}
	if !isRoot() {
		switch {
		case uid != os.Getuid():
			return 0, 0, refuse(driver.ErrPermission, "security.user: running as uid %d, the local driver cannot run containers as %q; run the worker as root or set the user to %d", os.Getuid(), cfg.Security.User, os.Getuid())
		case len(cfg.Volumes) > 0:
			return 0, 0, refuse(driver.ErrPermission, "volumes: mounting needs root")
		case len(cfg.Security.CapAdd) > 0:
			return 0, 0, refuse(driver.ErrPermission, "security.capAdd: granting capabilities needs root")
		}
	} else if len(cfg.Security.CapAdd) > 0 && uid != 0 {
		return 0, 0, refuse(driver.ErrNotSupported, "security.capAdd: the local driver grants added capabilities only to a root user")
	}
	for i, v := range cfg.Volumes {
		if v.Type == driver.MountVolume {
			if _, err := os.Stat(volumeData(d.root, v.Source)); err != nil {
				return 0, 0, refuse(driver.ErrNotFound, "volumes[%d]: no volume %q", i, v.Source)
			}
		} else if _, err := os.Stat(v.Source); err != nil {
			return 0, 0, refuse(driver.ErrInvalid, "volumes[%d].source: %v", i, err)
		}
	}
	if cfg.Network != "" && cfg.Network != NetworkNone {
		if _, err := os.Stat(d.networkFile(cfg.Network)); err != nil || strings.HasPrefix(cfg.Network, "_") {
			return 0, 0, refuse(driver.ErrNotFound, "network: no network %q", cfg.Network)
		}
	}
	if _, ok := networked(cfg); ok {
		field := "network"
		if cfg.Network == "" {
			field = "egress"
		}
		if missing := networkTools(); missing != "" {
			return 0, 0, refuse(driver.ErrNotSupported, "%s: %s", field, missing)
		}
	}
	for i, r := range cfg.Egress {
		if p, _ := r.Prefix(); !p.Addr().Is4() {
			return 0, 0, refuse(driver.ErrNotSupported, "egress[%d].to: the local driver's networks are IPv4 only, got %s", i, r.To)
		}
	}
	return uid, gid, nil
}

// untraversable returns the first directory on the way to path that other
// users cannot search, "" if there is none.
func untraversable(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return path
	}
	for p := abs; ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o001 == 0 {
			return p
		}
		if p == "/" {
			return ""
		}
	}
}

// prepare lays out a new container's directory.
func (d *Driver) prepare(dir string, m *meta) error {
	work, tmp := filepath.Join(dir, workDir), filepath.Join(dir, tmpDir)
	if err := os.Mkdir(work, 0o700); err != nil {
		return err
	}
	if err := os.Chown(work, m.UID, m.GID); err != nil && isRoot() {
		return err
	}
	if err := os.Mkdir(tmp, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o1777); err != nil {
		return err
	}
	// Mount points must exist before the root turns read-only. Those under
	// /tmp are made inside the private tmp by the init stage.
	for _, v := range m.Container.Config.Volumes {
		t := filepath.Clean(v.Target)
		if strings.HasPrefix(t, "/tmp/") {
			continue
		}
		top := t
		for p := t; p != "/"; p = filepath.Dir(p) {
			if _, err := os.Stat(p); err == nil {
				break
			}
			top = p
		}
		if _, err := os.Stat(t); err == nil {
			continue
		}
		if err := os.MkdirAll(t, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", t, err)
		}
		m.MadeDirs = append(m.MadeDirs, top)
	}
	return writeJSON(filepath.Join(dir, metaFile), m)
}

// Start implements driver.Driver.
func (d *Driver) Start(ctx context.Context, id string) error {
	defer d.lock(id)()
	s, err := d.load("start", id)
	if err != nil {
		return err
	}
	if c := s.container(); c.Status == driver.StatusRunning || c.Status == driver.StatusPaused {
		return nil
	}
	run := 1
	if s.run != nil {
		run = s.run.Run + 1
	}
	_ = os.Remove(filepath.Join(s.dir, stopFile))
	cfg := s.container().Config
	if err := d.attach(id, s.dir, &cfg); err != nil {
		return driver.Errorf("start", id, driver.ErrUnavailable, "%v", err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return driver.Errorf("start", id, driver.ErrUnavailable, "%v", err)
	}
	defer readyR.Close()
	cmd := selfCommand("launch", envDir+"="+s.dir, envRun+"="+fmt.Sprint(run))
	cmd.ExtraFiles = []*os.File{readyW}
	err = cmd.Run()
	readyW.Close()
	if err != nil {
		return driver.Errorf("start", id, driver.ErrUnavailable, "launch shim: %v", err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = readyR.SetReadDeadline(deadline)
	msg, err := io.ReadAll(readyR)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return driver.Errorf("start", id, driver.ErrTimeout, "shim did not report: %v", err)
	}
	if len(msg) == 0 {
		return driver.Errorf("start", id, driver.ErrUnavailable, "the shim never answered: the program using the local driver must call local.MaybeRunShim first thing in main (tests: in TestMain)")
	}
	if reply := string(msg); reply != "ok" {
		reply = strings.TrimPrefix(reply, "error: ")
		kind := driver.ErrUnavailable
		if strings.HasPrefix(reply, "command") || strings.HasPrefix(reply, "working dir") {
			kind = driver.ErrInvalid
		}
		return driver.Errorf("start", id, kind, "%s", reply)
	}
	return nil
}

// waitExit waits until the given run ended; false if ctx ended first.
func (d *Driver) waitExit(ctx context.Context, dir string, run int) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := loadSnapshot(dir)
		if err != nil {
			return err
		}
		if s.run == nil || s.run.Run != run || s.container().Status != driver.StatusRunning && s.container().Status != driver.StatusPaused {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Stop implements driver.Driver.
func (d *Driver) Stop(ctx context.Context, id string, opts driver.StopOptions) error {
	defer d.lock(id)()
	return d.stop(ctx, id, opts)
}

func (d *Driver) stop(ctx context.Context, id string, opts driver.StopOptions) error {
	s, err := d.load("stop", id)
	if err != nil {
		return err
	}
	st := s.container().Status
	if st != driver.StatusRunning && st != driver.StatusPaused {
		return nil
	}
	r := s.run
	if err := markStop(s.dir, r.Run); err != nil {
		return driver.Errorf("stop", id, driver.ErrUnavailable, "%v", err)
	}
	if st == driver.StatusPaused {
		d.thaw(s)
	}
	if grace := opts.GracePeriod(); grace > 0 {
		if err := signalRun(r, syscall.SIGTERM); err != nil {
			return driver.Errorf("stop", id, driver.ErrPermission, "%v", err)
		}
		gctx, cancel := context.WithTimeout(ctx, grace)
		err := d.waitExit(gctx, s.dir, r.Run)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	_ = signalRun(r, syscall.SIGKILL)
	if r.Cgroup != nil {
		r.Cgroup.killAll()
	}
	return d.waitExit(ctx, s.dir, r.Run)
}

// Remove implements driver.Driver.
func (d *Driver) Remove(ctx context.Context, id string, opts driver.RemoveOptions) error {
	defer d.lock(id)()
	s, err := d.load("remove", id)
	if err != nil {
		return err
	}
	if st := s.container().Status; st == driver.StatusRunning || st == driver.StatusPaused {
		if !opts.Force {
			return driver.Errorf("remove", id, driver.ErrConflict, "container is %s; stop it or force", st)
		}
		if err := d.stop(ctx, id, driver.StopOptions{Force: true}); err != nil {
			return err
		}
	}
	for _, p := range s.meta.MadeDirs {
		_ = os.Remove(p) // only if still empty
	}
	if err := d.detach(s.dir); err != nil {
		return driver.Errorf("remove", id, driver.ErrUnavailable, "network: %v", err)
	}
	if err := os.RemoveAll(s.dir); err != nil {
		return driver.Errorf("remove", id, driver.ErrUnavailable, "%v", err)
	}
	return nil
}

// Get implements driver.Driver.
func (d *Driver) Get(ctx context.Context, id string) (*driver.Container, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s, err := d.load("get", id)
	if err != nil {
		return nil, err
	}
	return s.container(), nil
}

// List implements driver.Driver.
func (d *Driver) List(ctx context.Context, f driver.Filter) ([]*driver.Container, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "containers"))
	if err != nil {
		return nil, driver.Errorf("list", "", driver.ErrUnavailable, "%v", err)
	}
	var out []*driver.Container
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, err := loadSnapshot(filepath.Join(d.root, "containers", e.Name()))
		if err != nil {
			continue // being created or removed
		}
		if c := s.container(); f.Match(c) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *driver.Container) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Reattach implements driver.Reattacher. Running containers never depended
// on the worker: their shims kept them and their logs; this only reports.
func (d *Driver) Reattach(ctx context.Context) ([]*driver.Container, error) {
	return d.List(ctx, driver.Filter{})
}

// Wait implements driver.Driver.
func (d *Driver) Wait(ctx context.Context, id string) (*driver.ExitStatus, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s, err := d.load("wait", id)
		if err != nil {
			return nil, err
		}
		c := s.container()
		if c.Status == driver.StatusExited || c.Status == driver.StatusStopped {
			st := &driver.ExitStatus{ExitCode: c.ExitCode, OOMKilled: c.OOMKilled, FinishedAt: c.FinishedAt, Reason: "lost"}
			if s.exit != nil {
				st.Reason = s.exit.Reason
			}
			return st, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Pause implements driver.Pauser: the cgroup freezer where there is one,
// SIGSTOP to the process group otherwise.
func (d *Driver) Pause(ctx context.Context, id string) error {
	defer d.lock(id)()
	s, err := d.load("pause", id)
	if err != nil {
		return err
	}
	if st := s.container().Status; st != driver.StatusRunning {
		return driver.Errorf("pause", id, driver.ErrConflict, "container is %s, not running", st)
	}
	froze := false
	if s.run.Cgroup != nil {
		if froze, err = s.run.Cgroup.freeze(true); err != nil {
			return driver.Errorf("pause", id, driver.ErrUnavailable, "%v", err)
		}
	}
	if !froze {
		if err := signalRun(s.run, syscall.SIGSTOP); err != nil {
			return driver.Errorf("pause", id, driver.ErrPermission, "%v", err)
		}
	}
	return os.WriteFile(filepath.Join(s.dir, pausedFile), nil, 0o644)
}

// Resume implements driver.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	defer d.lock(id)()
	s, err := d.load("resume", id)
	if err != nil {
		return err
	}
	if st := s.container().Status; st != driver.StatusPaused {
		return driver.Errorf("resume", id, driver.ErrConflict, "container is %s, not paused", st)
	}
	d.thaw(s)
	return os.Remove(filepath.Join(s.dir, pausedFile))
}

func (d *Driver) thaw(s *snapshot) {
	if s.run.Cgroup != nil {
		if ok, _ := s.run.Cgroup.freeze(false); ok {
			return
		}
	}
	_ = signalRun(s.run, syscall.SIGCONT)
}
