package main_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/events"
)

// The host-loss settings of these tests: a host is lost after 4s of
// silence; workers report every 250ms.
const (
	lossTTL   = 2 * time.Second
	lossGrace = 2 * time.Second
)

// Built binaries: an orchestrator and two workers on the fake driver.
// A worker holding containers is killed with SIGKILL: after the TTL and
// grace its host is lost, and each of its containers is replaced once, on
// the other host, within the bound. A worker paused with SIGSTOP for half
// the grace past its TTL comes back before anything happens: no host or
// container is lost.
func TestHostLoss(t *testing.T) {
	bins := buildBinaries(t)
	t.Run("kill", func(t *testing.T) { hostLossRun(t, bins, false) })
	t.Run("pause", func(t *testing.T) { hostLossRun(t, bins, true) })
}

func hostLossRun(t *testing.T, bins binaries, pause bool) {
	srv := natstest.Start(t)
	natsURL, logs := srv.ClientURL(), t.TempDir()
	data, addr := t.TempDir(), freePort(t)
	dataDirs.Store(addr, data)
	startProcess(t, "orchestrator", bins.orchestrator, logs, "--nats-url", natsURL, "--worker=false", "--http", addr, "--data-dir", data,
		"--host-ttl", lossTTL.String(), "--host-grace", lossGrace.String())
	base := "http://" + addr
	waitHTTP(t, base+"/v1/hosts")
	workers := map[string]*process{}
	for _, h := range []string{"loss-a", "loss-b"} {
		workers[h] = startProcess(t, "worker-"+h, bins.worker, logs, "--nats-url", natsURL, "--host-id", h, "--drivers", "fake", "--heartbeat", "250ms",
			"--data-dir", t.TempDir(), "--cpu", "1000", "--memory", "10000000", "--pids", "10000000")
		waitHost(t, base, h)
	}

	l, js := followOpenBus(t, natsURL)
	const n = 20
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("loss-%02d", i)
		publishRescheduledUntilAcked(t, js, ids[i])
	}
	var left string
	waitUntil(t, 30*time.Second, "every container running", func() bool { left = l.unstarted(ids); return left == "" }, &left)
	// Binpack put them on one host: that one goes.
	l.mu.Lock()
	var containers []string
	for _, id := range ids {
		containers = append(containers, events.Ext(l.outcome[id], events.ExtContainerID))
	}
	l.mu.Unlock()
	holder := hostOf(t, base, containers[0])
	for _, c := range containers {
		if h := hostOf(t, base, c); h != holder {
			t.Fatalf("container %s is on %s, not with the others on %s", c, h, holder)
		}
	}
	w := workers[holder]
	hit := time.Now()
	if pause {
		// Silent for its TTL and half its grace, then back.
		fmt.Fprintf(w.log, "\n---- SIGSTOP ----\n\n")
		if err := w.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lossTTL + lossGrace/2)
		fmt.Fprintf(w.log, "\n---- SIGCONT ----\n\n")
		if err := w.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(lossTTL + lossGrace) // long enough for a loss to show, were it declared
		for _, typ := range []string{events.HostLost, events.ContainerLost, events.ContainerRescheduled} {
			if got := l.count(typ); got != 0 {
				t.Errorf("a host paused for less than its grace: %d %s events; want none", got, typ)
			}
		}
		return
	}
	w.kill()
	bound := lossTTL + lossGrace + 10*time.Second
	waitUntil(t, bound, "every container of the killed host replaced and running", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, c := range containers {
			rep := l.replacement[c]
			if rep == "" || len(l.started[rep]) == 0 {
				left = "container " + c + " not replaced yet"
				return false
			}
		}
		return true
	}, &left)
	t.Logf("all %d replaced and running %v after the worker was killed (ttl %v, grace %v)", n, time.Since(hit).Round(time.Millisecond), lossTTL, lossGrace)
	time.Sleep(time.Second) // what a second replacement would need to show
	list := listAll(t, base)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range containers {
		if k := l.rescheduled[c]; k != 1 {
			t.Errorf("container %s rescheduled %d times; want once", c, k)
		}
		rep := l.replacement[c]
		if len(l.started[rep]) != 1 {
			t.Errorf("the replacement %s of %s started %d times; want once", rep, c, len(l.started[rep]))
		}
		for _, ct := range list {
			if ct.ID == rep && ct.Host == holder {
				t.Errorf("the replacement of %s is on the lost host", c)
			}
		}
	}
	if got := l.byType[events.HostLost]; got != 1 {
		t.Errorf("%d host.lost events; want 1", got)
	}
}

// followOpenBus connects to a bus without credentials and feeds its
// events stream into a ledger until the test ends.
func followOpenBus(t *testing.T, natsURL string) (*ledger, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(natsURL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithCancel(context.Background())
	l := newLedger()
	var following sync.WaitGroup
	following.Add(1)
	go func() { defer following.Done(); follow(ctx, t, nc, l) }()
	t.Cleanup(func() { cancel(); following.Wait() })
	js, _ := jetstream.New(nc)
	return l, js
}

// hostOf is the host a container is on, as the orchestrator says.
func hostOf(t *testing.T, base, id string) string {
	t.Helper()
	for _, c := range listAll(t, base) {
		if c.ID == id {
			return c.Host
		}
	}
	t.Fatalf("no container %s", id)
	return ""
}

// publishRescheduledUntilAcked publishes a create of a fake container that
// runs until stopped and is rescheduled when its host is lost.
func publishRescheduledUntilAcked(t *testing.T, js jetstream.JetStream, id string) {
	publishCreateUntilAcked(t, js, "/loss-test", id, map[string]any{"driver": "fake", "start": true, "reschedule": map[string]any{"policy": "always"}, "spec": map[string]any{
		"image": "fake", "command": []string{"fake", "--forever"}, "resources": map[string]any{"cpu": 0.01, "memoryMB": 8, "pids": 5},
	}})
}
