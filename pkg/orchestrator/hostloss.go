package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// Host loss. A host is live while it was heard from within the liveness
// TTL; it is lost once silent for the TTL and the grace after it. Silence
// counts from when the control plane could last have heard it at the
// earliest: the leader's start, its term's start (the failover grace) or
// its last reconnection to the bus, so that the control plane's own
// outage neither rejects requests as "not live" nor declares hosts lost.
// Losses are rate-limited: a burst of lossBurst hosts, then one per
// lossEvery (or per TTL and grace, when shorter).
//
// The leader declares a host lost with a host.lost event and each
// container it held with container.lost (a new generation: the host's old
// commands are refused). Each lost container is then replaced, once, by
// its reschedule policy: a replacement placed on a fit host, whose placed
// event names the original, and a container.rescheduled event saying
// why. The replacement's id is derived from the original's, so that a
// leader doing it again (after a crash, or a successor) places the same
// one. A host that reports again is returned (host.returned), and its
// worker is told to remove what it still holds of the containers lost
// with it: their generation is newer than anything the host carried out.
//
// When most hosts go silent at once the fault is more likely the control
// plane's than theirs (a partition of the bus): nobody is declared lost
// until some of them are heard again.

// DefaultHostGrace is how long a host is waited for past its liveness TTL
// before it is declared lost: with the 10s TTL, a host is lost after 30s
// of silence (Nomad's heartbeat grace is 10s over its TTL; Kubernetes
// marks a node unreachable after 40s).
const DefaultHostGrace = 20 * time.Second

const (
	lossBurst = 3
	lossEvery = 10 * time.Second
)

// heard records that from now on the control plane can hear every host.
//
// It also marks when the control plane went deaf, as far as it can tell:
// the newest heartbeat it had then. A host heard last well before that
// (more than its TTL) was silent on its own account, and gets no grace for
// the control plane's deafness.
func (o *Orchestrator) heard(t time.Time) {
	var newest time.Time
	o.state.hostsMu.RLock()
	for _, h := range o.state.hosts {
		if h.LastSeen.After(newest) {
			newest = h.LastSeen
		}
	}
	o.state.hostsMu.RUnlock()
	for {
		old := o.heardSince.Load()
		if t.UnixNano() <= old {
			return
		}
		if o.heardSince.CompareAndSwap(old, t.UnixNano()) {
			o.deafSince.Store(newest.UnixNano())
			return
		}
	}
}

// ownSilence reports whether a host heard last at lastSeen went silent on
// its own account: before the control plane went deaf, by more than its
// TTL.
func (o *Orchestrator) ownSilence(lastSeen time.Time) bool {
	return lastSeen.Before(time.Unix(0, o.deafSince.Load()).Add(-o.liveness))
}

// lastHeard is when a host was last heard, or could have been: its last
// heartbeat, or, when its silence may be the control plane's, when the
// control plane began to listen again.
func (o *Orchestrator) lastHeard(lastSeen time.Time) time.Time {
	return o.lastHeardSince(lastSeen, o.heardFrom())
}

// lastHeardSince is lastHeard for a caller that read heardFrom (which may
// take hostsMu) before it took hostsMu.
func (o *Orchestrator) lastHeardSince(lastSeen, since time.Time) time.Time {
	if o.ownSilence(lastSeen) {
		return lastSeen
	}
	return scheduler.LastHeard(lastSeen, since)
}

// heardFrom is when the control plane could last have heard every host:
// its start, its term's, or its last reconnection to the bus, noticed
// here, at the first look after it.
func (o *Orchestrator) heardFrom() time.Time {
	if r := o.js.Conn().Stats().Reconnects; r != o.reconnects.Load() {
		o.reconnects.Store(r)
		o.heard(time.Now())
	}
	return time.Unix(0, o.heardSince.Load())
}

// watchLiveness declares silent hosts lost, returns those that report
// again, and replaces the containers lost, until ctx ends.
func (o *Orchestrator) watchLiveness(ctx context.Context) error {
	o.heard(time.Now()) // the failover grace: a new term hears every host afresh
	o.drained = map[string]bool{}
	t := time.NewTicker(min(max(o.grace/10, 50*time.Millisecond), time.Second))
	defer t.Stop()
	tokens, refilled := float64(lossBurst), time.Now()
	partitioned := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		now := time.Now()
		tokens = min(lossBurst, tokens+float64(now.Sub(refilled))/float64(min(lossEvery, o.liveness+o.grace)))
		refilled = now
		if !o.js.Conn().IsConnected() {
			// Cut off from the bus, the leader hears nobody: that says
			// nothing of the hosts, and a declaration made now would be
			// sent, out of date, once the connection is back.
			continue
		}
		silent, quiet, returned, total := o.silentHosts(now)
		for _, r := range returned {
			o.hostReturned(ctx, r)
		}
		switch {
		case len(silent) > 0 && total >= 3 && 2*quiet > total:
			if !partitioned {
				o.log.Error("orchestrator: most hosts are silent at once; taking it for a partition of the control plane, and declaring none lost",
					"silent", quiet, "hosts", total)
				partitioned = true
			}
		default:
			if partitioned {
				o.log.Info("orchestrator: the hosts are heard again", "silent", quiet, "hosts", total)
				partitioned = false
			}
			for _, h := range silent {
				if tokens < 1 {
					break
				}
				if o.hostLost(ctx, h, now) {
					tokens--
				}
			}
		}
		o.reschedule(ctx, now)
		o.migrate(ctx)
	}
}

// silentHost is a host past its TTL and grace.
type silentHost struct {
	id       string
	lastSeen time.Time
	lostAt   time.Time // for a returned host
}

// silentHosts lists the hosts to declare lost (silent past the TTL and
// grace) and those lost that reported again; quiet counts the hosts silent
// past the TTL alone, which judges a partition (hosts cut off together go
// quiet within moments of each other, not at one instant), and total the
// hosts not lost.
func (o *Orchestrator) silentHosts(now time.Time) (silent []silentHost, quiet int, returned []silentHost, total int) {
	var lost map[string]time.Time
	o.state.Read(func(m *projection.Model) { lost = maps.Clone(m.LostHosts) })
	since, limit := o.heardFrom(), o.liveness+o.grace
	o.state.hostsMu.RLock()
	defer o.state.hostsMu.RUnlock()
	for id, h := range o.state.hosts {
		if at, ok := lost[id]; ok {
			if h.LastSeen.After(at) {
				returned = append(returned, silentHost{id: id, lastSeen: h.LastSeen, lostAt: at})
			}
			continue
		}
		total++
		quietFor := now.Sub(o.lastHeardSince(h.LastSeen, since))
		if quietFor > o.liveness {
			quiet++
		}
		if quietFor > limit {
			silent = append(silent, silentHost{id: id, lastSeen: h.LastSeen})
		}
	}
	slices.SortFunc(silent, func(a, b silentHost) int { return a.lastSeen.Compare(b.lastSeen) })
	return silent, quiet, returned, total
}

// hostLost declares a host lost, and every container it held; false when
// the declaration could not be stored (it is tried again).
func (o *Orchestrator) hostLost(ctx context.Context, h silentHost, now time.Time) bool {
	var held []*record
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Host == h.id && r.Status.Active() && r.Seq != 0 {
				cp := *r
				held = append(held, &cp)
			}
		}
	})
	ids := make([]string, 0, len(held))
	for _, r := range held {
		ids = append(ids, r.ID)
	}
	slices.Sort(ids)
	silence := now.Sub(o.lastHeard(h.lastSeen)).Round(time.Second)
	reason := fmt.Sprintf("host %s was not heard from for %v (liveness %v, grace %v)", h.id, silence, o.liveness, o.grace)
	stamp := strconv.FormatInt(h.lastSeen.UnixNano(), 10)
	if _, err := o.publish(ctx, events.HostLost, events.HostLostData{HostID: h.id, LastSeen: h.lastSeen.UTC(), Reason: reason, Containers: ids},
		events.WithHost(h.id), events.WithID(events.DeriveID(h.id, "lost "+stamp))); err != nil {
		o.log.Warn("orchestrator: declare a host lost", "host_id", h.id, "err", err)
		return false
	}
	o.log.Warn("orchestrator: a host is lost", "host_id", h.id, "last_seen", h.lastSeen, "containers", len(ids))
	for _, r := range held {
		gen := o.state.nextGeneration(r.ID)
		if _, err := o.publish(ctx, events.ContainerLost, events.LostData{ContainerID: r.ID, HostID: h.id, Reason: reason},
			events.WithContainer(r.ID), events.WithHost(h.id), events.WithGeneration(gen),
			events.WithID(events.DeriveID(r.ID, "lost with host "+stamp))); err != nil {
			o.log.Warn("orchestrator: declare a container lost with its host", "container_id", r.ID, "err", err)
		}
	}
	return true
}

// hostReturned says a lost host reports again, and has its worker remove
// what it still holds of the containers lost with it.
func (o *Orchestrator) hostReturned(ctx context.Context, h silentHost) {
	stamp := strconv.FormatInt(h.lostAt.UnixNano(), 10)
	var stale []*record
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Host == h.id && r.Status == api.StatusLost {
				cp := *r
				stale = append(stale, &cp)
			}
		}
	})
	for _, r := range stale {
		reason := fmt.Sprintf("a stale copy: lost with host %s", h.id)
		if r.ReplacedBy != "" {
			reason += ", and replaced by " + r.ReplacedBy
		}
		gen := o.state.nextGeneration(r.ID)
		if _, err := o.publish(ctx, events.CommandRemove, events.ContainerCommandData{ContainerID: r.ID, HostID: h.id, Force: true, Reason: reason},
			events.WithContainer(r.ID), events.WithHost(h.id), events.WithGeneration(gen),
			events.WithID(o.commandID(events.DeriveID(r.ID, "stale copy "+stamp)))); err != nil {
			o.log.Warn("orchestrator: remove a stale copy", "container_id", r.ID, "err", err)
			return // tried again at the next look: the host is returned last
		}
	}
	if _, err := o.publish(ctx, events.HostReturned, events.HostReturnedData{HostID: h.id, LostAt: h.lostAt.UTC(), LastSeen: h.lastSeen.UTC()},
		events.WithHost(h.id), events.WithID(events.DeriveID(h.id, "returned "+stamp))); err != nil {
		o.log.Warn("orchestrator: return a host", "host_id", h.id, "err", err)
		return
	}
	o.log.Info("orchestrator: a lost host is back", "host_id", h.id, "stale_copies", len(stale))
}

// reschedule replaces the lost containers whose policy asks for it.
func (o *Orchestrator) reschedule(ctx context.Context, now time.Time) {
	var due []*record
	placed := map[string]*record{}
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Status != api.StatusLost || r.ReplacedBy != "" || r.Seq == 0 {
				continue
			}
			switch r.Reschedule.EffectivePolicy(r.Spec.RestartPolicy) {
			case api.RescheduleAlways:
			case api.RescheduleOnFailure:
				if !r.WasRunning {
					continue
				}
			default:
				continue
			}
			if r.Reschedule != nil && now.Before(r.LostAt.Add(time.Duration(r.Reschedule.LostAfterMs)*time.Millisecond)) {
				continue
			}
			cp := *r
			due = append(due, &cp)
			if rep, ok := m.Containers[replacementID(r)]; ok {
				rc := *rep
				placed[r.ID] = &rc
			}
		}
	})
	for _, r := range due {
		reason := fmt.Sprintf("container %s was lost with host %s; reschedule policy %s", r.ID, r.Host, r.Reschedule.EffectivePolicy(r.Spec.RestartPolicy))
		if err := o.replace1(ctx, r, placed[r.ID], reason); err != nil && ctx.Err() == nil {
			if o.unplaceable[r.ID] != err.Error() {
				o.log.Warn("orchestrator: a lost container could not be replaced yet", "container_id", r.ID, "err", err)
				o.unplaceable[r.ID] = err.Error()
			}
		}
	}
}

// replacementID is the id of the container that replaces r.
func replacementID(r *record) string {
	return events.ContainerIDFor(r.ID + " replacement " + strconv.Itoa(r.Attempt+1))
}

// replace1 places the replacement of a lost (or drained) container, or
// finishes what an earlier attempt began (prev, the replacement already
// placed); reason says why, in its rescheduled event.
func (o *Orchestrator) replace1(ctx context.Context, orig, prev *record, reason string) error {
	if len(orig.Spec.Secrets) > 0 {
		return fmt.Errorf("it has secrets, whose values the control plane does not keep: send its create request again")
	}
	rep := prev
	if rep == nil {
		rep = &record{Container: api.Container{ID: replacementID(orig), Name: orig.Name, RequestID: orig.RequestID, Replaces: orig.ID},
			RequestSource: orig.RequestSource, RequestDigest: orig.RequestDigest, Spec: orig.Spec,
			Constraints: orig.Constraints, Placement: orig.Placement, Reschedule: orig.Reschedule, Start: orig.Start || orig.WasRunning,
			Attempt: orig.Attempt + 1}
		api.FromSpec(&rep.Container, orig.Spec)
		sreq, err := placementOf(api.CreateRequest{Driver: orig.Driver, Constraints: orig.Constraints, Placement: orig.Placement, Spec: orig.Spec})
		if err != nil {
			return err
		}
		if err := o.reserveReplacement(sreq, rep, orig); err != nil {
			return err
		}
	}
	cause := []events.Option{events.WithExtension(events.ExtCorrelationID, orig.RequestID)}
	if prev == nil || prev.Status == api.StatusPending {
		if err := o.announceReplacement(ctx, rep, cause); err != nil {
			if prev == nil {
				o.state.release(rep.ID)
			}
			return err
		}
	}
	_, err := o.publish(ctx, events.ContainerRescheduled, events.RescheduledData{ContainerID: orig.ID, ReplacementID: rep.ID, FromHost: orig.Host,
		Reason: reason, Attempt: rep.Attempt}, append(cause, events.WithContainer(orig.ID), events.WithHost(orig.Host),
		events.WithID(events.DeriveID(orig.ID, "rescheduled")))...)
	if err == nil {
		delete(o.unplaceable, orig.ID)
		o.log.Info("orchestrator: a container is replaced", "container_id", orig.ID, "replacement_id", rep.ID, "host_id", rep.Host, "reason", reason)
	}
	return err
}

// reserveReplacement places a replacement and reserves what it holds, as
// reserve does for a create; the original's name passes to it.
func (o *Orchestrator) reserveReplacement(req scheduler.Request, rep, orig *record) (err error) {
	o.state.Update(func(m *projection.Model) []string {
		if rep.Name != "" && m.Names[rep.Name] == orig.ID {
			delete(m.Names, rep.Name)
		}
		if _, what := taken(m, rep); what != "" {
			err = fmt.Errorf("its %s is taken", what)
			return nil
		}
		o.state.hostsMu.RLock()
		defer o.state.hostsMu.RUnlock()
		var plan scheduler.Plan
		if plan, err = scheduler.Place(o.snapshot(m), req); err != nil {
			return nil
		}
		rep.Host, rep.Driver = plan.HostID, plan.Driver
		reserve(m, rep)
		return []string{rep.ID}
	})
	return err
}

// announceReplacement publishes a replacement's placement and its create
// command, with ids derived from its own.
func (o *Orchestrator) announceReplacement(ctx context.Context, r *record, cause []events.Option) error {
	opts := append(cause, events.WithContainer(r.ID), events.WithHost(r.Host), events.WithSession(r.Spec.SessionID), events.WithGeneration(r.Generation))
	placed := events.PlacedData{ContainerID: r.ID, HostID: r.Host, Driver: r.Driver, Name: r.Name, Spec: r.Spec,
		RequestSource: r.RequestSource, RequestDigest: r.RequestDigest, Constraints: r.Constraints, Placement: r.Placement,
		Reschedule: r.Reschedule, Start: r.Start, Replaces: r.Replaces, Attempt: r.Attempt}
	if _, err := o.publish(ctx, events.ContainerPlaced, placed, append(opts, events.WithID(events.DeriveID(r.ID, "placed")))...); err != nil {
		return err
	}
	_, err := o.publish(ctx, events.CommandCreate, events.CreateCommandData{ContainerID: r.ID, HostID: r.Host, Driver: r.Driver, Spec: r.Spec, Start: r.Start},
		append(opts, events.WithID(o.commandID(r.ID)))...)
	return err
}

// silentNotLost reports whether a placement failed with hosts that are
// silent and not lost while their silence may be the control plane's own:
// they may yet be heard.
func (o *Orchestrator) silentNotLost(err error) bool {
	var pe *scheduler.PlacementError
	if !errors.As(err, &pe) || !time.Now().Before(o.deafUntil()) {
		return false
	}
	var lost map[string]time.Time
	o.state.Read(func(m *projection.Model) { lost = maps.Clone(m.LostHosts) })
	o.state.hostsMu.RLock()
	defer o.state.hostsMu.RUnlock()
	for _, u := range pe.Hosts {
		h := o.state.hosts[u.HostID]
		if _, isLost := lost[u.HostID]; u.Kind == scheduler.NotLive && !isLost && h != nil && !o.ownSilence(h.LastSeen) {
			return true
		}
	}
	return false
}

// deafUntil is until when a host's silence may be the control plane's
// own: the TTL and grace after it began to listen (started, took over,
// reconnected). Within it a request that needs a silent host waits for
// it; past it, a silent host is refused at once.
func (o *Orchestrator) deafUntil() time.Time { return o.heardFrom().Add(o.liveness + o.grace) }

// awaitHost waits, while the host's silence may be the control plane's
// own (deafUntil), for a host that is silent and not lost to be heard
// again; false when it was not.
func (o *Orchestrator) awaitHost(ctx context.Context, host string) bool {
	for time.Now().Before(o.deafUntil()) {
		var lost bool
		o.state.Read(func(m *projection.Model) { _, lost = m.LostHosts[host] })
		o.state.hostsMu.RLock()
		h, known := o.state.hosts[host]
		o.state.hostsMu.RUnlock()
		if lost || !known || o.ownSilence(h.LastSeen) {
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
		if o.Live(host) {
			return true
		}
	}
	return false
}
