package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// What the doors (pkg/gateway) and sessions ask of the control plane,
// besides Handle: a request carried out and waited for, and reads of the
// projection.

// DefaultWait is how long the doors wait for an operation to take effect
// before they answer with what is known.
const DefaultWait = 60 * time.Second

// ErrNotYet says a request was accepted but its operation had not taken
// effect when the wait ended; the answer is what is known so far.
var ErrNotYet = errors.New("orchestrator: accepted; not carried out yet")

// Accept handles a request and returns what was accepted. A rejection is
// its *api.Error; an outcome that could not be recorded is an
// unavailable one, and the request may be sent again.
func (o *Orchestrator) Accept(ctx context.Context, req events.Event) (api.Accepted, error) {
	reply, err := o.Handle(ctx, req)
	if err != nil {
		return api.Accepted{}, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
	}
	if reply.Type() == events.RequestRejected {
		var d events.RejectedData
		if err := events.Data(reply, &d); err != nil {
			return api.Accepted{}, &api.Error{Kind: api.KindInternal, Message: "unreadable rejection: " + err.Error()}
		}
		return api.Accepted{}, &d.Error
	}
	var acc api.Accepted
	if err := events.Data(reply, &acc); err != nil {
		return api.Accepted{}, &api.Error{Kind: api.KindInternal, Message: "unreadable outcome: " + err.Error()}
	}
	return acc, nil
}

// Do handles a container request and waits until its operation took
// effect: a create until the container is created (running, if the
// request starts it), a start until it runs (or ran and ended), a stop
// until it no longer runs, a remove until it is gone. It returns the
// container as it then is. An operation of the request that failed is its
// error. When ctx ends first the answer is the container as known, or
// only what was accepted, with ErrNotYet.
func (o *Orchestrator) Do(ctx context.Context, req events.Event) (api.Accepted, api.Container, error) {
	since := time.Now().Add(-time.Second)
	acc, err := o.Accept(ctx, req)
	if err != nil {
		return acc, api.Container{}, err
	}
	done := doneWhen(req, since)
	rec, err := o.state.WaitFor(ctx, acc.ContainerID, func(r *record) bool {
		return done(r) || r.FailedRequest == acc.RequestID
	})
	if err != nil {
		c, _ := o.Container(acc.ContainerID)
		return acc, c, ErrNotYet
	}
	if rec.FailedRequest == acc.RequestID && rec.Error != nil {
		e := *rec.Error
		e.ID = rec.ID
		return acc, view(rec, o.Live), &e
	}
	return acc, view(rec, o.Live), nil
}

// doneWhen says when the operation a request asks for took effect.
func doneWhen(req events.Event, since time.Time) func(*record) bool {
	switch req.Type() {
	case events.ContainerCreateRequested:
		var d api.CreateRequest
		_ = events.Data(req, &d)
		return func(r *record) bool {
			switch r.Status {
			case api.StatusFailed, api.StatusExited, api.StatusStopped, api.StatusRemoved:
				return true
			case api.StatusRunning:
				return d.Start
			case api.StatusCreated:
				return !d.Start
			}
			return false
		}
	case events.ContainerStartRequested:
		return func(r *record) bool {
			return r.Status == api.StatusRunning || (r.Status == api.StatusExited && r.FinishedAt.After(since))
		}
	case events.ContainerStopRequested:
		return func(r *record) bool { return !r.Status.Active() || r.Status == api.StatusCreated }
	case events.ContainerRemoveRequested:
		return func(r *record) bool { return r.Status == api.StatusRemoved }
	}
	return func(*record) bool { return true }
}

// Exec handles an exec request and waits for its result and the stored
// exec.completed event that carried it. A result that does not come
// within DefaultWait past the exec's own timeout is ErrNotYet.
func (o *Orchestrator) Exec(ctx context.Context, req events.Event) (*api.ExecResult, events.Event, error) {
	outcome, forget := o.state.expectExec(events.DeriveID(events.RequestKey(req), "exec"))
	defer forget()
	if _, err := o.Accept(ctx, req); err != nil {
		return nil, events.Event{}, err
	}
	var d events.ExecRequestedData
	_ = events.Data(req, &d)
	limit := time.NewTimer(DefaultWait + time.Duration(d.TimeoutMs)*time.Millisecond)
	defer limit.Stop()
	select {
	case out := <-outcome:
		if out.err != nil {
			return nil, events.Event{}, out.err
		}
		return out.res, out.event, nil
	case <-limit.C:
		return nil, events.Event{}, ErrNotYet
	case <-ctx.Done():
		return nil, events.Event{}, &api.Error{Kind: api.KindTimeout, Message: "no result before the wait ended: " + ctx.Err().Error()}
	}
}

// Container returns a container by id or name.
func (o *Orchestrator) Container(id string) (api.Container, bool) {
	if rid, err := o.Resolve(id, false); err == nil {
		id = rid
	}
	r, ok := o.state.Get(id)
	if !ok {
		return api.Container{}, false
	}
	return view(r, o.Live), true
}

// Resolve returns the id of the container ref names: an id, a name or a
// unique prefix of an id (removed containers too, when asked for while the
// state still has them). A prefix that fits several is an error listing
// them.
func (o *Orchestrator) Resolve(ref string, removed bool) (string, error) {
	id, matches := o.state.Resolve(ref, removed)
	switch {
	case id != "":
		return id, nil
	case len(matches) > 1:
		return "", &api.Error{Kind: api.KindInvalid, Field: "id", ID: ref, Message: fmt.Sprintf(
			"%q is the start of %d containers' ids: %s; give more of it", ref, len(matches), strings.Join(matches, ", "))}
	}
	return "", &api.Error{Kind: api.KindNotFound, ID: ref, Message: "no container " + ref}
}

// List returns the containers q selects.
func (o *Orchestrator) List(q events.ListQuery) []api.Container {
	out := []api.Container{}
	for _, r := range o.state.List() {
		c := view(r, o.Live)
		switch {
		case q.Status != "" && string(c.Status) != q.Status:
			continue
		case q.Status == "" && !q.All && c.Status != api.StatusRunning:
			continue
		case q.Session != "" && c.SessionID != q.Session:
			continue
		}
		match := true
		for k, v := range q.Labels {
			if c.Labels[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, c)
		}
	}
	return out
}

// Live reports whether a host has reported recently and is not lost. A
// host silent since the control plane began to listen is not live, but
// requests wait for it a while (see awaitHost) rather than being refused.
func (o *Orchestrator) Live(host string) bool {
	o.state.hostsMu.RLock()
	h, ok := o.state.hosts[host]
	o.state.hostsMu.RUnlock()
	if !ok {
		return false
	}
	var lostAt time.Time
	var lost bool
	o.state.Read(func(m *projection.Model) { lostAt, lost = m.LostHosts[host] })
	if lost && !h.LastSeen.After(lostAt) {
		return false
	}
	return scheduler.Live(h.LastSeen, time.Now(), o.liveness)
}

// Hosts returns the registered hosts.
func (o *Orchestrator) Hosts() []api.Host {
	count := map[string]int{}
	allocated := map[string]scheduler.Resources{}
	var lostHosts, draining map[string]time.Time
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Status.Active() {
				count[r.Host]++
			}
		}
		maps.Copy(allocated, m.Allocated)
		lostHosts, draining = maps.Clone(m.LostHosts), maps.Clone(m.DrainingHosts)
	})
	o.state.hostsMu.RLock()
	defer o.state.hostsMu.RUnlock()
	out := make([]api.Host, 0, len(o.state.hosts))
	for _, h := range o.state.hosts {
		a := allocated[h.ID]
		out = append(out, api.Host{ID: h.ID, Labels: h.Labels, Drivers: h.Drivers, Capabilities: h.Capabilities,
			Capacity:  api.Resources{CPU: h.Capacity.CPU, Memory: h.Capacity.MemoryMB, Disk: h.Capacity.DiskMB, Pids: h.Capacity.Pids, GPUs: h.Capacity.GPUs},
			Reserved:  api.Resources{CPU: h.Reserved.CPU, Memory: h.Reserved.MemoryMB, Pids: h.Reserved.Pids, GPUs: h.Reserved.GPUs},
			Allocated: api.Resources{CPU: math.Round(a.CPU*1e6) / 1e6, Memory: a.MemoryMB, Pids: a.Pids, GPUs: a.GPUs}, Containers: count[h.ID], // no float residue
			LastSeen: h.LastSeen, StartedAt: h.StartedAt, Live: scheduler.Live(h.LastSeen, time.Now(), o.liveness)})
		if at, lost := lostHosts[h.ID]; lost && !h.LastSeen.After(at) {
			out[len(out)-1].Live, out[len(out)-1].LostAt = false, at
		}
		if until := o.state.quarantine[h.ID]; until.After(time.Now()) {
			out[len(out)-1].QuarantinedUntil = until
		}
		out[len(out)-1].DrainingSince = draining[h.ID]
	}
	return out
}
