package orchestrator

import (
	"container/heap"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// Session timers. Each session's time to live and idle timeout are
// absolute times in its record, so a restarted orchestrator fires them on
// time. The timer loop keeps a heap of when to look at which session next
// and sleeps until the earliest: no scan of every session. An entry may be
// stale (the session was extended, or was active); when it comes up, the
// session's real next moment is worked out again and scheduled. Expiries
// run apart from the loop, so a slow sandbox removal delays no other
// session's.

// timerEntry is one moment to look at a session.
type timerEntry struct {
	at time.Time
	id string
}

// timerHeap orders entries by time, earliest first.
type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// nextMoment is a ready session's next moment: when it expires (by its
// time to live or its idle timeout, whichever comes first) and when to warn
// that it will.
func nextMoment(s *api.Session) (at time.Time, timer string, warnAt time.Time) {
	at, timer = s.ExpiresAt, "ttl"
	if s.IdleTimeoutMs > 0 {
		if idleAt := s.LastActivityAt.Add(time.Duration(s.IdleTimeoutMs) * time.Millisecond); idleAt.Before(at) {
			at, timer = idleAt, "idle"
		}
	}
	warn := min(30*time.Second, time.Duration(s.TimeoutMs)*time.Millisecond/10)
	return at, timer, at.Add(-warn)
}

// scheduleLocked adds a ready session's next moment to the heap; o.sess.mu
// must be held.
func (o *Orchestrator) scheduleLocked(s *api.Session) {
	if s.Status != api.SessionReady {
		return
	}
	at, _, warnAt := nextMoment(s)
	if !o.sess.warned[s.ID].Equal(at) {
		at = warnAt
	}
	o.pushLocked(timerEntry{at: at, id: s.ID})
}

// pushLocked adds an entry and wakes the loop, which may sleep until a
// later one; o.sess.mu must be held.
func (o *Orchestrator) pushLocked(e timerEntry) {
	heap.Push(&o.sess.timers, e)
	select {
	case o.sess.wake <- struct{}{}:
	default:
	}
}

// sessionTimers fires the sessions' timers until ctx ends, and waits for
// the expiries it started.
func (o *Orchestrator) sessionTimers(ctx context.Context) error {
	var expiring sync.WaitGroup
	defer expiring.Wait()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	save := time.NewTicker(5 * time.Second)
	defer save.Stop()
	for {
		o.sess.mu.Lock()
		next := time.Hour
		if len(o.sess.timers) > 0 {
			next = max(time.Until(o.sess.timers[0].at), 0)
		}
		o.sess.mu.Unlock()
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-o.sess.wake:
			continue
		case <-save.C:
			// Activity is kept in memory between writes; write it now and
			// then so that an idle timer survives a restart too.
			for _, s := range o.Sessions(false) {
				_ = o.saveSession(ctx, &s)
			}
			continue
		case <-t.C:
		}
		for _, d := range o.dueSessions(time.Now()) {
			if !d.fire {
				if _, err := o.sessionEvent(ctx, events.SessionExpiring, derive(d.s.ID, "expiring "+d.at.String()),
					events.SessionExpiringData{SessionRef: sessionRef(&d.s), ExpiresAt: d.at, Timer: d.timer}, &d.s); err != nil {
					o.log.Warn("orchestrator: publish a session's expiry warning", "session_id", d.s.ID, "err", err)
				}
				continue
			}
			expiring.Add(1)
			go func() {
				defer expiring.Done()
				o.expire(ctx, d.s, d.timer)
			}()
		}
	}
}

// due is a session whose moment came: to warn, or to expire (fire).
type due struct {
	s     api.Session
	timer string
	at    time.Time
	fire  bool
}

// dueSessions takes the entries whose time came and says what each
// session needs now, scheduling what comes after.
func (o *Orchestrator) dueSessions(now time.Time) []due {
	o.sess.mu.Lock()
	defer o.sess.mu.Unlock()
	var out []due
	seen := map[string]bool{}
	for len(o.sess.timers) > 0 && !o.sess.timers[0].at.After(now) {
		id := heap.Pop(&o.sess.timers).(timerEntry).id
		s, ok := o.sess.m[id]
		if !ok || s.Status != api.SessionReady || o.sess.firing[id] || seen[id] {
			continue
		}
		seen[id] = true
		at, timer, warnAt := nextMoment(s)
		switch {
		case !now.Before(at):
			o.sess.firing[id] = true
			out = append(out, due{*s, timer, at, true})
		case !now.Before(warnAt) && !o.sess.warned[id].Equal(at):
			o.sess.warned[id] = at
			out = append(out, due{*s, timer, at, false})
			heap.Push(&o.sess.timers, timerEntry{at: at, id: id})
		default:
			o.scheduleLocked(s) // stale: its moment moved
		}
	}
	return out
}

// expire ends a session whose timer fired. Events first: a session whose
// expiry cannot be stored is looked at again a second later.
func (o *Orchestrator) expire(ctx context.Context, s api.Session, timer string) {
	defer func() {
		o.sess.mu.Lock()
		delete(o.sess.firing, s.ID)
		o.sess.mu.Unlock()
	}()
	reason := fmt.Sprintf("its time to live of %s ran out", time.Duration(s.TimeoutMs)*time.Millisecond)
	if timer == "idle" {
		reason = fmt.Sprintf("idle for %s", time.Duration(s.IdleTimeoutMs)*time.Millisecond)
	}
	if _, err := o.sessionEvent(ctx, events.SessionExpired, derive(s.ID, "expired"),
		events.SessionExpiredData{SessionRef: sessionRef(&s), Timer: timer, SetBy: s.SetBy, Reason: reason}, &s); err != nil {
		o.log.Warn("orchestrator: publish a session's expiry", "session_id", s.ID, "err", err)
		o.sess.mu.Lock()
		o.pushLocked(timerEntry{at: time.Now().Add(time.Second), id: s.ID})
		o.sess.mu.Unlock()
		return
	}
	o.endSession(ctx, &s, api.SessionExpired, reason, s.ContainerID)
}
