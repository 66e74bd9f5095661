package system_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
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
