package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/internal/eventlog"
	"github.com/openagent/orchestrator/pkg/events"
)

// op is one request the suite attempted: a create it published on the
// requests stream, and whether JetStream acknowledged it.
type op struct {
	id        string // the request's event id
	attempted time.Time
	acked     bool
}

// history is what the suite attempted and what was acknowledged.
type history struct {
	mu  sync.Mutex
	ops map[string]*op
}

func newHistory() *history { return &history{ops: map[string]*op{}} }

func (h *history) attempt(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[id] = &op{id: id, attempted: time.Now()}
}

func (h *history) ack(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[id].acked = true
}

// snapshot copies the ops.
func (h *history) snapshot() []op {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]op, 0, len(h.ops))
	for _, o := range h.ops {
		out = append(out, *o)
	}
	return out
}

// ledger is what the events stream says happened, as every reader takes
// it: an event a superseded leader wrote after its successor was elected
// is refused.
type ledger struct {
	mu          sync.Mutex
	outcome     map[string]events.Event // request id → accepted or rejected
	placedOn    map[string]string       // container id → the host it was placed on
	createdOn   map[string]map[string]bool
	started     map[string]int
	startedAt   map[string]time.Time // container id → its first start
	failed      map[string]string    // container id → what its failure said
	rescheduled map[string]int       // container id → its rescheduled events
	replacement map[string]string    // container id → the one placed in its stead
	hostLost    map[string][]time.Time
	hostBack    map[string][]time.Time
	elected     []election
	leader      uint64 // the token of the last leader.elected read
	stale       int    // events refused as a superseded leader's
	seen        uint64 // the stream sequence read up to
}

// election is one leader.elected event.
type election struct {
	at     time.Time
	holder string
	token  uint64
}

func newLedger() *ledger {
	return &ledger{outcome: map[string]events.Event{}, placedOn: map[string]string{}, createdOn: map[string]map[string]bool{},
		started: map[string]int{}, failed: map[string]string{}, startedAt: map[string]time.Time{}, rescheduled: map[string]int{}, replacement: map[string]string{},
		hostLost: map[string][]time.Time{}, hostBack: map[string][]time.Time{}}
}

func (l *ledger) add(e events.Event, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen = max(l.seen, seq)
	if t := events.LeaderToken(e); t != 0 {
		if e.Type() == events.LeaderElected {
			l.leader = max(l.leader, t)
			var d events.LeaderElectedData
			_ = events.Data(e, &d)
			l.elected = append(l.elected, election{at: e.Time(), holder: d.Holder, token: t})
		} else if t < l.leader {
			l.stale++
			return
		}
	}
	id, host := events.Ext(e, events.ExtContainerID), events.Ext(e, events.ExtHostID)
	switch e.Type() {
	case events.RequestAccepted, events.RequestRejected:
		l.outcome[events.CorrelationID(e)] = e
	case events.ContainerPlaced:
		l.placedOn[id] = host
	case events.ContainerCreated:
		if l.createdOn[id] == nil {
			l.createdOn[id] = map[string]bool{}
		}
		l.createdOn[id][host] = true
	case events.ContainerStarted:
		l.started[id]++
		if _, ok := l.startedAt[id]; !ok {
			l.startedAt[id] = e.Time()
		}
	case events.ContainerFailed:
		l.failed[id] = string(e.Data())
	case events.ContainerRescheduled:
		var d events.RescheduledData
		_ = events.Data(e, &d)
		l.rescheduled[id]++
		l.replacement[id] = d.ReplacementID
	case events.HostLost:
		l.hostLost[host] = append(l.hostLost[host], e.Time())
	case events.HostReturned:
		l.hostBack[host] = append(l.hostBack[host], e.Time())
	}
}

// chain is a request's container and each that replaced it, in order.
func (l *ledger) chain(first string) []string {
	ids := []string{first}
	for seen := map[string]bool{first: true}; ; {
		next, ok := l.replacement[ids[len(ids)-1]]
		if !ok || seen[next] {
			return ids
		}
		seen[next] = true
		ids = append(ids, next)
	}
}

// lostAfter is when host was first declared lost at or after t.
func (l *ledger) lostAfter(host string, t time.Time) (time.Time, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, at := range l.hostLost[host] {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// electedAfter is the first election at or after t.
func (l *ledger) electedAfter(t time.Time) (election, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.elected {
		if !e.at.Before(t) {
			return e, true
		}
	}
	return election{}, false
}

// follow feeds the events stream into l from its start until ctx ends,
// across the servers' restarts.
func follow(ctx context.Context, js jetstream.JetStream, l *ledger, warn func(string)) {
	eventlog.Follow(ctx, js, l.add, func(seq uint64, err error) {
		warn(fmt.Sprintf("the events stream holds an undecodable event at %d: %v", seq, err))
	})
}
