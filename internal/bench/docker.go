package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

// DockerConfig says what to measure.
type DockerConfig struct {
	Image string
	Runs  int
}

// Steps are the medians of each step of the lifecycle, in milliseconds.
type Steps struct {
	Create    float64 `json:"create_ms"`
	Start     float64 `json:"start_ms"`
	Exec      float64 `json:"exec_ms"`
	Stop      float64 `json:"stop_ms"`
	Remove    float64 `json:"remove_ms"`
	Lifecycle float64 `json:"lifecycle_p50_ms"`
	P99       float64 `json:"lifecycle_p99_ms"`
}

// DockerResult compares the three ways of one run.
type DockerResult struct {
	Image              string  `json:"image"`
	Runs               int     `json:"runs"`
	DirectLifecycleP50 float64 `json:"direct_lifecycle_p50_ms"`
	DriverLifecycleP50 float64 `json:"driver_lifecycle_p50_ms"`
	SystemLifecycleP50 float64 `json:"system_lifecycle_p50_ms"`
	DriverOverDirect   float64 `json:"driver_over_direct"`
	SystemOverDirect   float64 `json:"system_over_direct"`
	Direct             Steps   `json:"direct"`
	Driver             Steps   `json:"driver"`
	System             Steps   `json:"system"`
}

type timings struct{ create, start, exec, stop, remove, total []time.Duration }

func (t *timings) add(steps ...time.Duration) {
	for i, p := range []*[]time.Duration{&t.create, &t.start, &t.exec, &t.stop, &t.remove} {
		*p = append(*p, steps[i])
	}
	var sum time.Duration
	for _, s := range steps {
		sum += s
	}
	t.total = append(t.total, sum)
}

func (t *timings) steps() Steps {
	l := percentiles(t.total)
	return Steps{Create: percentiles(t.create).P50, Start: percentiles(t.start).P50, Exec: percentiles(t.exec).P50,
		Stop: percentiles(t.stop).P50, Remove: percentiles(t.remove).P50, Lifecycle: l.P50, P99: l.P99}
}

// Docker measures create, start, exec true, stop and remove three ways,
// interleaved in one run: direct engine calls, the driver, and the whole
// system (HTTP → orchestrator → worker → engine).
func Docker(ctx context.Context, cfg DockerConfig) (*DockerResult, error) {
	dir, err := os.MkdirTemp("", "openagent-bench-docker-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	d, err := docker.New(ctx, docker.Config{StateDir: dir, Scope: "bench"})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if err := docker.EnsureImages(ctx, d.Client(), nil); err != nil {
		return nil, err
	}
	sys, err := system.Start(ctx, system.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Orchestrator: true})
	if err != nil {
		return nil, err
	}
	defer sys.Stop()
	sd, err := docker.New(ctx, docker.Config{StateDir: dir + "/system", Scope: "bench-system"})
	if err != nil {
		return nil, err
	}
	defer sd.Close()
	if err := sys.AddWorker(ctx, worker.Config{HostID: "bench", Drivers: []driver.Driver{sd}, Capacity: api.Resources{CPU: 64, Memory: 1 << 20, Pids: 1 << 20}}); err != nil {
		return nil, err
	}
	c := client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	for deadline := time.Now().Add(30 * time.Second); ; {
		if hosts, err := c.Hosts(ctx); err == nil && len(hosts) == 1 && hosts[0].Live {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: the worker did not register")
		}
		time.Sleep(50 * time.Millisecond)
	}
	spec := driver.DefaultConfig()
	spec.SessionID, spec.Image, spec.Command = "bench", cfg.Image, []string{"sleep", "3600"}
	var direct, drv, whole timings
	// Names unique to this run: a run that was killed leaves its containers.
	run := time.Now().UnixNano() % 1e9
	for i := range cfg.Runs {
		steps, err := directLifecycle(ctx, d, spec, fmt.Sprintf("bench-direct-%d-%d", run, i))
		if err != nil {
			return nil, fmt.Errorf("direct: %w", err)
		}
		direct.add(steps...)
		if steps, err = driverLifecycle(ctx, d, spec, fmt.Sprintf("bench-driver-%d-%d", run, i)); err != nil {
			return nil, fmt.Errorf("driver: %w", err)
		}
		drv.add(steps...)
		if steps, err = systemLifecycle(ctx, c, spec); err != nil {
			return nil, fmt.Errorf("system: %w", err)
		}
		whole.add(steps...)
	}
	res := &DockerResult{Image: cfg.Image, Runs: cfg.Runs, Direct: direct.steps(), Driver: drv.steps(), System: whole.steps()}
	res.DirectLifecycleP50, res.DriverLifecycleP50, res.SystemLifecycleP50 = res.Direct.Lifecycle, res.Driver.Lifecycle, res.System.Lifecycle
	res.DriverOverDirect = round2(res.DriverLifecycleP50 / res.DirectLifecycleP50)
	res.SystemOverDirect = round2(res.SystemLifecycleP50 / res.DirectLifecycleP50)
	return res, nil
}

func round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }

func timed(steps *[]time.Duration, f func() error) error {
	begin := time.Now()
	err := f()
	*steps = append(*steps, time.Since(begin))
	return err
}

// directLifecycle makes the same container with plain engine calls.
func directLifecycle(ctx context.Context, d *docker.Driver, spec driver.ContainerConfig, name string) ([]time.Duration, error) {
	cli := d.Client()
	pids, init := spec.Resources.Pids, true
	var steps []time.Duration
	var id string
	err := timed(&steps, func() error {
		r, err := cli.ContainerCreate(ctx, &container.Config{Image: spec.Image, Cmd: spec.Command, User: spec.Security.User},
			&container.HostConfig{Init: &init, ReadonlyRootfs: true, Tmpfs: map[string]string{"/tmp": "rw,nosuid,nodev,size=64m"},
				CapDrop: []string{"ALL"}, SecurityOpt: []string{"no-new-privileges:true"},
				Resources: container.Resources{NanoCPUs: int64(spec.Resources.CPU * 1e9), Memory: spec.Resources.MemoryMB << 20,
					MemorySwap: spec.Resources.MemoryMB << 20, PidsLimit: &pids}}, nil, nil, name)
		id = r.ID
		return err
	})
	if err == nil {
		err = timed(&steps, func() error { return cli.ContainerStart(ctx, id, container.StartOptions{}) })
	}
	if err == nil {
		err = timed(&steps, func() error {
			ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: []string{"true"}, AttachStdout: true, AttachStderr: true})
			if err != nil {
				return err
			}
			att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
			if err != nil {
				return err
			}
			defer att.Close()
			buf := make([]byte, 4096)
			for {
				if _, err := att.Reader.Read(buf); err != nil {
					break
				}
			}
			for {
				in, err := cli.ContainerExecInspect(ctx, ex.ID)
				if err != nil || !in.Running {
					return err
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	if err == nil {
		timeout := 10
		err = timed(&steps, func() error { return cli.ContainerStop(ctx, id, container.StopOptions{Timeout: &timeout}) })
	}
	if err == nil {
		err = timed(&steps, func() error { return cli.ContainerRemove(ctx, id, container.RemoveOptions{}) })
	}
	return steps, err
}

func driverLifecycle(ctx context.Context, d *docker.Driver, spec driver.ContainerConfig, id string) ([]time.Duration, error) {
	var steps []time.Duration
	err := timed(&steps, func() error { _, err := d.Create(ctx, id, spec); return err })
	if err == nil {
		err = timed(&steps, func() error { return d.Start(ctx, id) })
	}
	if err == nil {
		err = timed(&steps, func() error {
			_, err := d.Exec(ctx, id, driver.ExecOptions{Command: []string{"true"}})
			return err
		})
	}
	if err == nil {
		err = timed(&steps, func() error { return d.Stop(ctx, id, driver.StopOptions{}) })
	}
	if err == nil {
		err = timed(&steps, func() error { return d.Remove(ctx, id, driver.RemoveOptions{}) })
	}
	return steps, err
}

func systemLifecycle(ctx context.Context, c *client.Client, spec driver.ContainerConfig) ([]time.Duration, error) {
	var steps []time.Duration
	var id string
	err := timed(&steps, func() error {
		ct, err := c.Create(ctx, api.CreateRequest{Driver: "docker", Spec: spec})
		if err == nil {
			id = ct.ID
		}
		return err
	})
	if err == nil {
		err = timed(&steps, func() error { _, err := c.Start(ctx, id); return err })
	}
	if err == nil {
		err = timed(&steps, func() error { _, err := c.Exec(ctx, id, api.ExecRequest{Command: []string{"true"}}); return err })
	}
	if err == nil {
		err = timed(&steps, func() error { _, err := c.Stop(ctx, id, 0, false); return err })
	}
	if err == nil {
		err = timed(&steps, func() error { return c.Remove(ctx, id, false) })
	}
	return steps, err
}
