// Package projection folds the events stream into the model the control
// plane decides on: every container, where it is, in what state, and what
// each host has allocated. Apply is a pure function of the model and one
// event: no locks, no I/O, no clocks. Store keeps a model behind a lock
// for a running control plane, with per-container waiters and a
// write-behind to a bucket that Load resumes from or rebuilds past; the
// orchestrator, sessions, audit and the dashboard read the same records.
package projection

import (
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// Record is what the control plane knows of one container: its API view,
// the spec it was made from, and the events-stream sequence of the last
// event applied to it.
type Record struct {
	api.Container
	Spec driver.ContainerConfig `json:"spec"`
	Seq  uint64                 `json:"seq"`
	// FailedRequest is the request whose operation set Error.
	FailedRequest string `json:"failedRequest,omitempty"`
	// RequestSource and RequestDigest, with RequestID, identify the create
	// request that placed the container and what it asked for.
	RequestSource string `json:"requestSource,omitempty"`
	RequestDigest string `json:"requestDigest,omitempty"`
	// Generation is that of the last command published for the container
	// (see events.ExtGeneration).
	Generation uint64 `json:"generation,omitempty"`
	// What placement and a host's loss need to place a replacement as the
	// original was placed.
	Constraints map[string]string        `json:"constraints,omitempty"`
	Placement   *events.Placement        `json:"placement,omitempty"`
	Reschedule  *events.ReschedulePolicy `json:"reschedule,omitempty"`
	Start       bool                     `json:"start,omitempty"`
	Attempt     int                      `json:"attempt,omitempty"` // replacements of the original up to this one
	// LostAt is when the container was declared lost; WasRunning whether
	// it ran then.
	LostAt     time.Time `json:"lostAt,omitzero"`
	WasRunning bool      `json:"wasRunning,omitempty"`
}

// SameRequest reports whether r was placed by the request that placed
// other, asking for the same.
func (r *Record) SameRequest(other *Record) bool {
	return r.RequestID == other.RequestID && r.RequestSource == other.RequestSource &&
		(r.RequestDigest == "" || r.RequestDigest == other.RequestDigest)
}

// Model is the folded state. The zero value is not ready; use New.
type Model struct {
	Containers map[string]*Record
	Names      map[string]string              // name → container id
	Allocated  map[string]scheduler.Resources // host → what its active containers hold
	Pending    map[string]struct{}            // ids of the containers pending
	// Groups counts each host's active containers by label, as "key=value"
	// (GroupOf): what anti-affinity asks of placement.
	Groups map[string]map[string]int
	Seq    uint64 // the last events-stream sequence applied
	// Leader is the token of the last leader.elected applied: what a
	// former leader decided after it (an older token) is not applied.
	Leader uint64
	// Stale counts the events not applied for their former leader's token.
	Stale int
	// LostHosts are the hosts declared lost and not returned, with when.
	LostHosts map[string]time.Time
	// DrainingHosts are the hosts draining, with since when.
	DrainingHosts map[string]time.Time
	// Alerts are the alerts firing, by their key (rule/on/subject).
	Alerts map[string]events.AlertData
}

// GroupOf is the anti-affinity group of a label and its value.
func GroupOf(key, value string) string { return key + "=" + value }

// New returns an empty model.
func New() *Model {
	return &Model{Containers: map[string]*Record{}, Names: map[string]string{},
		Allocated: map[string]scheduler.Resources{}, Pending: map[string]struct{}{}, Groups: map[string]map[string]int{},
		LostHosts: map[string]time.Time{}, DrainingHosts: map[string]time.Time{}, Alerts: map[string]events.AlertData{}}
}

// Demand is what a container's spec holds on its host while it is active.
func Demand(spec driver.ContainerConfig) scheduler.Resources {
	return scheduler.Resources{CPU: spec.Resources.CPU, MemoryMB: spec.Resources.MemoryMB, Pids: spec.Resources.Pids, GPUs: spec.Resources.GPUs}
}

// SetStatus moves a record to a new status, keeping the allocations and
// the pending set right.
func (m *Model) SetStatus(r *Record, st api.Status) {
	was := r.Status.Active()
	if st == api.StatusPending {
		m.Pending[r.ID] = struct{}{}
	} else {
		delete(m.Pending, r.ID)
	}
	r.Status = st
	now := st.Active()
	switch {
	case was && !now:
		m.Allocated[r.Host] = m.Allocated[r.Host].Sub(Demand(r.Spec))
		m.group(r, -1)
	case !was && now:
		m.Allocated[r.Host] = m.Allocated[r.Host].Add(Demand(r.Spec))
		m.group(r, 1)
	}
}

// group counts an active container in, or out of, its host's groups.
func (m *Model) group(r *Record, delta int) {
	if len(r.Spec.Labels) == 0 {
		return
	}
	if m.Groups == nil {
		m.Groups = map[string]map[string]int{}
	}
	g := m.Groups[r.Host]
	if g == nil {
		g = map[string]int{}
		m.Groups[r.Host] = g
	}
	for k, v := range r.Spec.Labels {
		key := GroupOf(k, v)
		if g[key] += delta; g[key] <= 0 {
			delete(g, key)
		}
	}
}

// Put adds a record with its status (a loaded or reserved one), counting
// what it holds.
func (m *Model) Put(r *Record) {
	st := r.Status
	r.Status = api.StatusFailed // inactive until SetStatus
	m.Containers[r.ID] = r
	m.SetStatus(r, st)
	if r.Name != "" {
		m.Names[r.Name] = r.ID
	}
}

// Apply folds one event of the events stream at sequence seq into the
// model and returns the id of the container it changed, "" when it changed
// none. It is idempotent: an event at or below a record's sequence changes
// nothing.
func Apply(m *Model, seq uint64, e events.Event) string {
	if seq > m.Seq {
		m.Seq = seq
	}
	if t := events.LeaderToken(e); t != 0 {
		if e.Type() == events.LeaderElected {
			m.Leader = max(m.Leader, t)
			return ""
		}
		if t < m.Leader {
			m.Stale++
			return "" // a former leader's, written after its successor took over
		}
	}
	switch e.Type() {
	case events.ContainerPlaced:
		var d events.PlacedData
		if events.Data(e, &d) != nil {
			return ""
		}
		r, ok := m.Containers[d.ContainerID]
		if ok && r.Seq >= seq {
			return ""
		}
		if !ok {
			r = &Record{Container: api.Container{ID: d.ContainerID, Status: api.StatusFailed}}
			m.Containers[d.ContainerID] = r
		}
		if r.Status.Active() && r.Host != d.HostID {
			m.SetStatus(r, api.StatusFailed) // release a stale reservation elsewhere
		}
		r.Host, r.Driver, r.Name, r.Spec, r.CreatedAt = d.HostID, d.Driver, d.Name, d.Spec, e.Time()
		// Clone what comes from a message's headers: a substring would keep
		// the whole header block alive for as long as the record.
		r.RequestID = strings.Clone(events.CorrelationID(e))
		r.RequestSource, r.RequestDigest = d.RequestSource, d.RequestDigest
		r.Constraints, r.Placement, r.Reschedule, r.Start = d.Constraints, d.Placement, d.Reschedule, d.Start
		r.Replaces, r.Attempt = d.Replaces, d.Attempt
		r.Generation = max(r.Generation, events.Generation(e))
		api.FromSpec(&r.Container, d.Spec)
		if r.Name != "" {
			m.Names[r.Name] = r.ID
		}
		if r.Seq != 0 || r.Status != api.StatusPending {
			m.SetStatus(r, api.StatusPending) // else reserved here: already counted
		}
		r.Seq = seq
		return r.ID
	case events.ContainerCreated, events.ContainerStarted, events.ContainerExited,
		events.ContainerStopped, events.ContainerRemoved, events.ContainerFailed, events.ContainerLost, events.ContainerHealth:
		r, ok := m.Containers[events.Ext(e, events.ExtContainerID)]
		if !ok || r.Seq >= seq {
			return ""
		}
		// Removed is the end of a container: what its host reports after
		// (the end of the run the removal killed, reported late) changes
		// nothing. Only a new placement of the id starts it again.
		if r.Status == api.StatusRemoved {
			return ""
		}
		m.applyContainer(r, e)
		r.Generation = max(r.Generation, events.Generation(e))
		r.Seq = seq
		return r.ID
	case events.ContainerRescheduled:
		var d events.RescheduledData
		r, ok := m.Containers[events.Ext(e, events.ExtContainerID)]
		if events.Data(e, &d) != nil || !ok || r.Seq >= seq {
			return ""
		}
		r.ReplacedBy = d.ReplacementID
		r.Seq = seq
		return r.ID
	case events.HostLost, events.HostReturned:
		if m.LostHosts == nil {
			m.LostHosts = map[string]time.Time{}
		}
		if h := events.Ext(e, events.ExtHostID); e.Type() == events.HostLost {
			m.LostHosts[h] = e.Time()
		} else {
			delete(m.LostHosts, h)
		}
		return ""
	case events.HostDraining:
		var d events.HostDrainingData
		if events.Data(e, &d) != nil {
			return ""
		}
		if m.DrainingHosts == nil {
			m.DrainingHosts = map[string]time.Time{}
		}
		if _, already := m.DrainingHosts[d.HostID]; d.Draining && !already {
			m.DrainingHosts[d.HostID] = e.Time()
		} else if !d.Draining {
			delete(m.DrainingHosts, d.HostID)
		}
		return ""
	case events.AlertFiring, events.AlertResolved:
		var d events.AlertData
		if events.Data(e, &d) != nil {
			return ""
		}
		if m.Alerts == nil {
			m.Alerts = map[string]events.AlertData{}
		}
		if e.Type() == events.AlertFiring {
			m.Alerts[d.Alert] = d
		} else {
			delete(m.Alerts, d.Alert)
		}
		return ""
	case events.RequestAccepted:
		// The generation of the command it published: kept so that a model
		// rebuilt from the log goes on after it.
		r, ok := m.Containers[events.Ext(e, events.ExtContainerID)]
		if g := events.Generation(e); ok && g > r.Generation {
			r.Generation = g
			return r.ID
		}
	}
	return ""
}

func (m *Model) applyContainer(r *Record, e events.Event) {
	switch e.Type() {
	case events.ContainerCreated:
		if r.Status == api.StatusPending {
			m.SetStatus(r, api.StatusCreated)
		}
	// A run's start and end may reach the log out of order (a worker that
	// crashed reports the start again after its watcher saw the end): the
	// runtime's times order them, and a report older than what is known
	// changes nothing.
	case events.ContainerStarted:
		var d events.StartedData
		_ = events.Data(e, &d)
		if !r.FinishedAt.IsZero() && !d.StartedAt.After(r.FinishedAt) {
			return // this run's end is known
		}
		m.SetStatus(r, api.StatusRunning)
		r.StartedAt, r.FinishedAt, r.ExitCode, r.OOMKilled, r.Error = d.StartedAt, time.Time{}, 0, false, nil
		if d.Restarts > 0 {
			r.Restarts++ // by its policy: counted over its life
		}
		// A run with a readiness probe is ready once it passes.
		r.Ready, r.Health = r.Spec.Probes == nil || r.Spec.Probes.Readiness == nil, ""
	case events.ContainerHealth:
		var d events.HealthData
		if events.Data(e, &d) != nil || !d.StartedAt.Equal(r.StartedAt) || r.Status != api.StatusRunning {
			return // about another run
		}
		r.Health = d.Status
		switch d.Status {
		case events.HealthReady:
			r.Ready = true
		case events.HealthUnready, events.HealthUnhealthy:
			r.Ready = false
		}
	case events.ContainerExited:
		var d events.ExitedData
		_ = events.Data(e, &d)
		if !d.FinishedAt.IsZero() && d.FinishedAt.Before(r.StartedAt) {
			return // the end of an earlier run
		}
		m.SetStatus(r, api.StatusExited)
		r.ExitCode, r.OOMKilled, r.FinishedAt = d.ExitCode, d.OOMKilled, d.FinishedAt
	case events.ContainerStopped:
		var d events.StoppedData
		_ = events.Data(e, &d)
		if !d.FinishedAt.IsZero() && d.FinishedAt.Before(r.StartedAt) {
			return
		}
		m.SetStatus(r, api.StatusStopped)
		r.ExitCode, r.FinishedAt = d.ExitCode, d.FinishedAt
	case events.ContainerRemoved:
		m.SetStatus(r, api.StatusRemoved)
		if r.Name != "" && m.Names[r.Name] == r.ID {
			delete(m.Names, r.Name)
		}
	case events.ContainerLost:
		var d events.LostData
		_ = events.Data(e, &d)
		r.WasRunning, r.LostAt = r.Status == api.StatusRunning, e.Time()
		m.SetStatus(r, api.StatusLost)
		r.Error = &api.Error{Kind: api.KindNotFound, ID: r.ID, Message: d.Reason}
	case events.ContainerFailed:
		var d events.FailedData
		_ = events.Data(e, &d)
		if d.ExecID != "" || d.Operation == "exec" {
			return // an exec's failure is its caller's answer, not the container's state
		}
		r.Error, r.FailedRequest = &d.Error, strings.Clone(events.CorrelationID(e))
		if d.Operation == "place" || d.Operation == "create" {
			m.SetStatus(r, api.StatusFailed)
		}
	}
}
