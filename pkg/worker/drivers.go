package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/driver/local"
)

// Drivers makes the named drivers; local keeps its state in
// dataDir/local, docker in dataDir/docker. "auto" is local and fake, and
// docker when an engine answers.
func Drivers(ctx context.Context, dataDir string, names []string) ([]driver.Driver, error) {
	var out []driver.Driver
	for _, n := range names {
		switch n {
		case "auto":
			more, err := Drivers(ctx, dataDir, []string{"local", "fake"})
			if err != nil {
				return nil, err
			}
			out = append(out, more...)
			if d, err := newDocker(ctx, dataDir); err == nil {
				out = append(out, d)
			}
		case "fake":
			out = append(out, fake.New())
		case "local":
			if dataDir == "" {
				return nil, errors.New("system: the local driver needs a data directory")
			}
			d, err := local.New(filepath.Join(dataDir, "local"))
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		case "docker":
			d, err := newDocker(ctx, dataDir)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		default:
			return nil, fmt.Errorf("system: unknown driver %q (have auto, local, fake, docker)", n)
		}
	}
	return out, nil
}

func newDocker(ctx context.Context, dataDir string) (driver.Driver, error) {
	cfg := docker.Config{}
	if dataDir != "" {
		cfg.StateDir = filepath.Join(dataDir, "docker")
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return docker.New(dctx, cfg)
}

// MachineCapacity is this machine's cpu cores, memory and a pids budget.
func MachineCapacity() api.Resources {
	mem := int64(1024)
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				mem = kb / 1024
			}
		}
	}
	return api.Resources{CPU: float64(runtime.NumCPU()), Memory: mem, Pids: 32768}
}

// HostID turns a hostname into a host id: a subject token.
func HostID(hostname string) string {
	var b strings.Builder
	for _, r := range hostname {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "host"
	}
	return b.String()
}
