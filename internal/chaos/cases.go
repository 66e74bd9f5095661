package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/events"
)

// leaseTTL and hostLostAfter are the deployment's settings
// (deploy/compose.yaml): the leader's lease, and a host's TTL plus grace.
const (
	leaseTTL      = 3 * time.Second
	hostLostAfter = 30 * time.Second
)

// A testCase injects one fault under load and says what it should bring
// about; the runner then checks the history within bound of the heal.
type testCase struct {
	name  string
	bound time.Duration // from the heal to every invariant holding
	run   func(ctx context.Context, r *caseRun) (expect, error)
}

var cases = []testCase{
	{"worker-kill-mid-create", 30 * time.Second, workerKill},
	{"worker-partition", 30 * time.Second, workerPartition},
	{"nats-node-stop", 45 * time.Second, natsStop},
	{"leader-kill", 30 * time.Second, leaderKill},
	{"leader-pause", 30 * time.Second, leaderPause},
	{"drain-leader-kill", 45 * time.Second, drainLeaderKill},
	{"audit-chain", 45 * time.Second, auditChain},
}

// caseRun is one case's run: its requests, and what it measured.
type caseRun struct {
	c       *cluster
	l       *ledger
	h       *history
	name    string
	n       int
	healed  time.Time
	timings []string
	undo    []func() error // run once the case is checked
	mu      sync.Mutex
}

// load publishes count creates, one each every, on host if not "", and
// returns a wait for the last to be acknowledged or given up.
func (r *caseRun) load(ctx context.Context, count int, every time.Duration, host string) (wait func()) {
	var wg sync.WaitGroup
	for range count {
		r.mu.Lock()
		r.n++
		id := fmt.Sprintf("chaos-%s-%d-%d", r.name, time.Now().UnixNano(), r.n)
		r.mu.Unlock()
		wg.Add(1)
		go func() { defer wg.Done(); r.c.publishCreate(ctx, r.h, id, host, 30*time.Second) }()
		time.Sleep(every)
	}
	return wg.Wait
}

func (r *caseRun) timing(what string, d time.Duration) {
	r.timings = append(r.timings, fmt.Sprintf("%s %.1fs", what, d.Seconds()))
}

// containers are the ids the events stream gave this case's accepted
// requests, with their replacements.
func (r *caseRun) containers() []string {
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	var ids []string
	for _, o := range r.h.snapshot() {
		if out, ok := r.l.outcome[o.id]; ok {
			ids = append(ids, r.l.chain(extContainer(out))...)
		}
	}
	return ids
}

// await polls cond until it holds or within passes.
func await(ctx context.Context, within time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", within, what)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

// settled waits for every invariant to hold with no fault injected.
func (r *caseRun) settled(ctx context.Context, within time.Duration) error {
	var problems []string
	err := await(ctx, within, "the load to run", func() bool {
		rt, err := r.c.runtimes(ctx)
		if err != nil {
			problems = []string{err.Error()}
			return false
		}
		_, problems = check(r.h.snapshot(), r.l, rt, expect{})
		return len(problems) == 0
	})
	if err != nil {
		return fmt.Errorf("%w: %v", err, first(problems, 3))
	}
	return nil
}

// kill -9 the worker whose creates are under way, after its first create
// and before its last, and start it again within its grace: each request
// runs once, none is rescheduled.
func workerKill(ctx context.Context, r *caseRun) (expect, error) {
	const target = "worker-1"
	wait := r.load(ctx, 12, 40*time.Millisecond, target)
	var created int
	if err := await(ctx, 20*time.Second, "a first create on "+target, func() bool {
		created = r.created(target)
		return created > 0
	}); err != nil {
		return expect{}, err
	}
	t0 := time.Now()
	if err := r.c.kill(ctx, target, "KILL"); err != nil {
		return expect{}, err
	}
	time.Sleep(time.Second)
	if err := r.c.start(ctx, target); err != nil {
		return expect{}, err
	}
	r.healed = time.Now()
	r.timings = append(r.timings, fmt.Sprintf("killed after %d of 12 created", created))
	r.timing("down", r.healed.Sub(t0))
	wait()
	return expect{}, nil
}

// created counts this case's containers created on host.
func (r *caseRun) created(host string) int {
	return r.sum(func(id string) int { return b2i(r.l.createdOn[id][host]) })
}

// Cut the host of running containers off the bus past its grace: it is
// lost and each container is rescheduled once to the other; healed, it
// removes its stale copies.
func workerPartition(ctx context.Context, r *caseRun) (expect, error) {
	r.load(ctx, 8, 50*time.Millisecond, "")()
	if err := r.settled(ctx, 30*time.Second); err != nil {
		return expect{}, err
	}
	ids := r.containers()
	target := r.busiest()
	t0 := time.Now()
	if err := r.c.disconnect(ctx, target); err != nil {
		return expect{}, err
	}
	var lostAt time.Time
	if err := await(ctx, hostLostAfter+15*time.Second, target+" declared lost", func() bool {
		var ok bool
		lostAt, ok = r.l.lostAfter(target, t0)
		return ok
	}); err != nil {
		r.c.connect(ctx, target)
		return expect{}, err
	}
	r.timing("detection", lostAt.Sub(t0))
	// Load while it is lost: all of it goes to the other host.
	wait := r.load(ctx, 4, 100*time.Millisecond, "")
	var lastStart time.Time
	if err := await(ctx, 30*time.Second, "the replacements started", func() bool {
		r.l.mu.Lock()
		defer r.l.mu.Unlock()
		for _, id := range ids {
			if r.l.placedOn[id] != target {
				continue
			}
			next, ok := r.l.replacement[id]
			at, started := r.l.startedAt[next]
			if !ok || !started {
				return false
			}
			if at.After(lastStart) {
				lastStart = at
			}
		}
		return true
	}); err != nil {
		r.c.connect(ctx, target)
		return expect{}, err
	}
	r.timing("rescheduled and running", lastStart.Sub(t0))
	if err := r.c.connect(ctx, target); err != nil {
		return expect{}, err
	}
	r.healed = time.Now()
	r.timings = append(r.timings, fmt.Sprintf("%d containers on %s", r.placedOn(target), target))
	wait()
	return expect{from: target}, nil
}

// Stop the NATS server that leads the events stream, under load, and
// start it again: nothing acknowledged is lost, nothing runs twice.
func natsStop(ctx context.Context, r *caseRun) (expect, error) {
	target := natsNodes[1]
	if info, err := r.c.js.Stream(ctx, events.StreamEvents); err == nil && info.CachedInfo().Cluster != nil {
		if l := info.CachedInfo().Cluster.Leader; l != "" {
			target = l
		}
	}
	done := make(chan func())
	go func() { done <- r.load(ctx, 24, 250*time.Millisecond, "") }()
	time.Sleep(1500 * time.Millisecond)
	t0 := time.Now()
	if err := r.c.stop(ctx, target, 10*time.Second); err != nil {
		return expect{}, err
	}
	r.timing("stopping "+target, time.Since(t0))
	time.Sleep(6 * time.Second)
	if err := r.c.start(ctx, target); err != nil {
		return expect{}, err
	}
	r.healed = time.Now()
	r.timing("down", r.healed.Sub(t0))
	(<-done)()
	return expect{}, nil
}

// kill -9 the leading orchestrator under load, and start it again: the
// other takes over within its lease and a third.
func leaderKill(ctx context.Context, r *caseRun) (expect, error) {
	leader, t0, done, err := r.signalLeader(ctx, "KILL")
	if err != nil {
		return expect{}, err
	}
	if err := r.failover(ctx, leader, t0); err != nil {
		return expect{}, err
	}
	if err := r.c.start(ctx, leader); err != nil {
		return expect{}, err
	}
	r.healed = time.Now()
	(<-done)()
	return expect{}, nil
}

// signalLeader starts a load of 20 creates over 4s and, a second into it,
// sends signal to the leading orchestrator; it returns the leader, when,
// and the load's wait (received once the load is under way).
func (r *caseRun) signalLeader(ctx context.Context, signal string) (string, time.Time, chan func(), error) {
	leader := r.c.leader(ctx)
	if leader == "" {
		return "", time.Time{}, nil, fmt.Errorf("no leader")
	}
	done := make(chan func(), 1)
	go func() { done <- r.load(ctx, 20, 200*time.Millisecond, "") }()
	time.Sleep(time.Second)
	t0 := time.Now()
	return leader, t0, done, r.c.kill(ctx, leader, signal)
}

// failover waits for another orchestrator than old to be elected after t0.
func (r *caseRun) failover(ctx context.Context, old string, t0 time.Time) error {
	var el election
	if err := await(ctx, 4*leaseTTL, "another leader elected", func() bool {
		var ok bool
		el, ok = r.l.electedAfter(t0)
		return ok && el.holder != old
	}); err != nil {
		return err
	}
	r.timing("failover to "+el.holder, el.at.Sub(t0))
	return nil
}

// SIGSTOP the leader past its lease under load, then SIGCONT it: the other
// takes over, and the old one, woken, steps down; what it wrote in the
// meantime is refused by its token.
func leaderPause(ctx context.Context, r *caseRun) (expect, error) {
	leader, t0, done, err := r.signalLeader(ctx, "STOP")
	if err != nil {
		return expect{}, err
	}
	err = r.failover(ctx, leader, t0)
	time.Sleep(time.Until(t0.Add(3 * leaseTTL)))
	if cerr := r.c.kill(ctx, leader, "CONT"); cerr != nil {
		return expect{}, cerr
	}
	r.healed = time.Now()
	if err != nil {
		return expect{}, err
	}
	if err := await(ctx, 2*leaseTTL, leader+" stepping down", func() bool { return r.c.health(ctx, leader).Role == "follower" }); err != nil {
		return expect{}, err
	}
	r.timing("paused", r.healed.Sub(t0))
	r.timing("stepped down after waking", time.Since(r.healed))
	(<-done)()
	return expect{}, nil
}

// Drain the host of running containers and kill -9 the leader as soon as
// it accepted the drain: the next leader makes or finishes the moves, each container moved once
// and removed from the drained host; then the drain ends.
func drainLeaderKill(ctx context.Context, r *caseRun) (expect, error) {
	r.load(ctx, 8, 50*time.Millisecond, "")()
	if err := r.settled(ctx, 30*time.Second); err != nil {
		return expect{}, err
	}
	target := r.busiest()
	leader := r.c.leader(ctx)
	if leader == "" {
		return expect{}, fmt.Errorf("no leader")
	}
	t0 := time.Now()
	if _, err := r.c.api(leader).Drain(ctx, target, true); err != nil {
		return expect{}, fmt.Errorf("drain %s: %w", target, err)
	}
	// At once: the moves are the leader's next look at its hosts, within
	// a second, and the kill lands before, among or after them.
	if err := r.c.kill(ctx, leader, "KILL"); err != nil {
		return expect{}, err
	}
	r.timings = append(r.timings, fmt.Sprintf("leader killed after %d moves", r.rescheduledCount()))
	if err := r.failover(ctx, leader, t0); err != nil {
		return expect{}, err
	}
	if err := r.c.start(ctx, leader); err != nil {
		return expect{}, err
	}
	r.healed = time.Now()
	// Once checked, the host takes containers again for the next cases.
	r.undo = append(r.undo, func() error {
		var err error
		for name := range orchestrators {
			if _, err = r.c.api(name).Drain(ctx, target, false); err == nil {
				return nil
			}
		}
		return fmt.Errorf("end the drain of %s: %w", target, err)
	})
	return expect{from: target}, nil
}

// After the faults (leaders killed and paused, a stale leader's writes):
// the audit chain over the whole events stream verifies against the
// checkpoints, signed by the deployment's key, up to the end.
func auditChain(ctx context.Context, r *caseRun) (expect, error) {
	b, err := os.ReadFile(filepath.Join(r.c.state, "authority", "audit.key.pub"))
	if err != nil {
		return expect{}, fmt.Errorf("the deployment's audit key: %w", err)
	}
	trusted, err := audit.ParseKey(string(b))
	if err != nil {
		return expect{}, err
	}
	var rep audit.Report
	t0 := time.Now()
	err = await(ctx, 3*audit.CheckpointEvery, "the chain verified to its end", func() bool {
		v := &audit.Verifier{Trusted: trusted}
		for e, err := range r.c.api(r.c.leader(ctx)).Events(ctx, client.EventFilter{From: 1}) {
			if err != nil || !v.Add(e) {
				break
			}
		}
		rep = v.Report()
		return rep.Problem != "" || rep.Checkpoints > 0 && rep.Awaiting() == 0
	})
	if err != nil {
		return expect{}, fmt.Errorf("%w: %+v", err, rep)
	}
	if rep.Problem != "" {
		return expect{}, fmt.Errorf("the audit chain breaks at %d: %s", rep.Seq, rep.Problem)
	}
	r.timings = append(r.timings, fmt.Sprintf("%d events, %d checkpoints", rep.Events, rep.Checkpoints))
	r.timing("signed to the end", time.Since(t0))
	return expect{}, nil
}

// busiest is the worker this case's containers were placed on most.
func (r *caseRun) busiest() string {
	target, most := workers[0], -1
	for _, w := range workers {
		if n := r.placedOn(w); n > most {
			target, most = w, n
		}
	}
	return target
}

// placedOn counts this case's containers placed on host.
func (r *caseRun) placedOn(host string) int {
	return r.sum(func(id string) int { return b2i(r.l.placedOn[id] == host) })
}

// rescheduledCount counts the rescheduled events of this case's containers.
func (r *caseRun) rescheduledCount() int {
	return r.sum(func(id string) int { return r.l.rescheduled[id] })
}

// sum adds f over this case's containers, with the ledger held.
func (r *caseRun) sum(f func(id string) int) int {
	ids := r.containers()
	r.l.mu.Lock()
	defer r.l.mu.Unlock()
	n := 0
	for _, id := range ids {
		n += f(id)
	}
	return n
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}
