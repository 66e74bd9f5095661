package system_test

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

// Sessions on the docker driver: Python in openagent/sandbox:python.
func TestDockerSession(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := docker.New(ctx, docker.Config{StateDir: t.TempDir(), Scope: "test-system"})
	if err != nil {
		if os.Getenv("OPENAGENT_REQUIRE_DOCKER") != "" {
			t.Fatalf("docker engine required: %v", err)
		}
		t.Skipf("no docker engine here: %v", err)
	}
	t.Cleanup(func() { removeAll(d); d.Close() })
	if err := docker.EnsureImages(ctx, d.Client(), nil); err != nil {
		t.Fatal(err)
	}
	drivers := []driver.Driver{d}
	sys, err := system.Start(ctx, system.Config{NATSURL: e.nats.ClientURL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	if err := sys.AddWorker(ctx, worker.Config{HostID: "docker-host", Drivers: drivers, Capacity: api.Resources{CPU: 2, Memory: 4096, Pids: 1000}, Heartbeat: 200 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	e.waitHosts(3)
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "docker", Languages: []string{"python", "sh"}, TimeoutMs: ms(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if s.Image != docker.ImagePython || s.Host != "docker-host" {
		t.Fatalf("session %+v; want the python image on the docker host", s)
	}
	t.Cleanup(func() { e.c.CloseSession(context.Background(), s.ID) })
	res, err := e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print(sum([1,2,3]))"})
	if err != nil || res.Stdout != "6\n" {
		t.Fatalf("python: %+v, %v", res, err)
	}
	res, err = e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "while True: pass", TimeoutMs: 500})
	if err != nil || !res.TimedOut {
		t.Fatalf("endless loop: %+v, %v", res, err)
	}
	if res, err = e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "import os; print(os.getuid())"}); err != nil || res.Stdout != "1000\n" {
		t.Fatalf("after the timeout, as the sandbox user: %+v, %v", res, err)
	}
	if err := e.c.WriteFile(e.ctx, s.ID, "notes/a.txt", []byte("in docker")); err != nil {
		t.Fatal(err)
	}
	if b, err := e.c.ReadFile(e.ctx, s.ID, "notes/a.txt"); err != nil || string(b) != "in docker" {
		t.Fatalf("read back: %q, %v", b, err)
	}
	if _, err := e.c.ReadFile(e.ctx, s.ID, "../../etc/passwd"); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("escape: %v", err)
	}
	// The sandbox has no network: no route, and the host's listener (the
	// control plane's ports would be one) is unreachable on every address.
	probe := hostProbe(t, listenAll(t)) + `
print(open("/proc/net/route").read().count("\n"))`
	res, err = e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: probe, TimeoutMs: 30000})
	if err != nil || strings.Contains(res.Stdout, "reached") || strings.TrimSpace(res.Stdout) != "1" {
		t.Fatalf("from inside a docker session: %+v, %v; want nothing reached and no route", res, err)
	}
}

// The Docker engine's own tools and other installations: a container's
// name is a label docker ps filters on; the images carry the OCI
// annotations; a container whose start failed leaves nothing on the engine
// once removed; one removed with docker rm is reported removed; and two
// installations on one engine each have a scope of their own.
func TestDockerHabits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := docker.New(ctx, docker.Config{StateDir: t.TempDir()})
	if err != nil {
		if os.Getenv("OPENAGENT_REQUIRE_DOCKER") != "" {
			t.Fatalf("docker engine required: %v", err)
		}
		t.Skipf("no docker engine here: %v", err)
	}
	t.Cleanup(func() { removeAll(d); d.Close() })
	other, err := docker.New(ctx, docker.Config{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if d.Scope() == other.Scope() || !strings.HasPrefix(d.Scope(), "inst-") {
		t.Fatalf("two installations have scopes %q and %q; want two of their own", d.Scope(), other.Scope())
	}
	if err := docker.EnsureImages(ctx, d.Client(), nil); err != nil {
		t.Fatal(err)
	}
	img, err := d.Client().ImageInspect(ctx, docker.ImageShell)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []string{"org.opencontainers.image.title", "org.opencontainers.image.version", "org.opencontainers.image.created", "org.opencontainers.image.description"} {
		if img.Config.Labels[l] == "" {
			t.Errorf("image %s has no %s label: %v", docker.ImageShell, l, img.Config.Labels)
		}
	}
	e := newEnvWith(t, system.Config{}, "docker-habits", d)
	spec := driver.DefaultConfig()
	spec.Image, spec.Command = docker.ImageShell, []string{"sleep", "600"}
	c, err := e.c.Create(e.ctx, api.CreateRequest{Name: "web-habits", Driver: "docker", Start: true, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	found, err := d.Client().ContainerList(ctx, container.ListOptions{Filters: filters.NewArgs(filters.Arg("label", driver.LabelName+"=web-habits"))})
	if err != nil || len(found) != 1 {
		t.Fatalf("docker ps --filter label=%s=web-habits: %d found (%v)", driver.LabelName, len(found), err)
	}
	if list, _ := other.List(ctx, driver.Filter{}); len(list) != 0 {
		t.Fatalf("another installation sees %d of this one's containers", len(list))
	}
	// docker rm behind the system's back.
	if err := d.Client().ContainerRemove(ctx, found[0].ID, container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the container removed with docker rm is reported removed", func() bool {
		_, err := e.c.Get(e.ctx, c.ID)
		return errors.Is(err, driver.ErrNotFound)
	})
	// A start that fails (its host port is taken): the container exists on
	// the engine, and rm removes it there too.
	taken, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	bad := driver.DefaultConfig()
	bad.Image, bad.Command = docker.ImageShell, []string{"sleep", "600"}
	bad.Ports = []driver.PortMapping{{ContainerPort: 80, HostPort: taken.Addr().(*net.TCPAddr).Port}}
	failed, err := e.c.Create(e.ctx, api.CreateRequest{Driver: "docker", Start: true, Spec: bad})
	if err == nil && failed.Status == api.StatusRunning {
		t.Fatalf("a container with no program runs: %+v", failed)
	}
	id := failed.ID
	if id == "" {
		var ce *client.Error
		if errors.As(err, &ce) {
			id = ce.ID
		}
	}
	if id == "" {
		t.Fatalf("no id for the failed container: %+v %v", failed, err)
	}
	if err := e.c.Remove(e.ctx, id, true); err != nil {
		t.Fatalf("rm of the failed container: %v", err)
	}
	e.eventually("the failed container is gone from the engine", func() bool {
		list, err := d.Client().ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("label", driver.LabelContainerID+"="+id))})
		return err == nil && len(list) == 0
	})
}
