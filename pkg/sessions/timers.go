package sessions

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

// scheduleLocked adds a ready session's next moment to the heap; s.mu
// must be held.
func (s *Service) scheduleLocked(sess *api.Session) {
	if sess.Status != api.SessionReady {
		return
	}
	at, _, warnAt := nextMoment(sess)
	if !s.warned[sess.ID].Equal(at) {
		at = warnAt
	}
	s.pushLocked(timerEntry{at: at, id: sess.ID})
}

// pushLocked adds an entry and wakes the loop, which may sleep until a
// later one; s.mu must be held.
func (s *Service) pushLocked(e timerEntry) {
	heap.Push(&s.timers, e)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// runTimers fires the sessions' timers until ctx ends, and waits for the
// expiries it started.
func (s *Service) runTimers(ctx context.Context) error {
	var expiring sync.WaitGroup
	defer expiring.Wait()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	save := time.NewTicker(5 * time.Second)
	defer save.Stop()
	sandboxes := time.NewTicker(time.Second)
	defer sandboxes.Stop()
	for {
		s.mu.Lock()
		next := time.Hour
		if len(s.timers) > 0 {
			next = max(time.Until(s.timers[0].at), 0)
		}
		s.mu.Unlock()
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
			continue
		case <-sandboxes.C:
			s.failGone(ctx)
			continue
		case <-save.C:
			// Activity is kept in memory between writes; write it now and
			// then so that an idle timer survives a restart too.
			for _, sess := range s.List(false, admin) {
				_ = s.save(ctx, &sess)
			}
			continue
		case <-t.C:
		}
		for _, d := range s.due(time.Now()) {
			if !d.fire {
				if _, err := s.event(ctx, events.SessionExpiring, events.DeriveID(d.sess.ID, "expiring "+d.at.String()),
					events.SessionExpiringData{SessionRef: ref(&d.sess), ExpiresAt: d.at, Timer: d.timer}, &d.sess); err != nil {
					s.log.Warn("sessions: publish a session's expiry warning", "session_id", d.sess.ID, "err", err)
				}
				continue
			}
			expiring.Add(1)
			go func() {
				defer expiring.Done()
				s.expire(ctx, d.sess, d.timer)
			}()
		}
	}
}

// moment is a session whose moment came: to warn, or to expire (fire).
type moment struct {
	sess  api.Session
	timer string
	at    time.Time
	fire  bool
}

// due takes the entries whose time came and says what each session needs
// now, scheduling what comes after.
func (s *Service) due(now time.Time) []moment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []moment
	seen := map[string]bool{}
	for len(s.timers) > 0 && !s.timers[0].at.After(now) {
		id := heap.Pop(&s.timers).(timerEntry).id
		sess, ok := s.m[id]
		if !ok || sess.Status != api.SessionReady || s.firing[id] || seen[id] {
			continue
		}
		seen[id] = true
		at, timer, warnAt := nextMoment(sess)
		switch {
		case !now.Before(at):
			s.firing[id] = true
			out = append(out, moment{*sess, timer, at, true})
		case !now.Before(warnAt) && !s.warned[id].Equal(at):
			s.warned[id] = at
			out = append(out, moment{*sess, timer, at, false})
			heap.Push(&s.timers, timerEntry{at: at, id: id})
		default:
			s.scheduleLocked(sess) // stale: its moment moved
		}
	}
	return out
}

// expire ends a session whose timer fired. Events first: a session whose
// expiry cannot be stored is looked at again a second later.
func (s *Service) expire(ctx context.Context, sess api.Session, timer string) {
	defer func() {
		s.mu.Lock()
		delete(s.firing, sess.ID)
		s.mu.Unlock()
	}()
	reason := fmt.Sprintf("its time to live of %s ran out", time.Duration(sess.TimeoutMs)*time.Millisecond)
	if timer == "idle" {
		reason = fmt.Sprintf("idle for %s", time.Duration(sess.IdleTimeoutMs)*time.Millisecond)
	}
	if _, err := s.event(ctx, events.SessionExpired, events.DeriveID(sess.ID, "expired"),
		events.SessionExpiredData{SessionRef: ref(&sess), Timer: timer, SetBy: sess.SetBy, Reason: reason}, &sess); err != nil {
		s.log.Warn("sessions: publish a session's expiry", "session_id", sess.ID, "err", err)
		s.mu.Lock()
		s.pushLocked(timerEntry{at: time.Now().Add(time.Second), id: sess.ID})
		s.mu.Unlock()
		return
	}
	s.end(ctx, &sess, api.SessionExpired, reason, sess.ContainerID)
}
