package docker_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/driver/drivertest"
)

// newDriver connects to the engine, building the sandbox images if they are
// missing. Without an engine the tests skip, unless
// OPENAGENT_REQUIRE_DOCKER is set (as CI does): then they fail.
func newDriver(t testing.TB) *docker.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := docker.New(ctx, docker.Config{StateDir: t.TempDir(), Scope: "test-" + t.Name()})
	if err != nil {
		if os.Getenv("OPENAGENT_REQUIRE_DOCKER") != "" {
			t.Fatalf("docker engine required (OPENAGENT_REQUIRE_DOCKER is set): %v", err)
		}
		t.Skipf("no docker engine here (%v); set OPENAGENT_REQUIRE_DOCKER to make this a failure", err)
	}
	t.Cleanup(func() { d.Close() })
	if err := docker.EnsureImages(ctx, d.Client(), nil); err != nil {
		t.Fatalf("build sandbox images: %v", err)
	}
	return d
}

func config(p drivertest.Program) driver.ContainerConfig {
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "suite", docker.ImageShell, drivertest.ShellCommand(p)
	return cfg
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New:     func(t *testing.T) driver.Driver { return newDriver(t) },
		Config:  config,
		Command: drivertest.ShellCommand,
		Slow:    3,
		Shell:   true,
	})
}

// newDriverLike is a second driver with the first's scope and state, as a
// restarted worker has.
func newDriverLike(t *testing.T, d *docker.Driver) *docker.Driver {
	t.Helper()
	again, err := docker.New(context.Background(), d.Config())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	return again
}
