package orchestrator

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
)

// Draining. An operator drains a host to take it out of service in good
// order, as Nomad's node drain and Kubernetes' cordon and drain do:
// placement passes it by at once (host.draining), and each container on it
// whose reschedule policy lets it move (anything but never) is replaced
// elsewhere, once, by the path a lost host's containers take
// (container.rescheduled, reason "draining"); once its replacement runs the
// original is stopped (with its stop timeout) and removed from the host. What may not move stays for the
// operator. Ending the drain lets placement use the host again; what was
// already replaced still moves.

// drainHost carries out a host.drain.requested: it records that the host
// drains (or no longer) and what is to move.
func (o *Orchestrator) drainHost(ctx context.Context, req events.Event) (*accepted, error) {
	var d events.HostDrainRequestedData
	if err := events.Data(req, &d); err != nil {
		return nil, reject(api.KindInvalid, "data", "", "%v", err)
	}
	o.state.hostsMu.RLock()
	_, known := o.state.hosts[d.HostID]
	o.state.hostsMu.RUnlock()
	if !known {
		return nil, reject(api.KindNotFound, "hostId", d.HostID, "no host %s", d.HostID)
	}
	data := events.HostDrainingData{HostID: d.HostID, Draining: d.Drain}
	if d.Drain {
		o.state.Read(func(m *projection.Model) {
			for _, r := range m.Containers {
				switch {
				case r.Host != d.HostID || !r.Status.Active() || r.ReplacedBy != "":
				case movable(r):
					data.Moving = append(data.Moving, r.ID)
				default:
					data.Staying = append(data.Staying, r.ID)
				}
			}
		})
		slices.Sort(data.Moving)
		slices.Sort(data.Staying)
	}
	if _, err := o.publish(ctx, events.HostDraining, data, events.CausedBy(req), events.WithHost(d.HostID),
		events.WithID(events.DeriveID(events.RequestKey(req), "draining"))); err != nil {
		return nil, retry(err)
	}
	// Placement passes the host by from now on, not once the event comes
	// back from the stream (the fold does the same again).
	now := time.Now()
	o.state.Update(func(m *projection.Model) []string {
		if _, already := m.DrainingHosts[d.HostID]; d.Drain && !already {
			m.DrainingHosts[d.HostID] = now
		} else if !d.Drain {
			delete(m.DrainingHosts, d.HostID)
		}
		return nil
	})
	o.log.Info("orchestrator: a host drains", "host_id", d.HostID, "draining", d.Drain, "moving", len(data.Moving), "staying", len(data.Staying))
	return &accepted{Accepted: api.Accepted{RequestID: req.ID()}}, nil
}

// movable reports whether a container may be moved off a draining host:
// its reschedule policy is not never.
func movable(r *record) bool {
	return r.Reschedule.EffectivePolicy(r.Spec.RestartPolicy) != api.RescheduleNever
}

// migrate replaces the movable containers of draining hosts, and ends
// each original whose replacement runs (or is created, for one not to be
// started): a running one is stopped first, with its stop timeout, as a
// drain should let it go; a stopped one, or one that never ran, removed.
func (o *Orchestrator) migrate(ctx context.Context) {
	type move struct{ orig, prev *record }
	var due []move
	var ending []*record
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Seq == 0 || r.Status == api.StatusLost || r.Status == api.StatusRemoved {
				continue
			}
			if r.ReplacedBy != "" {
				// Replaced and not lost: moved off a draining host.
				rep := m.Containers[r.ReplacedBy]
				if rep != nil && (rep.Status == api.StatusRunning || rep.Status == api.StatusCreated && !rep.Start) {
					cp := *r
					ending = append(ending, &cp)
				}
				continue
			}
			if _, draining := m.DrainingHosts[r.Host]; !draining || !r.Status.Active() || !movable(r) {
				continue
			}
			cp := *r
			cp.WasRunning = cp.WasRunning || cp.Status == api.StatusRunning
			mv := move{orig: &cp}
			if rep, ok := m.Containers[replacementID(r)]; ok {
				rc := *rep
				mv.prev = &rc
			}
			due = append(due, mv)
		}
	})
	for _, mv := range due {
		reason := fmt.Sprintf("host %s is draining", mv.orig.Host)
		if err := o.replace1(ctx, mv.orig, mv.prev, reason); err != nil && ctx.Err() == nil {
			if o.unplaceable[mv.orig.ID] != err.Error() {
				o.log.Warn("orchestrator: a container of a draining host could not be moved yet", "container_id", mv.orig.ID, "err", err)
				o.unplaceable[mv.orig.ID] = err.Error()
			}
		}
	}
	for _, r := range ending {
		typ, step := events.CommandRemove, "drained"
		if r.Status == api.StatusRunning {
			typ, step = events.CommandStop, "drained: stop"
		}
		if o.drained[step+" "+r.ID] {
			continue
		}
		gen := o.state.nextGeneration(r.ID)
		reason := fmt.Sprintf("moved off host %s, which drains: replaced by %s", r.Host, r.ReplacedBy)
		if _, err := o.publish(ctx, typ, events.ContainerCommandData{ContainerID: r.ID, HostID: r.Host, Force: typ == events.CommandRemove, Reason: reason},
			events.WithContainer(r.ID), events.WithHost(r.Host), events.WithGeneration(gen),
			events.WithID(o.commandID(events.DeriveID(r.ID, step)))); err != nil {
			o.log.Warn("orchestrator: end a drained container", "container_id", r.ID, "step", step, "err", err)
			continue
		}
		o.drained[step+" "+r.ID] = true
	}
}
