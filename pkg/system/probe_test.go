package system_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

func (e *env) verdicts(id string) []events.HealthData {
	e.t.Helper()
	var out []events.HealthData
	for _, ev := range e.eventsOf(id, events.ContainerHealth) {
		var d events.HealthData
		if err := events.Data(ev, &d); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func (e *env) probed(probes *driver.Probes, restart driver.RestartPolicy) *api.Container {
	e.t.Helper()
	req := fakeSpec("--forever")
	req.Start, req.Spec.Probes, req.Spec.RestartPolicy = true, probes, restart
	c, err := e.c.Create(e.ctx, req)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := net.LookupPort("tcp", p)
	return n
}

// The worker runs a container's probes. Readiness (tcp here) makes it
// ready when the port answers and unready when it stops; the API shows it.
func TestReadinessProbe(t *testing.T) {
	e := restartEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	c := e.probed(&driver.Probes{Readiness: &driver.Probe{TCP: &driver.TCPCheck{Port: port(t, addr)}, IntervalMs: 100, FailureThreshold: 2}}, "")
	e.eventually("ready", func() bool { got, _ := e.c.Get(e.ctx, c.ID); return got.Ready && got.Health == events.HealthReady })
	ln.Close()
	e.eventually("unready once the port is closed", func() bool { got, _ := e.c.Get(e.ctx, c.ID); return !got.Ready && got.Health == events.HealthUnready })
	if got, _ := e.c.Get(e.ctx, c.ID); got.Status != api.StatusRunning {
		t.Fatalf("an unready container is %s; readiness must not kill it", got.Status)
	}
	// A container without a readiness probe is ready while it runs.
	plain := e.probed(nil, "")
	if got, _ := e.c.Get(e.ctx, plain.ID); !got.Ready {
		t.Fatalf("a running container without probes is not ready: %+v", got)
	}
}

// A liveness probe (http here) that fails its threshold kills the run,
// with an unhealthy verdict, and the restart policy starts it again.
func TestLivenessProbeRestarts(t *testing.T) {
	e := restartEnv(t)
	var failing atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		if failing.Load() {
			http.Error(w, "sick", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	probe := &driver.Probe{HTTP: &driver.HTTPGet{Port: port(t, srv.Listener.Addr().String()), Path: "/healthz"}, IntervalMs: 100, FailureThreshold: 2}
	c := e.probed(&driver.Probes{Liveness: probe}, driver.RestartOnFailure)
	time.Sleep(500 * time.Millisecond)
	if len(e.verdicts(c.ID)) != 0 || len(e.started(c.ID)) != 1 {
		t.Fatalf("a passing liveness probe: verdicts %v, runs %d", e.verdicts(c.ID), len(e.started(c.ID)))
	}
	failing.Store(true)
	e.eventually("an unhealthy verdict and a restart", func() bool {
		got, _ := e.c.Get(e.ctx, c.ID)
		return got != nil && got.Restarts >= 1 && len(e.started(c.ID)) >= 2
	})
	v := e.verdicts(c.ID)
	if len(v) == 0 || v[0].Probe != "liveness" || v[0].Status != events.HealthUnhealthy || v[0].Failures != 2 {
		t.Fatalf("verdicts %+v; want liveness unhealthy after 2 failures", v)
	}
	failing.Store(false)
	e.waitStatus(c.ID, api.StatusRunning)
}

// A startup probe gates the others; passing, it says started; failing its
// threshold, it kills the run, which a policy of no leaves stopped.
func TestStartupProbe(t *testing.T) {
	e := restartEnv(t)
	ok := e.probed(&driver.Probes{Startup: &driver.Probe{Exec: []string{"fake", "--exit", "0"}, IntervalMs: 100}}, "")
	e.eventually("started", func() bool { got, _ := e.c.Get(e.ctx, ok.ID); return got.Health == events.HealthStarted })
	bad := e.probed(&driver.Probes{Startup: &driver.Probe{Exec: []string{"fake", "--exit", "1"}, IntervalMs: 100, FailureThreshold: 2},
		Readiness: &driver.Probe{Exec: []string{"fake", "--exit", "0"}, IntervalMs: 100}}, driver.RestartNo)
	e.eventually("killed for its startup probe", func() bool {
		got, _ := e.c.Get(e.ctx, bad.ID)
		return got.Status != api.StatusRunning
	})
	v := e.verdicts(bad.ID)
	if len(v) != 1 || v[0].Probe != "startup" || v[0].Status != events.HealthUnhealthy {
		t.Fatalf("verdicts %+v; want one, startup unhealthy (readiness never ran)", v)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(e.started(bad.ID)); n != 1 {
		t.Fatalf("restart policy no: %d runs", n)
	}
}

// A probe is checked when the container is created: exactly one of exec,
// http and tcp, a port in range.
func TestProbeConfigRefused(t *testing.T) {
	e := restartEnv(t)
	for _, p := range []*driver.Probe{{}, {Exec: []string{"true"}, TCP: &driver.TCPCheck{Port: 80}}, {TCP: &driver.TCPCheck{Port: 70000}}} {
		req := fakeSpec("--forever")
		req.Spec.Probes = &driver.Probes{Liveness: p}
		if _, err := e.c.Create(e.ctx, req); err == nil {
			t.Fatalf("probe %+v accepted", p)
		}
	}
}
