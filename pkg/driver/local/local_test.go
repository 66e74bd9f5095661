package local_test

import (
	"context"
	"os"
	"testing"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/drivertest"
	"github.com/openagent/orchestrator/pkg/driver/local"
)

func TestMain(m *testing.M) {
	local.MaybeRunShim()
	os.Exit(m.Run())
}

// newDriver returns a driver on a fresh root that containers running as
// other users can traverse (t.TempDir's are private to root).
func newDriver(t *testing.T) *local.Driver {
	t.Helper()
	root, err := os.MkdirTemp("", "openagent-local-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	d, err := local.New(root)
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-in first-out: the bridges and filters go before
	// the root does.
	t.Cleanup(func() {
		if err := d.Teardown(context.Background()); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return d
}

func config(p drivertest.Program) driver.ContainerConfig {
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "suite", local.Image, drivertest.ShellCommand(p)
	return cfg
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New:     func(t *testing.T) driver.Driver { return newDriver(t) },
		Config:  config,
		Command: drivertest.ShellCommand,
		Shell:   true,
	})
}
