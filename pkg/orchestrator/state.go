package orchestrator

import (
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// record is a container as the projection keeps it.
type record = projection.Record

// state is what the orchestrator decides on: the projection of the events
// stream (containers, and what each host has allocated), the hosts as
// their workers report them, and who waits for which exec's outcome. Lock
// order: the store's lock before hostsMu.
type state struct {
	*projection.Store
	hostsMu sync.RWMutex
	hosts   map[string]*events.HostRecord
	sched   map[string]scheduler.Host // what placement reads of each host
	// hostList is sched as placement takes it, made at the first placement
	// after a change (under the store's lock, with hostsMu read-locked).
	hostList []*scheduler.Host
	// Host health, under hostsMu: creates failed in a row on each host,
	// the last one's error, and until when a host is quarantined.
	failures    map[string]int
	lastFailure map[string]string
	quarantine  map[string]time.Time
	execsMu     sync.Mutex
	execs       map[string]chan execOutcome
}

// execOutcome is how an exec a caller waits for ended.
type execOutcome struct {
	res   *api.ExecResult
	err   *api.Error
	event events.Event // the stored event that said so
}

func newState() *state {
	return &state{Store: projection.NewStore(), hosts: map[string]*events.HostRecord{}, sched: map[string]scheduler.Host{},
		failures: map[string]int{}, lastFailure: map[string]string{}, quarantine: map[string]time.Time{},
		execs: map[string]chan execOutcome{}}
}

func demand(spec driver.ContainerConfig) scheduler.Resources { return projection.Demand(spec) }

// taken says whether r's id or name is in use: "id" or "name", with the
// record that holds the id.
func taken(m *projection.Model, r *record) (prev *record, what string) {
	if old, ok := m.Containers[r.ID]; ok && old.Status != api.StatusRemoved {
		cp := *old
		return &cp, "id"
	}
	if r.Name != "" {
		if id, ok := m.Names[r.Name]; ok && id != r.ID {
			return nil, "name"
		}
	}
	return nil, ""
}

// reserve records a container placed but not yet announced, so that later
// placements see its resources taken, and gives it its first generation;
// taken must have said its id and name are free.
func reserve(m *projection.Model, r *record) {
	r.Generation = nextGeneration(0)
	if old, ok := m.Containers[r.ID]; ok {
		r.Generation = nextGeneration(old.Generation) // an id used before
	}
	r.CreatedAt = time.Now().UTC()
	// The model keeps a record of its own: the caller goes on reading r
	// while the projection changes the kept one.
	kept := *r
	kept.Status = api.StatusPending
	m.Put(&kept)
	r.Status = api.StatusPending
}

// nextGeneration returns a generation after last: the clock in
// nanoseconds, so that generations keep increasing for an id used again
// after its record was forgotten, and last+1 should the clock lag.
func nextGeneration(last uint64) uint64 {
	return max(last+1, uint64(time.Now().UnixNano()))
}

// nextGeneration takes the next generation of a container's commands.
func (s *state) nextGeneration(id string) uint64 {
	gen := nextGeneration(0)
	s.Update(func(m *projection.Model) []string {
		if r, ok := m.Containers[id]; ok {
			r.Generation = nextGeneration(r.Generation)
			gen = r.Generation
		}
		return nil
	})
	return gen
}

// overdue returns the containers pending since before t.
func (s *state) overdue(t time.Time) []*record {
	var out []*record
	s.Read(func(m *projection.Model) {
		for id := range m.Pending {
			if r := m.Containers[id]; r != nil && r.Seq != 0 && r.CreatedAt.Before(t) {
				cp := *r
				out = append(out, &cp)
			}
		}
	})
	return out
}

// missingOn returns the containers the state has created or running on a
// host, as of before seq, that are not in found.
func (s *state) missingOn(host string, seq uint64, found []string) []*record {
	have := map[string]bool{}
	for _, id := range found {
		have[id] = true
	}
	var out []*record
	s.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Host == host && r.Seq < seq && (r.Status == api.StatusCreated || r.Status == api.StatusRunning) && !have[r.ID] {
				cp := *r
				out = append(out, &cp)
			}
		}
	})
	return out
}

// release undoes a reservation whose announcement failed.
func (s *state) release(id string) {
	s.Update(func(m *projection.Model) []string {
		r, ok := m.Containers[id]
		if !ok || r.Seq != 0 {
			return nil
		}
		m.SetStatus(r, api.StatusRemoved)
		delete(m.Containers, id)
		if r.Name != "" && m.Names[r.Name] == id {
			delete(m.Names, r.Name)
		}
		return []string{id}
	})
}

// dropReservations releases every reservation the log does not hold:
// what a term placed and did not see stored before it ended. A follower's
// state is the log's fold alone.
func (s *state) dropReservations() {
	var ids []string
	s.Read(func(m *projection.Model) {
		for id, r := range m.Containers {
			if r.Seq == 0 {
				ids = append(ids, id)
			}
		}
	})
	for _, id := range ids {
		s.release(id)
	}
}

// deliverExec hands an exec's outcome, completed or failed, to whoever
// waits for it; it is not part of the projection.
func (s *state) deliverExec(e events.Event) {
	out := execOutcome{event: e}
	var execID string
	switch e.Type() {
	case events.ExecCompleted:
		var d events.ExecCompletedData
		if events.Data(e, &d) != nil {
			return
		}
		execID = d.ExecID
		out.res = &api.ExecResult{ExecID: d.ExecID, ExitCode: d.ExitCode, Stdout: d.Stdout, Stderr: d.Stderr,
			Truncated: d.Truncated, TimedOut: d.TimedOut, DurationMs: d.DurationMs, StdoutObject: d.StdoutObject}
	case events.ContainerFailed:
		var d events.FailedData
		if events.Data(e, &d) != nil || d.ExecID == "" {
			return
		}
		execID, out.err = d.ExecID, &d.Error
	default:
		return
	}
	s.execsMu.Lock()
	ch, ok := s.execs[execID]
	s.execsMu.Unlock()
	if ok {
		select {
		case ch <- out:
		default:
		}
	}
}

// expectExec registers interest in an exec's outcome before it is asked
// for; the returned function withdraws it.
func (s *state) expectExec(execID string) (<-chan execOutcome, func()) {
	ch := make(chan execOutcome, 1)
	s.execsMu.Lock()
	s.execs[execID] = ch
	s.execsMu.Unlock()
	return ch, func() {
		s.execsMu.Lock()
		delete(s.execs, execID)
		s.execsMu.Unlock()
	}
}

// view returns the API view of a container, with its status lost when its
// host stopped reporting.
func view(r *record, live func(host string) bool) api.Container {
	c := r.Container
	if c.Status.Active() && !live(c.Host) {
		c.Status = api.StatusLost
	}
	c.Ready = c.Ready && c.Status == api.StatusRunning
	return c
}
