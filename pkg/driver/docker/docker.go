// Package docker runs containers on a Docker Engine through its API (with
// version negotiation). Every setting of driver.ContainerConfig is mapped:
// see create and Health for what the engine enforces here. Container names
// derive from container ids (oa-<id>), so a create whose answer was lost
// cannot make a second container: the driver adopts the first. Images are
// never pulled; BuildImages makes the sandbox images from this host's files.
package docker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/client"
	"github.com/docker/docker/errdefs"
	"github.com/docker/go-connections/nat"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Labels the driver puts on everything it makes (see driver.LabelScope).
const (
	LabelContainerID = driver.LabelContainerID
	LabelSessionID   = driver.LabelSessionID
	LabelScope       = driver.LabelScope
	namePrefix       = "oa-"
)

// Config configures a Driver.
type Config struct {
	// StateDir keeps what the engine does not: which runs were stopped on
	// request (the engine reports them as exited).
	StateDir string
	// Scope separates drivers sharing one engine: each sees only the
	// containers, volumes and networks labelled with its scope. Empty, it
	// is the installation's own, kept in StateDir (made on first use), so
	// that two installations on one engine never adopt each other's;
	// without a StateDir it is "default".
	Scope string
	// Host is the engine's address; empty uses DOCKER_HOST or the default
	// socket.
	Host string
}

// Driver is the Docker driver. It is safe for concurrent use.
type Driver struct {
	cli       *client.Client
	cfg       Config
	started   time.Time
	diskQuota bool // the storage driver honours storage-opt size
	storage   string
	mu        sync.Mutex
	stopped   map[string]string // container id → start time of the run Stop ended
}

// New connects to the engine and checks that it answers.
func New(ctx context.Context, cfg Config) (*Driver, error) {
	opts := []client.Opt{client.FromEnv, client.WithAPIVersionNegotiation()}
	if cfg.Host != "" {
		opts = append(opts, client.WithHost(cfg.Host))
	}
	cli, err := client.NewClientWithOpts(opts...)
	if err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	if cfg.StateDir != "" {
		// An older installation has its stopped/ already, and no scope.
		_, statErr := os.Stat(filepath.Join(cfg.StateDir, "stopped"))
		if err := os.MkdirAll(filepath.Join(cfg.StateDir, "stopped"), 0o700); err != nil {
			return nil, fmt.Errorf("docker: %w", err)
		}
		if cfg.Scope == "" {
			var err error
			if cfg.Scope, err = installationScope(cfg.StateDir, statErr == nil); err != nil {
				return nil, err
			}
		}
	}
	if cfg.Scope == "" {
		cfg.Scope = "default"
	}
	info, err := cli.Info(ctx)
	if err != nil {
		cli.Close()
		return nil, driver.Errorf("connect", "", driver.ErrUnavailable, "docker engine: %v", err)
	}
	d := &Driver{cli: cli, cfg: cfg, started: time.Now(), storage: info.Driver, stopped: map[string]string{}}
	// Only these storage drivers can cap a container's writable layer, and
	// overlay2 only on xfs with project quotas.
	switch info.Driver {
	case "btrfs", "zfs", "devicemapper", "windowsfilter":
		d.diskQuota = true
	case "overlay2":
		for _, kv := range info.DriverStatus {
			if kv[0] == "Backing Filesystem" && kv[1] == "xfs" {
				d.diskQuota = true
			}
		}
	}
	return d, nil
}

// installationScope reads the installation's scope from its state
// directory, making one on first use: a state directory from before scopes
// were kept (existed) goes on with "default", whose containers it made.
func installationScope(stateDir string, existed bool) (string, error) {
	path := filepath.Join(stateDir, "scope")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	scope := "default"
	if !existed {
		scope = "inst-" + strings.ToLower(rand.Text()[:12])
	}
	if err := os.WriteFile(path, []byte(scope+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("docker: keep the installation's scope: %w", err)
	}
	return scope, nil
}

// Scope is the scope this driver's objects carry (LabelScope).
func (d *Driver) Scope() string { return d.cfg.Scope }

// Close releases the client.
func (d *Driver) Close() error { return d.cli.Close() }

// Client is the engine client, for tests and benchmarks that compare with
// direct calls.
func (d *Driver) Client() *client.Client { return d.cli }

// Name returns "docker".
func (d *Driver) Name() string { return "docker" }

func name(id string) string { return namePrefix + id }

// kind maps an engine error to a driver error.
func kind(op, id string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	k := driver.ErrUnavailable
	switch {
	case errdefs.IsNotFound(err):
		k = driver.ErrNotFound
	case errdefs.IsConflict(err):
		k = driver.ErrConflict
	case errdefs.IsInvalidParameter(err):
		k = driver.ErrInvalid
	case errdefs.IsForbidden(err), errdefs.IsUnauthorized(err):
		k = driver.ErrPermission
	case errdefs.IsNotImplemented(err):
		k = driver.ErrNotSupported
	case errdefs.IsDeadline(err):
		k = driver.ErrTimeout
	}
	return driver.Errorf(op, id, k, "%v", err)
}

// inspect returns a container this driver made, or ErrNotFound.
func (d *Driver) inspect(ctx context.Context, op, id string) (container.InspectResponse, error) {
	in, err := d.cli.ContainerInspect(ctx, name(id))
	if errdefs.IsNotFound(err) || err == nil && in.Config.Labels[LabelScope] != d.cfg.Scope {
		return in, driver.NotFound(op, id)
	}
	return in, kind(op, id, err)
}

// Create implements driver.Driver.
func (d *Driver) Create(ctx context.Context, id string, c driver.ContainerConfig) (*driver.Container, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Resources.GPUs > 0 {
		return nil, driver.Errorf("create", id, driver.ErrNotSupported, "resources.gpus: the Docker driver does not ask the engine for GPU devices")
	}
	if len(c.Egress) > 0 {
		return nil, driver.Errorf("create", id, driver.ErrNotSupported, "egress: the Docker driver has no per-container egress filter; run the container on a network of the engine's, or on the local driver")
	}
	cfg, host, err := d.mapConfig(id, c)
	if err != nil {
		return nil, err
	}
	_, err = d.cli.ContainerCreate(ctx, cfg, host, nil, nil, name(id))
	switch {
	case errdefs.IsConflict(err):
		return nil, driver.Errorf("create", id, driver.ErrAlreadyExists, "container %s exists", name(id))
	case errdefs.IsNotFound(err):
		return nil, driver.Errorf("create", id, driver.ErrNotFound, "image %q is not on this host (no registry is reached: build it, e.g. make images): %v", c.Image, err)
	case err != nil:
		return nil, kind("create", id, err)
	}
	return d.Get(ctx, id)
}

// mapConfig maps every setting to the engine's.
func (d *Driver) mapConfig(id string, c driver.ContainerConfig) (*container.Config, *container.HostConfig, error) {
	labels := map[string]string{}
	for k, v := range c.Labels {
		labels[k] = v
	}
	labels[LabelContainerID], labels[LabelSessionID], labels[LabelScope] = id, c.SessionID, d.cfg.Scope
	env := make([]string, 0, len(c.Env))
	for k, v := range c.Env {
		env = append(env, k+"="+v)
	}
	sort.Strings(env)
	cfg := &container.Config{Image: c.Image, Cmd: c.Command, Env: env, Labels: labels, User: c.Security.User, WorkingDir: c.WorkingDir}
	pids := c.Resources.Pids
	init := true
	host := &container.HostConfig{
		Resources: container.Resources{
			NanoCPUs:   int64(c.Resources.CPU * 1e9),
			Memory:     c.Resources.MemoryMB << 20,
			MemorySwap: c.Resources.MemoryMB << 20, // no swap
			PidsLimit:  &pids,
		},
		ReadonlyRootfs: c.Security.ReadOnlyRoot,
		CapDrop:        c.Security.CapDrop,
		CapAdd:         c.Security.CapAdd,
		// docker-init as PID 1 reaps zombies and passes signals on.
		Init: &init,
	}
	if c.Security.ReadOnlyRoot {
		host.Tmpfs = map[string]string{"/tmp": "rw,nosuid,nodev,size=64m"}
	}
	if c.Security.NoNewPrivileges {
		host.SecurityOpt = []string{"no-new-privileges:true"}
	}
	if d.diskQuota {
		host.StorageOpt = map[string]string{"size": fmt.Sprintf("%dM", c.Resources.DiskMB)}
	}
	for _, v := range c.Volumes {
		t := mount.TypeBind
		if v.Type == driver.MountVolume {
			t = mount.TypeVolume
		}
		host.Mounts = append(host.Mounts, mount.Mount{Type: t, Source: v.Source, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	switch {
	case c.Network != "":
		host.NetworkMode = container.NetworkMode(c.Network)
	case len(c.Ports) == 0:
		// No network unless one is asked for, as on the local driver: the
		// engine's default bridge reaches the host's addresses, where the
		// control plane listens. Published ports need the bridge.
		host.NetworkMode = "none"
	}
	if len(c.Ports) > 0 {
		cfg.ExposedPorts = nat.PortSet{}
		host.PortBindings = nat.PortMap{}
		for _, p := range c.Ports {
			proto := p.Protocol
			if proto == "" {
				proto = "tcp"
			}
			port := nat.Port(fmt.Sprintf("%d/%s", p.ContainerPort, proto))
			cfg.ExposedPorts[port] = struct{}{}
			hp := ""
			if p.HostPort > 0 {
				hp = fmt.Sprint(p.HostPort)
			}
			host.PortBindings[port] = append(host.PortBindings[port], nat.PortBinding{HostIP: p.HostIP, HostPort: hp})
		}
	}
	switch c.RestartPolicy {
	case driver.RestartAlways:
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyAlways}
	case driver.RestartOnFailure:
		host.RestartPolicy = container.RestartPolicy{Name: container.RestartPolicyOnFailure}
	}
	if h := c.HealthCheck; h != nil {
		cfg.Healthcheck = &container.HealthConfig{Test: append([]string{"CMD"}, h.Command...), Interval: h.Interval(), Timeout: h.Timeout(), Retries: h.Retries}
	}
	return cfg, host, nil
}

// toContainer turns an inspection into the driver's view.
func (d *Driver) toContainer(in container.InspectResponse) *driver.Container {
	labels := map[string]string{}
	for k, v := range in.Config.Labels {
		labels[k] = v
	}
	id := labels[LabelContainerID]
	c := &driver.Container{ID: id, RuntimeID: in.ID, Driver: "docker", SessionID: labels[LabelSessionID], Image: in.Config.Image, Labels: labels}
	c.Config = driver.DefaultConfig()
	c.Config.Image, c.Config.Command, c.Config.SessionID = in.Config.Image, in.Config.Cmd, labels[LabelSessionID]
	c.CreatedAt, _ = time.Parse(time.RFC3339Nano, in.Created)
	st := in.State
	if st == nil {
		return c
	}
	c.StartedAt, _ = time.Parse(time.RFC3339Nano, st.StartedAt)
	c.FinishedAt, _ = time.Parse(time.RFC3339Nano, st.FinishedAt)
	if c.StartedAt.Year() < 2000 {
		c.StartedAt = time.Time{}
	}
	if c.FinishedAt.Year() < 2000 {
		c.FinishedAt = time.Time{}
	}
	c.ExitCode, c.OOMKilled = st.ExitCode, st.OOMKilled
	h := in.HostConfig
	if h != nil {
		c.Config.Resources = driver.Resources{CPU: float64(h.NanoCPUs) / 1e9, MemoryMB: h.Memory >> 20, DiskMB: c.Config.Resources.DiskMB}
		if h.PidsLimit != nil {
			c.Config.Resources.Pids = *h.PidsLimit
		}
		c.Config.Security = driver.Security{ReadOnlyRoot: h.ReadonlyRootfs, User: in.Config.User, CapAdd: h.CapAdd, CapDrop: h.CapDrop}
		for _, o := range h.SecurityOpt {
			if strings.HasPrefix(o, "no-new-privileges") {
				c.Config.Security.NoNewPrivileges = true
			}
		}
		if !h.NetworkMode.IsDefault() {
			c.Config.Network = string(h.NetworkMode)
		}
		for _, m := range h.Mounts {
			t := driver.MountBind
			if m.Type == mount.TypeVolume {
				t = driver.MountVolume
			}
			c.Config.Volumes = append(c.Config.Volumes, driver.VolumeMount{Type: t, Source: m.Source, Target: m.Target, ReadOnly: m.ReadOnly})
		}
	}
	switch st.Status {
	case "created":
		c.Status = driver.StatusCreated
	case "running", "restarting":
		c.Status = driver.StatusRunning
	case "paused":
		c.Status = driver.StatusPaused
	case "exited", "dead", "removing":
		c.Status = driver.StatusExited
		if d.stoppedRun(id) == st.StartedAt {
			c.Status = driver.StatusStopped
		}
	}
	return c
}

// The engine reports a stopped container as exited; the driver remembers
// which run it stopped, by the run's start time, in memory and in its state
// directory so that a restarted worker still knows.
func (d *Driver) markStopped(id, startedAt string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.StateDir != "" {
		_ = os.WriteFile(filepath.Join(d.cfg.StateDir, "stopped", id), []byte(startedAt), 0o600)
	}
	d.stopped[id] = startedAt
}

func (d *Driver) stoppedRun(id string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if v, ok := d.stopped[id]; ok {
		return v
	}
	if d.cfg.StateDir != "" {
		if b, err := os.ReadFile(filepath.Join(d.cfg.StateDir, "stopped", id)); err == nil {
			return string(b)
		}
	}
	return ""
}

func (d *Driver) forgetStopped(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.stopped, id)
	if d.cfg.StateDir != "" {
		_ = os.Remove(filepath.Join(d.cfg.StateDir, "stopped", id))
	}
}

// list returns the engine's containers of this driver's scope.
func (d *Driver) list(ctx context.Context, extra ...filters.KeyValuePair) ([]container.Summary, error) {
	f := filters.NewArgs(append(extra, filters.Arg("label", LabelScope+"="+d.cfg.Scope))...)
	cs, err := d.cli.ContainerList(ctx, container.ListOptions{All: true, Filters: f})
	return cs, kind("list", "", err)
}

// Config returns the driver's configuration.
func (d *Driver) Config() Config { return d.cfg }
