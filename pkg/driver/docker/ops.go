package docker

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Start implements driver.Driver.
func (d *Driver) Start(ctx context.Context, id string) error {
	in, err := d.inspect(ctx, "start", id)
	if err != nil {
		return err
	}
	if in.State.Running || in.State.Paused {
		return nil
	}
	return startError(id, d.cli.ContainerStart(ctx, name(id), container.StartOptions{}))
}

// startError maps the engine's answer to a start. The engine says 500 to a
// start that the container's own config dooms (its program, its user, a
// host port taken, a mount): those are refusals that trying again does not
// change, not an engine that is unavailable.
func startError(id string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg := err.Error()
	for _, s := range []string{"port is already allocated", "address already in use"} {
		if strings.Contains(msg, s) {
			return driver.Errorf("start", id, driver.ErrConflict, "%v", err)
		}
	}
	for _, s := range []string{"OCI runtime create failed", "executable file not found", "unable to find user", "exec format error", "invalid mount"} {
		if strings.Contains(msg, s) {
			return driver.Errorf("start", id, driver.ErrInvalid, "%v", err)
		}
	}
	return kind("start", id, err)
}

// Stop implements driver.Driver. The engine counts the grace period in
// whole seconds: it is rounded up.
func (d *Driver) Stop(ctx context.Context, id string, opts driver.StopOptions) error {
	in, err := d.inspect(ctx, "stop", id)
	if err != nil {
		return err
	}
	if !in.State.Running && !in.State.Paused {
		return nil
	}
	secs := int(math.Ceil(opts.GracePeriod().Seconds()))
	d.markStopped(id, in.State.StartedAt)
	if err := d.cli.ContainerStop(ctx, name(id), container.StopOptions{Timeout: &secs}); err != nil {
		return kind("stop", id, err)
	}
	return nil
}

// Remove implements driver.Driver.
func (d *Driver) Remove(ctx context.Context, id string, opts driver.RemoveOptions) error {
	in, err := d.inspect(ctx, "remove", id)
	if err != nil {
		return err
	}
	if (in.State.Running || in.State.Paused) && !opts.Force {
		return driver.Errorf("remove", id, driver.ErrConflict, "container is running; stop it or force")
	}
	if err := d.cli.ContainerRemove(ctx, name(id), container.RemoveOptions{Force: opts.Force}); err != nil {
		return kind("remove", id, err)
	}
	d.forgetStopped(id)
	return nil
}

// Get implements driver.Driver.
func (d *Driver) Get(ctx context.Context, id string) (*driver.Container, error) {
	in, err := d.inspect(ctx, "get", id)
	if err != nil {
		return nil, err
	}
	return d.toContainer(in), nil
}

// List implements driver.Driver.
func (d *Driver) List(ctx context.Context, f driver.Filter) ([]*driver.Container, error) {
	var extra []filters.KeyValuePair
	if f.SessionID != "" {
		extra = append(extra, filters.Arg("label", LabelSessionID+"="+f.SessionID))
	}
	for k, v := range f.Labels {
		extra = append(extra, filters.Arg("label", k+"="+v))
	}
	cs, err := d.list(ctx, extra...)
	if err != nil {
		return nil, err
	}
	var out []*driver.Container
	for _, s := range cs {
		in, err := d.cli.ContainerInspect(ctx, s.ID)
		if err != nil {
			continue // removed meanwhile
		}
		if c := d.toContainer(in); f.Match(c) {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b *driver.Container) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Reattach implements driver.Reattacher: the engine kept the containers
// running; this lists them.
func (d *Driver) Reattach(ctx context.Context) ([]*driver.Container, error) {
	return d.List(ctx, driver.Filter{})
}

// Wait implements driver.Driver.
func (d *Driver) Wait(ctx context.Context, id string) (*driver.ExitStatus, error) {
	in, err := d.inspect(ctx, "wait", id)
	if err != nil {
		return nil, err
	}
	if in.State.Status != "exited" && in.State.Status != "dead" {
		cond := container.WaitConditionNotRunning
		if in.State.Status == "created" {
			cond = container.WaitConditionNextExit
		}
		okc, errc := d.cli.ContainerWait(ctx, name(id), cond)
		select {
		case <-okc:
		case err := <-errc:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, kind("wait", id, err)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := d.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	st := &driver.ExitStatus{ExitCode: c.ExitCode, OOMKilled: c.OOMKilled, FinishedAt: c.FinishedAt, Reason: "exited"}
	switch {
	case c.OOMKilled:
		st.Reason = "oom-killed"
	case c.Status == driver.StatusStopped:
		st.Reason = "stopped"
	}
	return st, nil
}

// Pause implements driver.Pauser.
func (d *Driver) Pause(ctx context.Context, id string) error {
	in, err := d.inspect(ctx, "pause", id)
	if err != nil {
		return err
	}
	if !in.State.Running || in.State.Paused {
		return driver.Errorf("pause", id, driver.ErrConflict, "container is %s, not running", in.State.Status)
	}
	return kind("pause", id, d.cli.ContainerPause(ctx, name(id)))
}

// Resume implements driver.Pauser.
func (d *Driver) Resume(ctx context.Context, id string) error {
	in, err := d.inspect(ctx, "resume", id)
	if err != nil {
		return err
	}
	if !in.State.Paused {
		return driver.Errorf("resume", id, driver.ErrConflict, "container is %s, not paused", in.State.Status)
	}
	return kind("resume", id, d.cli.ContainerUnpause(ctx, name(id)))
}

// Stats implements driver.Driver: the engine samples twice, a second apart,
// for the CPU percentage.
func (d *Driver) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	if _, err := d.inspect(ctx, "stats", id); err != nil {
		return nil, err
	}
	r, err := d.cli.ContainerStats(ctx, name(id), false)
	if err != nil {
		return nil, kind("stats", id, err)
	}
	defer r.Body.Close()
	var s container.StatsResponse
	if err := jsonDecode(r.Body, &s); err != nil {
		return nil, driver.Errorf("stats", id, driver.ErrUnavailable, "%v", err)
	}
	out := &driver.Stats{Time: time.Now(), MemoryBytes: s.MemoryStats.Usage, MemoryLimitBytes: s.MemoryStats.Limit, Pids: s.PidsStats.Current}
	if cache, ok := s.MemoryStats.Stats["cache"]; ok && cache < out.MemoryBytes {
		out.MemoryBytes -= cache
	}
	cpu := float64(s.CPUStats.CPUUsage.TotalUsage) - float64(s.PreCPUStats.CPUUsage.TotalUsage)
	sys := float64(s.CPUStats.SystemUsage) - float64(s.PreCPUStats.SystemUsage)
	if cpu > 0 && sys > 0 {
		cpus := float64(s.CPUStats.OnlineCPUs)
		if cpus == 0 {
			cpus = float64(len(s.CPUStats.CPUUsage.PercpuUsage))
		}
		out.CPUPercent = cpu / sys * cpus * 100
	}
	return out, nil
}

// ContainerHealth implements driver.Driver: the engine's HEALTHCHECK
// status where the container has one.
func (d *Driver) ContainerHealth(ctx context.Context, id string) (driver.HealthStatus, error) {
	in, err := d.inspect(ctx, "health", id)
	if err != nil {
		return "", err
	}
	if in.State.Health == nil || in.Config.Healthcheck == nil {
		return driver.HealthNone, nil
	}
	if !in.State.Running {
		return driver.HealthUnhealthy, nil
	}
	switch in.State.Health.Status {
	case "healthy":
		return driver.HealthHealthy, nil
	case "unhealthy":
		return driver.HealthUnhealthy, nil
	}
	// Starting: run the probe now rather than wait for the interval.
	res, err := d.Exec(ctx, id, driver.ExecOptions{Command: in.Config.Healthcheck.Test[1:], Timeout: 10 * time.Second})
	if err != nil {
		return driver.HealthStarting, nil
	}
	if res.ExitCode == 0 {
		return driver.HealthHealthy, nil
	}
	return driver.HealthUnhealthy, nil
}

// Address implements driver.Addresser: the container's address on the
// first of its networks that gives it one. A container on no network
// (none, the default) has none, and takes exec probes only.
func (d *Driver) Address(ctx context.Context, id string) (string, error) {
	in, err := d.inspect(ctx, "address", id)
	if err != nil {
		return "", err
	}
	if in.NetworkSettings != nil {
		for _, n := range in.NetworkSettings.Networks {
			if n != nil && n.IPAddress != "" {
				return n.IPAddress, nil
			}
		}
	}
	mode := ""
	if in.HostConfig != nil {
		mode = string(in.HostConfig.NetworkMode)
	}
	return "", driver.Errorf("address", id, driver.ErrNotSupported, "the container has no network address (network %q); http and tcp probes need one", mode)
}
