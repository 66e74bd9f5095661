package main_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// haRequests is the size of the burst each failover test publishes.
const haRequests = 240

// failoverBound is what the tests allow a failover on a loaded machine:
// twice the target (the lease, 3s, and a third of it more, within 5s).
const failoverBound = 10 * time.Second

// Two orchestrators, built binaries, on one NATS JetStream, with a worker
// on the fake driver. In the middle of a burst of creates the leader is
// killed with SIGKILL (kill) or paused with SIGSTOP past its lease and
// then resumed (stop). The other takes over; then, over the events stream
// read as every reader reads it (a former leader's writes after its
// successor's proclamation refused): every acknowledged request has one
// outcome, accepted, with one container placed, started once, running,
// and known to the leader.
func TestLeaderFailover(t *testing.T) {
	bins := buildBinaries(t)
	t.Run("kill", func(t *testing.T) { failoverRun(t, bins, false) })
	t.Run("stop", func(t *testing.T) { failoverRun(t, bins, true) })
}

type orchestratorProc struct {
	*process
	name, url string
}

// roleOf says what an orchestrator's health says of it; "" when it does
// not answer.
func roleOf(url string) string {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get(url + "/healthz")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var h struct{ Role string }
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h.Role
}

func failoverRun(t *testing.T, bins binaries, pause bool) {
	srv := natstest.Start(t)
	natsURL, logs := srv.ClientURL(), t.TempDir()
	var orchs []*orchestratorProc
	for _, name := range []string{"orch-a", "orch-b"} {
		data, addr := t.TempDir(), freePort(t)
		dataDirs.Store(addr, data)
		p := startProcess(t, name, bins.orchestrator, logs, "--nats-url", natsURL, "--worker=false", "--http", addr, "--data-dir", data, "--id", name)
		o := &orchestratorProc{process: p, name: name, url: "http://" + addr}
		waitUntil(t, 30*time.Second, name+" answers", func() bool { return roleOf(o.url) != "" })
		orchs = append(orchs, o)
	}
	host := "ha-host"
	startProcess(t, "worker", bins.worker, logs, "--nats-url", natsURL, "--host-id", host, "--drivers", "fake",
		"--data-dir", t.TempDir(), "--cpu", "1000", "--memory", "10000000", "--pids", "10000000")
	waitHost(t, orchs[0].url, host)

	l, js := followOpenBus(t, natsURL)

	ids := make([]string, haRequests)
	for i := range ids {
		ids[i] = fmt.Sprintf("ha-%03d", i)
	}
	var acked atomic.Int64
	var pubs sync.WaitGroup
	work := make(chan string)
	for range 8 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for id := range work {
				publishFakeUntilAcked(t, js, id)
				acked.Add(1)
			}
		}()
	}
	go func() {
		defer close(work)
		for _, id := range ids {
			work <- id
			time.Sleep(10 * time.Millisecond) // a steady stream, across the failover
		}
	}()

	waitUntil(t, 60*time.Second, "a third of the requests acknowledged", func() bool { return acked.Load() >= haRequests/3 })
	var leader, other *orchestratorProc
	waitUntil(t, 10*time.Second, "a leader", func() bool {
		for i, o := range orchs {
			if roleOf(o.url) == "leader" {
				leader, other = o, orchs[1-i]
				return true
			}
		}
		return false
	})
	hit := time.Now()
	if pause {
		fmt.Fprintf(leader.log, "\n---- SIGSTOP ----\n\n")
		if err := leader.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	} else {
		leader.kill()
	}
	waitUntil(t, failoverBound, other.name+" leads after "+leader.name+" is gone", func() bool { return roleOf(other.url) == "leader" })
	failover := time.Since(hit)
	if pause {
		// Paused well past its lease, the former leader resumes with
		// requests in hand and a lease it no longer holds.
		time.Sleep(2 * time.Second)
		fmt.Fprintf(leader.log, "\n---- SIGCONT ----\n\n")
		if err := leader.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 15*time.Second, leader.name+" follows after it resumed", func() bool { return roleOf(leader.url) == "follower" })
	} else {
		leader.start()
	}
	pubs.Wait()

	var left string
	waitUntil(t, 90*time.Second, "every request answered and every container running", func() bool {
		left = l.unstarted(ids)
		return left == ""
	}, &left)
	list := listAll(t, other.url)
	l.mu.Lock()
	defer l.mu.Unlock()
	known := map[string]api.Container{}
	for _, c := range list {
		known[c.ID] = c
	}
	for _, id := range ids {
		o, ok := l.outcome[id]
		if !ok {
			t.Errorf("request %s was acknowledged and has no outcome", id)
			continue
		}
		if o.Type() != events.RequestAccepted {
			t.Errorf("request %s was rejected: %s", id, o.Data())
			continue
		}
		if n := len(l.placed[id]); n != 1 {
			t.Errorf("request %s placed %d containers (%v); want 1", id, n, l.placed[id])
		}
		cid := events.Ext(o, events.ExtContainerID)
		if n := len(l.started[cid]); n != 1 {
			t.Errorf("request %s's container %s started %d times; want once", id, cid, n)
		}
		if c, ok := known[cid]; !ok || c.Status != api.StatusRunning {
			t.Errorf("request %s's container %s is %v to the new leader (known %v), want running", id, cid, c.Status, ok)
		}
	}
	t.Logf("failover after %v; %d events of a former leader refused by the log's readers; events: %v", failover.Round(time.Millisecond), l.stale, l.byType)
}

// publishFakeUntilAcked publishes a create of a fake container that runs
// until stopped, again with the same id until the server acknowledges it.
func publishFakeUntilAcked(t *testing.T, js jetstream.JetStream, id string) {
	publishCreateUntilAcked(t, js, "/ha-test", id, map[string]any{"driver": "fake", "start": true, "spec": map[string]any{
		"image": "fake", "command": []string{"fake", "--forever"}, "resources": map[string]any{"cpu": 0.01, "memoryMB": 8, "pids": 5},
	}})
}
