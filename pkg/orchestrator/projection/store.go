package projection

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// Store keeps a model behind a lock for the control plane: events are
// applied in order, who waits for a container is woken by that
// container's changes only, and what changed is written behind to a
// bucket, so that a restart resumes from the bucket instead of replaying
// the whole log. The bucket is a cache: Load rebuilds from the log when it
// cannot be trusted.
type Store struct {
	mu      sync.RWMutex
	m       *Model
	dirty   map[string]uint64 // container ids to write behind → the change that marked them
	changes uint64            // counts the marks, so a flush clears only what it wrote
	stream  time.Time         // the events stream's creation time
	waiters map[string][]chan struct{}
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{m: New(), dirty: map[string]uint64{}, waiters: map[string][]chan struct{}{}}
}

// notifyLocked wakes who waits for a change of one container; s.mu must
// be held.
func (s *Store) notifyLocked(id string) {
	for _, ch := range s.waiters[id] {
		close(ch)
	}
	delete(s.waiters, id)
}

// Apply folds one event of the events stream into the model, marks what
// it changed to be written behind and wakes who waits for it.
func (s *Store) Apply(seq uint64, e events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := Apply(s.m, seq, e); id != "" {
		s.changes++
		s.dirty[id] = s.changes
		s.notifyLocked(id)
	}
}

// ForgetRemoved drops the removed containers from memory without writing
// anything: a follower's projection, which the leader writes, would keep
// them for ever otherwise.
func (s *Store) ForgetRemoved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, r := range s.m.Containers {
		if r.Status == api.StatusRemoved {
			delete(s.m.Containers, id)
			delete(s.dirty, id)
		}
	}
}

// Sweep deletes from the bucket the records of containers the state does
// not hold (removed, and forgotten by a follower before the leader wrote
// their removal): a new leader's state is the bucket's from then on.
func (s *Store) Sweep(ctx context.Context, kv jetstream.KeyValue) error {
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var stale []string
	for key := range lister.Keys() {
		if key == cursorKey || key == lostHostsKey || key == drainingHostsKey || key == alertsKey {
			continue
		}
		s.mu.Lock()
		_, held := s.m.Containers[key]
		s.mu.Unlock()
		if !held {
			stale = append(stale, key)
		}
	}
	for _, key := range stale {
		if err := kv.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	return nil
}

// MarkAllDirty marks every record to be written at the next flush: a new
// leader writes its whole state over what a predecessor left.
func (s *Store) MarkAllDirty() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id := range s.m.Containers {
		s.changes++
		s.dirty[id] = s.changes
	}
}

// Read calls f with the model under the read lock; f must not keep it.
func (s *Store) Read(f func(m *Model)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	f(s.m)
}

// Update calls f with the model under the write lock, for what the
// control plane holds beside the log (reservations, generations), and
// wakes who waits for the containers f returns. What Update changes is
// not written behind: the events that follow are.
func (s *Store) Update(f func(m *Model) (changed []string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range f(s.m) {
		s.notifyLocked(id)
	}
}

// Get returns a copy of the container with this id or name, unless it
// was removed.
func (s *Store) Get(id string) (*Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.m.Containers[id]
	if !ok {
		if rid, byName := s.m.Names[id]; byName {
			r, ok = s.m.Containers[rid]
		}
	}
	if !ok || r.Status == api.StatusRemoved {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// Resolve finds the container a reference names: its id, its name, or a
// unique prefix of its id, as docker takes them. Removed containers count
// only when asked for. When a prefix fits several, matches lists them.
func (s *Store) Resolve(ref string, removed bool) (id string, matches []string) {
	if ref == "" {
		return "", nil
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	counts := func(r *Record) bool { return removed || r.Status != api.StatusRemoved }
	if r, ok := s.m.Containers[ref]; ok && counts(r) {
		return ref, nil
	}
	if rid, ok := s.m.Names[ref]; ok {
		return rid, nil
	}
	for cid, r := range s.m.Containers {
		if strings.HasPrefix(cid, ref) && counts(r) {
			matches = append(matches, cid)
		}
	}
	if len(matches) == 1 {
		return matches[0], nil
	}
	slices.Sort(matches)
	return "", matches
}

// Known returns a copy of the container with this id, removed or not,
// while the store keeps it (until its removal is written behind).
func (s *Store) Known(id string) (*Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.m.Containers[id]
	if !ok {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// Placed returns a copy of the container with this id, unless it was
// removed.
func (s *Store) Placed(id string) (*Record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.m.Containers[id]
	if !ok || r.Status == api.StatusRemoved {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// WaitFor waits until cond holds for the container or ctx ends. It is
// woken by changes of that container only.
func (s *Store) WaitFor(ctx context.Context, id string, cond func(*Record) bool) (*Record, error) {
	for {
		s.mu.Lock()
		r, ok := s.m.Containers[id]
		// A record no longer kept was removed (the write-behind forgets
		// removed containers).
		cp := Record{Container: api.Container{ID: id, Status: api.StatusRemoved}}
		if ok {
			cp = *r
		}
		if cond(&cp) {
			s.mu.Unlock()
			return &cp, nil
		}
		changed := make(chan struct{})
		s.waiters[id] = append(s.waiters[id], changed)
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			s.mu.Lock()
			s.waiters[id] = slices.DeleteFunc(s.waiters[id], func(c chan struct{}) bool { return c == changed })
			if len(s.waiters[id]) == 0 {
				delete(s.waiters, id)
			}
			s.mu.Unlock()
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// List returns copies of the containers not removed, oldest first.
func (s *Store) List() []*Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*Record, 0, len(s.m.Containers))
	for _, r := range s.m.Containers {
		if r.Status != api.StatusRemoved {
			cp := *r
			out = append(out, &cp)
		}
	}
	slices.SortFunc(out, func(a, b *Record) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// Flush writes the changed records and then the cursor to the bucket, so
// that a restart resumes from a consistent point. A record stays dirty
// until it is written, and the cursor is stored only after every record it
// covers: a failed flush loses nothing, the next one writes it again. Puts
// are pipelined: the bucket is written as fast as the server stores.
func (s *Store) Flush(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) error {
	s.mu.Lock()
	if len(s.dirty) == 0 {
		s.mu.Unlock()
		return nil
	}
	type put struct {
		key string
		val []byte
	}
	var puts []put
	var dels []string
	written := maps.Clone(s.dirty)
	for id := range written {
		r := s.m.Containers[id]
		if r == nil || r.Status == api.StatusRemoved {
			dels = append(dels, id)
			continue
		}
		b, _ := json.Marshal(r)
		puts = append(puts, put{id, b})
	}
	seq, stream, leader := s.m.Seq, s.stream, s.m.Leader
	lost, _ := json.Marshal(s.m.LostHosts)
	draining, _ := json.Marshal(s.m.DrainingHosts)
	alerts, _ := json.Marshal(s.m.Alerts)
	s.mu.Unlock()
	prefix := "$KV." + kv.Bucket() + "."
	var futures []jetstream.PubAckFuture
	for i, p := range puts {
		f, err := js.PublishAsync(prefix+p.key, p.val)
		if err != nil {
			return err
		}
		futures = append(futures, f)
		if i%256 == 255 {
			if err := awaitAll(ctx, futures); err != nil {
				return err
			}
			futures = futures[:0]
		}
	}
	if err := awaitAll(ctx, futures); err != nil {
		return err
	}
	for _, id := range dels {
		if err := kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return err
		}
	}
	s.mu.Lock()
	for id, mark := range written {
		if s.dirty[id] != mark {
			continue // changed again meanwhile: the next flush writes it
		}
		delete(s.dirty, id)
		// The write-behind forgets removed containers once their removal
		// is written.
		if r := s.m.Containers[id]; r != nil && r.Status == api.StatusRemoved {
			delete(s.m.Containers, id)
		}
	}
	s.mu.Unlock()
	if _, err := kv.Put(ctx, lostHostsKey, lost); err != nil {
		return err
	}
	if _, err := kv.Put(ctx, alertsKey, alerts); err != nil {
		return err
	}
	if _, err := kv.Put(ctx, drainingHostsKey, draining); err != nil {
		return err
	}
	_, err := kv.Put(ctx, cursorKey, []byte(cursor{Seq: seq, Stream: stream, Leader: leader}.String()))
	return err
}

// lostHostsKey keeps the hosts declared lost, with the records;
// drainingHostsKey, the hosts draining.
const (
	lostHostsKey     = "_lost_hosts"
	drainingHostsKey = "_draining_hosts"
	alertsKey        = "_alerts" // the alerts firing
)

func awaitAll(ctx context.Context, futures []jetstream.PubAckFuture) error {
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

const cursorKey = "_cursor"

// cursor is how far the bucket follows the events stream: the sequence of
// the last event its records include, the stream's creation time, which
// tells the stream apart from one deleted and made again, and the token of
// the last leader elected up to there.
type cursor struct {
	Seq    uint64
	Stream time.Time
	Leader uint64
}

func (c cursor) String() string {
	return fmt.Sprintf("%d %d %d", c.Seq, c.Stream.UnixNano(), c.Leader)
}

func parseCursor(s string) cursor {
	var seq, leader uint64
	var created int64
	if n, _ := fmt.Sscan(s, &seq, &created, &leader); n >= 2 {
		return cursor{Seq: seq, Stream: time.Unix(0, created), Leader: leader}
	}
	return cursor{Seq: seq} // written before streams were told apart
}

// Load reads the bucket into memory and returns the sequence to resume
// the events stream after; 0 when the state must be rebuilt from the
// whole stream: the bucket holds no cursor, or one of another stream (the
// stream was deleted and made again) or past its end (it was truncated
// under the projection). A rebuild empties the bucket first, so that no
// record of what the stream no longer holds survives it.
func (s *Store) Load(ctx context.Context, kv jetstream.KeyValue, info *jetstream.StreamInfo, log *slog.Logger) (uint64, error) {
	s.mu.Lock()
	s.stream = info.Created
	s.mu.Unlock()
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var keys []string
	for key := range lister.Keys() {
		keys = append(keys, key)
	}
	var cur cursor
	if entry, err := kv.Get(ctx, cursorKey); err == nil {
		cur = parseCursor(string(entry.Value()))
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, err
	}
	reason := ""
	switch {
	case cur.Seq == 0:
		reason = "no consistent snapshot"
	case !cur.Stream.IsZero() && !cur.Stream.Equal(info.Created):
		reason = fmt.Sprintf("the events stream was made again (created %s; the state followed one created %s)",
			info.Created.Format(time.RFC3339Nano), cur.Stream.Format(time.RFC3339Nano))
	case cur.Seq > info.State.LastSeq:
		reason = fmt.Sprintf("the state is at event %d, past the end of the events stream (%d)", cur.Seq, info.State.LastSeq)
	case info.State.Msgs > 0 && info.State.FirstSeq > cur.Seq+1:
		reason = fmt.Sprintf("the events stream was truncated: it starts at %d, after the state's %d", info.State.FirstSeq, cur.Seq)
	}
	if reason != "" {
		if cur.Seq != 0 {
			log.Warn("projection: rebuilding state from the events stream", "reason", reason)
		}
		for _, key := range keys {
			if err := kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0, err
			}
		}
		return 0, nil
	}
	var recs []*Record
	for _, key := range keys {
		if key == cursorKey || key == lostHostsKey || key == drainingHostsKey || key == alertsKey {
			continue
		}
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var r Record
		if json.Unmarshal(entry.Value(), &r) == nil {
			recs = append(recs, &r)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range recs {
		st := r.Status
		r.Status = api.StatusFailed
		s.m.Containers[r.ID] = r
		s.m.SetStatus(r, st)
		if r.Name != "" {
			s.m.Names[r.Name] = r.ID
		}
	}
	s.m.Seq, s.m.Leader = cur.Seq, cur.Leader
	if entry, err := kv.Get(ctx, lostHostsKey); err == nil {
		_ = json.Unmarshal(entry.Value(), &s.m.LostHosts)
	}
	if s.m.LostHosts == nil {
		s.m.LostHosts = map[string]time.Time{}
	}
	if entry, err := kv.Get(ctx, drainingHostsKey); err == nil {
		_ = json.Unmarshal(entry.Value(), &s.m.DrainingHosts)
	}
	if s.m.DrainingHosts == nil {
		s.m.DrainingHosts = map[string]time.Time{}
	}
	if entry, err := kv.Get(ctx, alertsKey); err == nil {
		_ = json.Unmarshal(entry.Value(), &s.m.Alerts)
	}
	if s.m.Alerts == nil {
		s.m.Alerts = map[string]events.AlertData{}
	}
	return cur.Seq, nil
}
