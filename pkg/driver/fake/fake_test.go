package fake_test

import (
	"strconv"
	"testing"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/drivertest"
	"github.com/openagent/orchestrator/pkg/driver/fake"
)

// command expresses a suite program in the fake's program language.
func command(p drivertest.Program) []string {
	cmd := []string{"fake"}
	for _, l := range p.Stdout {
		cmd = append(cmd, "--stdout", l)
	}
	for _, l := range p.Stderr {
		cmd = append(cmd, "--stderr", l)
	}
	if p.Cat {
		cmd = append(cmd, "--cat")
	}
	if p.IgnoreTERM {
		cmd = append(cmd, "--ignore-term")
	}
	if p.Sleep > 0 {
		cmd = append(cmd, "--sleep", p.Sleep.String())
	}
	for _, l := range p.Later {
		cmd = append(cmd, "--later", l)
	}
	if p.Forever {
		cmd = append(cmd, "--forever")
	}
	return append(cmd, "--exit", strconv.Itoa(p.ExitCode))
}

func TestConformance(t *testing.T) {
	drivertest.Run(t, drivertest.Harness{
		New: func(t *testing.T) driver.Driver { return fake.New() },
		Config: func(p drivertest.Program) driver.ContainerConfig {
			cfg := driver.DefaultConfig()
			cfg.SessionID, cfg.Image, cfg.Command = "suite", "fake", command(p)
			return cfg
		},
		Command: command,
	})
}
