package main

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/openagent/orchestrator/pkg/events"
)

// copyOf is one container as a host's runtime holds it.
type copyOf struct {
	id      string // the orchestrator's container id (its label)
	host    string // whose runtime holds it
	running bool
}

// expect is what a case's fault should bring about.
type expect struct {
	// from is the host the case empties (the fault cut it off past its
	// grace, or it was drained): the containers placed there are each
	// rescheduled exactly once, the others never. "": nothing is
	// rescheduled.
	from string
}

// tally is what a check counted, for the report.
type tally struct {
	attempted, acked, accepted, running, rescheduled, stale int
}

func (t tally) String() string {
	return fmt.Sprintf("attempted %d, acknowledged %d, accepted %d, running once %d, rescheduled %d, stale events refused %d",
		t.attempted, t.acked, t.accepted, t.running, t.rescheduled, t.stale)
}

// check holds the history against the events stream and the runtimes, and
// returns every violation:
//   - an acknowledged request without an outcome is lost; one refused is
//     a violation too (every request here is valid);
//   - each accepted request (acknowledged or not) has exactly one running
//     copy in all the runtimes, over its container and every replacement,
//     and that copy is the last of them;
//   - no container is created by two hosts, and none is reported failed
//     (nothing here should fail: a failure is a false outcome);
//   - a container is rescheduled exactly once if the case emptied its host
//     (lost or drained), never otherwise.
func check(ops []op, l *ledger, runtimes []copyOf, want expect) (tally, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	copies := map[string][]copyOf{}
	for _, c := range runtimes {
		copies[c.id] = append(copies[c.id], c)
	}
	var t tally
	var problems []string
	sort.Slice(ops, func(i, j int) bool { return ops[i].attempted.Before(ops[j].attempted) })
	for _, o := range ops {
		t.attempted++
		if o.acked {
			t.acked++
		}
		out, ok := l.outcome[o.id]
		switch {
		case !ok && o.acked:
			problems = append(problems, fmt.Sprintf("request %s: acknowledged and lost (no outcome on the events stream)", o.id))
			continue
		case !ok:
			continue // never acknowledged, never seen: it may not have been stored
		case out.Type() == events.RequestRejected:
			problems = append(problems, fmt.Sprintf("request %s: refused: %s", o.id, out.Data()))
			continue
		}
		t.accepted++
		chain := l.chain(events.Ext(out, events.ExtContainerID))
		var running []copyOf
		for _, id := range chain {
			for _, c := range copies[id] {
				if c.running {
					running = append(running, c)
				}
			}
			if why, ok := l.failed[id]; ok {
				problems = append(problems, fmt.Sprintf("request %s: container %s reported failed: %s", o.id, id, why))
			}
			if hosts := l.createdOn[id]; len(hosts) > 1 {
				problems = append(problems, fmt.Sprintf("request %s: container %s created on %d hosts %v", o.id, id, len(hosts), keys(hosts)))
			}
		}
		last := chain[len(chain)-1]
		switch {
		case len(running) == 0:
			problems = append(problems, fmt.Sprintf("request %s: no copy of %v runs in any runtime", o.id, chain))
		case len(running) > 1:
			problems = append(problems, fmt.Sprintf("request %s: %d copies run: %s", o.id, len(running), describe(running)))
		case running[0].id != last:
			problems = append(problems, fmt.Sprintf("request %s: %s runs on %s, not its last replacement %s", o.id, running[0].id, running[0].host, last))
		default:
			t.running++
		}
		first := chain[0]
		n := 0
		for _, id := range chain {
			n += l.rescheduled[id]
		}
		t.rescheduled += n
		switch wantOnce := want.from != "" && l.placedOn[first] == want.from; {
		case wantOnce && n != 1:
			problems = append(problems, fmt.Sprintf("request %s: its host %s was emptied and it was rescheduled %d times, not once (%v)", o.id, want.from, n, chain))
		case !wantOnce && n != 0:
			problems = append(problems, fmt.Sprintf("request %s: rescheduled %d times from %s, which was not emptied (%v)", o.id, n, l.placedOn[first], chain))
		}
	}
	t.stale = l.stale
	return t, problems
}

func describe(cs []copyOf) string {
	var s []string
	for _, c := range cs {
		s = append(s, c.id+" on "+c.host)
	}
	return strings.Join(s, ", ")
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
