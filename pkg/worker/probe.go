package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Probes. A container's probes ride on it as a label (the JSON of its
// spec's probes), so that a worker that restarts supervises what it
// adopts. While a run lasts, a supervisor runs them: the startup probe
// until it passes, then liveness and readiness, each on its interval.
// What changes a verdict is a container.health event about the run. A
// startup or liveness probe that fails its threshold in a row kills the
// run, which counts as a failure for the restart policy.

// LabelProbes carries a container's probes.
const LabelProbes = "io.openagent.probes"

// probesOf reads a container's probes from its label; nil when it has none.
func probesOf(ct *driver.Container) *driver.Probes {
	raw := ct.Labels[LabelProbes]
	if raw == "" {
		return nil
	}
	var p driver.Probes
	if json.Unmarshal([]byte(raw), &p) != nil {
		return nil
	}
	return &p
}

// supervise runs a run's probes until ctx ends (the run ended, or the
// worker stops).
func (w *Worker) supervise(ctx context.Context, drv driver.Driver, ct *driver.Container, probes *driver.Probes) {
	if p := probes.Startup; p != nil {
		if !w.startup(ctx, drv, ct, p) {
			return
		}
	}
	var wg sync.WaitGroup
	if p := probes.Liveness; p != nil {
		wg.Add(1)
		go func() { defer wg.Done(); w.liveness(ctx, drv, ct, p) }()
	}
	if p := probes.Readiness; p != nil {
		wg.Add(1)
		go func() { defer wg.Done(); w.readiness(ctx, drv, ct, p) }()
	}
	wg.Wait()
}

// startup checks until the probe passes (true) or fails its threshold in
// a row, which kills the run (false).
func (w *Worker) startup(ctx context.Context, drv driver.Driver, ct *driver.Container, p *driver.Probe) bool {
	if !sleep(ctx, p.Delay()) {
		return false
	}
	for failures := 0; ; {
		err := w.check(ctx, drv, ct.ID, p)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			w.verdict(ctx, ct, "startup", events.HealthStarted, "", 0)
			return true
		}
		if failures++; failures >= p.Threshold() {
			w.unhealthy(ctx, drv, ct, "startup", err, failures)
			return false
		}
		if !sleep(ctx, p.Interval()) {
			return false
		}
	}
}

func (w *Worker) liveness(ctx context.Context, drv driver.Driver, ct *driver.Container, p *driver.Probe) {
	if !sleep(ctx, p.Delay()) {
		return
	}
	for failures := 0; ; {
		err := w.check(ctx, drv, ct.ID, p)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			failures = 0
		case failures+1 >= p.Threshold():
			w.unhealthy(ctx, drv, ct, "liveness", err, failures+1)
			return
		default:
			failures++
		}
		if !sleep(ctx, p.Interval()) {
			return
		}
	}
}

// readiness says when the run becomes ready (its first pass, or a pass
// after it was unready) and unready (its threshold of failures in a row).
func (w *Worker) readiness(ctx context.Context, drv driver.Driver, ct *driver.Container, p *driver.Probe) {
	if !sleep(ctx, p.Delay()) {
		return
	}
	ready := false
	for failures := 0; ; {
		err := w.check(ctx, drv, ct.ID, p)
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			failures = 0
			if !ready {
				ready = true
				w.verdict(ctx, ct, "readiness", events.HealthReady, "", 0)
			}
		default:
			if failures++; failures >= p.Threshold() && ready {
				ready = false
				w.verdict(ctx, ct, "readiness", events.HealthUnready, err.Error(), failures)
			}
		}
		if !sleep(ctx, p.Interval()) {
			return
		}
	}
}

// unhealthy reports a failed startup or liveness probe and kills the run.
func (w *Worker) unhealthy(ctx context.Context, drv driver.Driver, ct *driver.Container, probe string, cause error, failures int) {
	w.log.Warn("worker: a container failed its probe; killing the run", "container_id", ct.ID, "probe", probe, "failures", failures, "err", cause)
	w.verdict(ctx, ct, probe, events.HealthUnhealthy, cause.Error(), failures)
	w.mu.Lock()
	w.probeKilled[ct.ID] = true
	w.mu.Unlock()
	if err := drv.Stop(ctx, ct.ID, driver.StopOptions{Force: true}); err != nil && ctx.Err() == nil {
		w.log.Warn("worker: kill a run that failed its probe", "container_id", ct.ID, "err", err)
	}
}

// verdict publishes a probe's verdict on a run.
func (w *Worker) verdict(ctx context.Context, ct *driver.Container, probe, status, msg string, failures int) {
	if len(msg) > 4096 {
		msg = msg[:4096]
	}
	id := derive(ct.ID, "health "+probe+" "+status, ct.StartedAt.UnixNano(), time.Now().UnixNano())
	if err := w.emit(ctx, events.ContainerHealth, ct.ID, id, events.HealthData{ContainerID: ct.ID, HostID: w.cfg.HostID, Probe: probe,
		Status: status, Message: msg, Failures: failures, StartedAt: ct.StartedAt}, nil); err != nil && ctx.Err() == nil {
		w.log.Warn("worker: report a probe's verdict", "container_id", ct.ID, "err", err)
	}
}

// check runs one check of a probe, bounded by its timeout.
func (w *Worker) check(ctx context.Context, drv driver.Driver, id string, p *driver.Probe) error {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout())
	defer cancel()
	if len(p.Exec) > 0 {
		res, err := drv.Exec(ctx, id, driver.ExecOptions{Command: p.Exec, Timeout: p.Timeout()})
		switch {
		case err != nil:
			return err
		case res.TimedOut:
			return fmt.Errorf("exec %v: no answer within %v", p.Exec, p.Timeout())
		case res.ExitCode != 0:
			return fmt.Errorf("exec %v: exit %d", p.Exec, res.ExitCode)
		}
		return nil
	}
	a, ok := drv.(driver.Addresser)
	if !ok {
		return fmt.Errorf("the %s driver does not say where a container listens: http and tcp probes need it", drv.Name())
	}
	host, err := a.Address(ctx, id)
	if err != nil {
		return err
	}
	if t := p.TCP; t != nil {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(t.Port)))
		if err != nil {
			return fmt.Errorf("tcp %d: %w", t.Port, err)
		}
		return conn.Close()
	}
	h := p.HTTP
	url := "http://" + net.JoinHostPort(host, strconv.Itoa(h.Port)) + "/" + trimSlash(h.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("http GET %s: no answer within %v", url, p.Timeout())
		}
		return fmt.Errorf("http GET %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http GET %s: %s", url, resp.Status)
	}
	return nil
}

// probeClient follows no redirects (a 3xx passes) and keeps no
// connections: each check is a new one, as the container sees a client.
var probeClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableKeepAlives: true, Proxy: nil},
}

func trimSlash(p string) string {
	for len(p) > 0 && p[0] == '/' {
		p = p[1:]
	}
	return p
}

// sleep waits d or until ctx ends; false when it ended.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
