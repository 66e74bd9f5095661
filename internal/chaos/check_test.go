package main

import (
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/events"
)

// story builds the events stream of a history by hand: each step is one
// event as the system would write it.
type story struct {
	t   *testing.T
	l   *ledger
	seq uint64
}

func newStory(t *testing.T) *story { return &story{t: t, l: newLedger()} }

func (s *story) add(typ string, data any, ext map[string]string, token uint64) {
	s.t.Helper()
	var opts []events.Option
	for k, v := range ext {
		opts = append(opts, events.WithExtension(k, v))
	}
	if token != 0 {
		opts = append(opts, events.WithLeaderToken(token))
	}
	e, err := events.New(typ, "/test", data, opts...)
	if err != nil {
		s.t.Fatal(err)
	}
	s.seq++
	s.l.add(e, s.seq)
}

// accepted is a request accepted as container id, placed and started on host.
func (s *story) accepted(req, id, host string) {
	s.add(events.RequestAccepted, events.AcceptedData{ContainerID: id},
		map[string]string{events.ExtCorrelationID: req, events.ExtContainerID: id}, 1)
	s.add(events.ContainerPlaced, events.PlacedData{HostID: host},
		map[string]string{events.ExtContainerID: id, events.ExtHostID: host}, 1)
	s.created(id, host)
}

func (s *story) created(id, host string) {
	s.add(events.ContainerCreated, events.CreatedData{}, map[string]string{events.ExtContainerID: id, events.ExtHostID: host}, 0)
	s.add(events.ContainerStarted, events.StartedData{}, map[string]string{events.ExtContainerID: id, events.ExtHostID: host}, 0)
}

func (s *story) rescheduled(id, to string) {
	s.add(events.ContainerRescheduled, events.RescheduledData{ContainerID: id, ReplacementID: to, FromHost: "h1", Reason: "host lost", Attempt: 1},
		map[string]string{events.ExtContainerID: id}, 1)
}

func acked(ids ...string) []op {
	var ops []op
	for i, id := range ids {
		ops = append(ops, op{id: id, attempted: time.Unix(int64(i), 0), acked: true})
	}
	return ops
}

// The checker passes a clean history and finds each kind of violation in
// one that has it: a checker that cannot fail proves nothing.
func TestCheck(t *testing.T) {
	run := func(name string, ops []op, s *story, rt []copyOf, want expect, wantProblem string) {
		t.Helper()
		_, problems := check(ops, s.l, rt, want)
		switch {
		case wantProblem == "" && len(problems) > 0:
			t.Errorf("%s: a clean history fails: %v", name, problems)
		case wantProblem != "" && !strings.Contains(strings.Join(problems, "\n"), wantProblem):
			t.Errorf("%s: want a problem with %q, got %v", name, wantProblem, problems)
		}
	}
	one := func() *story {
		s := newStory(t)
		s.accepted("r1", "c1", "h1")
		return s
	}
	running := []copyOf{{id: "c1", host: "h1", running: true}}

	run("clean", acked("r1"), one(), running, expect{}, "")
	run("acknowledged, no outcome", acked("r1", "r2"), one(), running, expect{}, "r2: acknowledged and lost")
	unacked := append(acked("r1"), op{id: "r2", attempted: time.Unix(9, 0)})
	run("never acknowledged, never seen", unacked, one(), running, expect{}, "")
	run("accepted, not running", acked("r1"), one(), []copyOf{{id: "c1", host: "h1"}}, expect{}, "no copy of [c1] runs")
	run("two copies", acked("r1"), one(), append(running, copyOf{id: "c1", host: "h2", running: true}), expect{}, "2 copies run")

	twice := one()
	twice.created("c1", "h2")
	run("created on two hosts", acked("r1"), twice, running, expect{}, "created on 2 hosts")

	failed := one()
	failed.add(events.ContainerFailed, map[string]any{"containerId": "c1"}, map[string]string{events.ExtContainerID: "c1"}, 0)
	run("reported failed", acked("r1"), failed, running, expect{}, "c1 reported failed")

	refused := newStory(t)
	refused.add(events.RequestRejected, map[string]any{"kind": "invalid", "message": "no"}, map[string]string{events.ExtCorrelationID: "r1"}, 1)
	run("refused", acked("r1"), refused, nil, expect{}, "r1: refused")

	moved := one()
	moved.rescheduled("c1", "c2")
	moved.created("c2", "h2")
	replaced := []copyOf{{id: "c1", host: "h1"}, {id: "c2", host: "h2", running: true}}
	run("rescheduled once from the lost host", acked("r1"), moved, replaced, expect{from: "h1"}, "")
	run("rescheduled with no host lost", acked("r1"), moved, replaced, expect{}, "rescheduled 1 times from h1, which was not emptied")
	run("the stale copy still runs", acked("r1"), moved, append(replaced, copyOf{id: "c1", host: "h1", running: true}), expect{from: "h1"}, "2 copies run")
	run("not rescheduled from the lost host", acked("r1"), one(), running, expect{from: "h1"}, "rescheduled 0 times, not once")
	run("the original runs, not its replacement", acked("r1"), moved, []copyOf{{id: "c1", host: "h1", running: true}}, expect{from: "h1"}, "not its last replacement c2")

	again := one()
	again.rescheduled("c1", "c2")
	again.created("c2", "h2")
	again.rescheduled("c2", "c3")
	again.created("c3", "h1")
	run("rescheduled twice", acked("r1"), again, []copyOf{{id: "c3", host: "h1", running: true}}, expect{from: "h1"}, "rescheduled 2 times")

	// A superseded leader's event is refused, as every reader refuses it.
	stale := one()
	stale.add(events.LeaderElected, events.LeaderElectedData{Holder: "b", Token: 2}, nil, 2)
	stale.rescheduled("c1", "c9")
	run("a stale leader's reschedule", acked("r1"), stale, running, expect{}, "")
	if stale.l.stale != 1 {
		t.Errorf("stale events refused: %d, want 1", stale.l.stale)
	}
}
