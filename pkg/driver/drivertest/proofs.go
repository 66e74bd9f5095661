package drivertest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Enforcement proofs: for each setting a driver's Health says it
// enforces, a container that tries to break it, and fails. They are
// written once, here, and run for every driver whose containers have a
// POSIX shell (Harness.Shell), for the settings it claims; a driver that
// says a setting is not enforced is not held to it.
var proofs = []struct {
	setting string
	name    string
	fn      func(*suite, *testing.T)
}{
	{"resources.memoryMB", "MemoryLimitOOMKills", (*suite).proveOOM},
	{"resources.pids", "PidsLimitStopsForkBomb", (*suite).provePids},
	{"security.readOnlyRoot", "RootIsReadOnly", (*suite).proveReadOnlyRoot},
	{"security.user", "RunsAsTheUser", (*suite).proveUser},
}

// runProofs runs the proofs of the settings the driver enforces.
func (s *suite) runProofs(t *testing.T) {
	h, err := s.d.Health(s.ctx(t))
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	enforced := map[string]bool{}
	for _, e := range h.Enforcement {
		enforced[e.Setting] = e.Enforced
	}
	for _, p := range proofs {
		if enforced[p.setting] {
			t.Run("Enforces/"+p.name, func(t *testing.T) { p.fn(s, t) })
		}
	}
}

// shell starts a container whose main process runs script.
func (s *suite) shell(t *testing.T, script string, mutate ...func(*driver.ContainerConfig)) string {
	t.Helper()
	return s.start(t, forever, append([]func(*driver.ContainerConfig){func(c *driver.ContainerConfig) {
		c.Command = []string{"/bin/sh", "-c", script}
	}}, mutate...)...)
}

// execSh runs script in a running container.
func (s *suite) execSh(t *testing.T, id, script string) *driver.ExecResult {
	t.Helper()
	res, err := s.d.Exec(s.ctx(t), id, driver.ExecOptions{Command: []string{"/bin/sh", "-c", script}, Timeout: s.wait(20 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func (s *suite) proveOOM(t *testing.T) {
	id := s.shell(t, "tail /dev/zero; echo survived", func(c *driver.ContainerConfig) { c.Resources.MemoryMB = 64 })
	st, err := s.d.Wait(s.ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if !st.OOMKilled || st.Reason != "oom-killed" {
		t.Fatalf("exit %+v; want reported as OOM-killed under a 64 MB limit", st)
	}
	if c := s.get(t, id); !c.OOMKilled {
		t.Fatal("the container does not say it was OOM-killed")
	}
}

func (s *suite) provePids(t *testing.T) {
	id := s.shell(t, "i=0; while [ $i -lt 300 ]; do sleep 60 & i=$((i+1)); echo $i; done; sleep 60",
		func(c *driver.ContainerConfig) { c.Resources.Pids = 30 })
	st, err := s.d.Wait(s.ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	seq, err := s.d.Logs(s.ctx(t), id, driver.LogOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var last, stderr string
	for e, err := range seq {
		if err != nil {
			t.Fatal(err)
		}
		if e.Stream == driver.Stderr {
			stderr += e.Line + "\n"
		} else {
			last = e.Line
		}
	}
	// The shell dies when it cannot fork, and the container with it.
	if n, _ := strconv.Atoi(last); !strings.Contains(stderr, "fork") || n >= 30 || n < 20 || st.ExitCode == 0 {
		t.Fatalf("spawned up to %s, exit %d, stderr %q; want forks refused just under the limit of 30", last, st.ExitCode, stderr)
	}
}

func (s *suite) proveReadOnlyRoot(t *testing.T) {
	id := s.shell(t, "exec sleep 600")
	if res := s.execSh(t, id, "touch /etc/openagent-probe 2>&1 || echo refused"); !strings.Contains(string(res.Stdout), "refused") {
		t.Fatalf("writing /etc: stdout %q stderr %q; want it refused", res.Stdout, res.Stderr)
	}
	if res := s.execSh(t, id, "touch /tmp/probe && echo ok"); !strings.Contains(string(res.Stdout), "ok") {
		t.Fatalf("writing /tmp: stdout %q stderr %q; want it writable", res.Stdout, res.Stderr)
	}
}

func (s *suite) proveUser(t *testing.T) {
	id := s.shell(t, "exec sleep 600")
	uid, _, _ := strings.Cut(driver.DefaultUser, ":")
	if res := s.execSh(t, id, "id -u"); strings.TrimSpace(string(res.Stdout)) != uid {
		t.Fatalf("id -u: %q; want the default user's %s", res.Stdout, uid)
	}
}
