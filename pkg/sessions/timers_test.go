package sessions

import (
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
)

func newTimers() *Service {
	return &Service{m: map[string]*api.Session{}, warned: map[string]time.Time{}, firing: map[string]bool{}, wake: make(chan struct{}, 1)}
}

func (s *Service) add(sess *api.Session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[sess.ID] = sess
	s.scheduleLocked(sess)
}

// fired lists what due says at now, as "id:timer:warn" or "id:timer:fire".
func (s *Service) fired(now time.Time) []string {
	var out []string
	for _, d := range s.due(now) {
		what := "warn"
		if d.fire {
			what = "fire"
		}
		out = append(out, d.sess.ID+":"+d.timer+":"+what)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A session is warned once before it expires, then expired once, by the
// timer that comes first; an extended session's old moments are stale and
// fire nothing; activity holds the idle timer off.
func TestTimers(t *testing.T) {
	s := newTimers()
	t0 := time.Now().UTC()
	ttl := &api.Session{ID: "ttl", Status: api.SessionReady, ExpiresAt: t0.Add(100 * time.Second), TimeoutMs: 100_000, LastActivityAt: t0}
	idle := &api.Session{ID: "idle", Status: api.SessionReady, ExpiresAt: t0.Add(time.Hour), TimeoutMs: 3_600_000,
		IdleTimeoutMs: 60_000, LastActivityAt: t0}
	ext := &api.Session{ID: "ext", Status: api.SessionReady, ExpiresAt: t0.Add(50 * time.Second), TimeoutMs: 50_000, LastActivityAt: t0}
	for _, sess := range []*api.Session{ttl, idle, ext} {
		s.add(sess)
	}
	// change edits a session under the lock and schedules it again, as
	// activity and extend do.
	change := func(sess *api.Session, edit func()) func() {
		return func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			edit()
			delete(s.warned, sess.ID)
			s.scheduleLocked(sess)
		}
	}
	steps := []struct {
		at   time.Duration
		do   func()
		want []string
	}{
		{at: 10 * time.Second},
		// Activity at 20 s moves the idle expiry from 60 s to 80 s.
		{at: 20 * time.Second, do: change(idle, func() { idle.LastActivityAt = t0.Add(20 * time.Second) })},
		{at: 30 * time.Second}, // its old warning is stale
		// ext warns a tenth of its 50 s before it ends.
		{at: 45 * time.Second, want: []string{"ext:ttl:warn"}},
		// Extended to 200 s: its expiry at 50 s is stale.
		{at: 47 * time.Second, do: change(ext, func() { ext.ExpiresAt, ext.TimeoutMs = t0.Add(200*time.Second), 200_000 })},
		// The idle timer warns 30 s before it fires.
		{at: 50 * time.Second, want: []string{"idle:idle:warn"}},
		{at: 79 * time.Second},
		{at: 80 * time.Second, want: []string{"idle:idle:fire"}},
		{at: 90 * time.Second, want: []string{"ttl:ttl:warn"}},
		{at: 100 * time.Second, want: []string{"ttl:ttl:fire"}},
		// Being expired, they fire no more.
		{at: 150 * time.Second},
		{at: 180 * time.Second, want: []string{"ext:ttl:warn"}},
		{at: 200 * time.Second, want: []string{"ext:ttl:fire"}},
		{at: time.Hour},
	}
	for _, st := range steps {
		if st.do != nil {
			st.do()
			continue
		}
		if got := s.fired(t0.Add(st.at)); !equal(got, st.want) {
			t.Fatalf("at %v: %v; want %v", st.at, got, st.want)
		}
	}
}
