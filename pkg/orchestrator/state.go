package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// record is a container as the projection keeps it.
type record = projection.Record

// state is the projection of the events stream the orchestrator decides
// on: containers, hosts, and what each host has allocated. It is kept in
// memory, written behind to the containers bucket, and rebuilt from the
// events stream when the bucket is missing.
type state struct {
	mu      sync.RWMutex
	m       *projection.Model
	hosts   map[string]*events.HostRecord
	sched   map[string]scheduler.Host // what placement reads of each host
	dirty   map[string]uint64         // container ids to write behind → the change that marked them
	changes uint64                    // counts the marks, so a flush clears only what it wrote
	stream  time.Time                 // the events stream's creation time
	waiters map[string][]chan struct{}
	execs   map[string]chan execOutcome
}

// execOutcome is how an exec a caller waits for ended.
type execOutcome struct {
	res   *api.ExecResult
	err   *api.Error
	event events.Event // the stored event that said so
}

func newState() *state {
	return &state{m: projection.New(), hosts: map[string]*events.HostRecord{}, sched: map[string]scheduler.Host{}, dirty: map[string]uint64{},
		waiters: map[string][]chan struct{}{}, execs: map[string]chan execOutcome{}}
}

func demand(spec driver.ContainerConfig) scheduler.Resources { return projection.Demand(spec) }

// markDirty marks a record to be written behind; s.mu must be held.
func (s *state) markDirty(id string) {
	s.changes++
	s.dirty[id] = s.changes
}

// notifyLocked wakes who waits for a change of one container; s.mu must
// be held.
func (s *state) notifyLocked(id string) {
	for _, ch := range s.waiters[id] {
		close(ch)
	}
	delete(s.waiters, id)
}

// takenLocked says whether r's id or name is in use: "id" or "name",
// with the record that holds the id; s.mu must be held.
func (s *state) takenLocked(r *record) (prev *record, taken string) {
	if old, ok := s.m.Containers[r.ID]; ok && old.Status != api.StatusRemoved {
		cp := *old
		return &cp, "id"
	}
	if r.Name != "" {
		if id, ok := s.m.Names[r.Name]; ok && id != r.ID {
			return nil, "name"
		}
	}
	return nil, ""
}

// reserveLocked records a container placed but not yet announced, so
// that later placements see its resources taken, and gives it its first
// generation; s.mu must be held, and takenLocked have said its id and
// name are free.
func (s *state) reserveLocked(r *record) {
	r.Generation = nextGeneration(0)
	if old, ok := s.m.Containers[r.ID]; ok {
		r.Generation = nextGeneration(old.Generation) // an id used before
	}
	r.CreatedAt = time.Now().UTC()
	// The state keeps a record of its own: the caller goes on reading r
	// while the projection changes the kept one.
	kept := *r
	kept.Status = api.StatusPending
	s.m.Put(&kept)
	r.Status = api.StatusPending
	s.notifyLocked(r.ID)
}

// nextGeneration returns a generation after last: the clock in
// nanoseconds, so that generations keep increasing for an id used again
// after its record was forgotten, and last+1 should the clock lag.
func nextGeneration(last uint64) uint64 {
	return max(last+1, uint64(time.Now().UnixNano()))
}

// nextGeneration takes the next generation of a container's commands.
func (s *state) nextGeneration(id string) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m.Containers[id]
	if !ok {
		return nextGeneration(0)
	}
	r.Generation = nextGeneration(r.Generation)
	return r.Generation
}

// overdue returns the containers pending since before t.
func (s *state) overdue(t time.Time) []*record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*record
	for id := range s.m.Pending {
		if r := s.m.Containers[id]; r != nil && r.Seq != 0 && r.CreatedAt.Before(t) {
			cp := *r
			out = append(out, &cp)
		}
	}
	return out
}

// missingOn returns the containers the state has created or running on a
// host, as of before seq, that are not in found.
func (s *state) missingOn(host string, seq uint64, found []string) []*record {
	have := map[string]bool{}
	for _, id := range found {
		have[id] = true
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []*record
	for _, r := range s.m.Containers {
		if r.Host == host && r.Seq < seq && (r.Status == api.StatusCreated || r.Status == api.StatusRunning) && !have[r.ID] {
			cp := *r
			out = append(out, &cp)
		}
	}
	return out
}

// placedBy returns the container with this id, if it is kept and not
// removed.
func (s *state) placedBy(id string) (*record, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.m.Containers[id]
	if !ok || r.Status == api.StatusRemoved {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// release undoes a reservation whose announcement failed.
func (s *state) release(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.m.Containers[id]
	if !ok || r.Seq != 0 {
		return
	}
	s.m.SetStatus(r, api.StatusRemoved)
	delete(s.m.Containers, id)
	delete(s.dirty, id)
	if r.Name != "" && s.m.Names[r.Name] == id {
		delete(s.m.Names, r.Name)
	}
	s.notifyLocked(id)
}

// apply folds one event of the events stream into the state, marks what
// it changed to be written behind and wakes who waits for it.
func (s *state) apply(seq uint64, e events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if id := projection.Apply(s.m, seq, e); id != "" {
		s.markDirty(id)
		s.notifyLocked(id)
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
			Truncated: d.Truncated, TimedOut: d.TimedOut, DurationMs: d.DurationMs}
	case events.ContainerFailed:
		var d events.FailedData
		if events.Data(e, &d) != nil || d.ExecID == "" {
			return
		}
		execID, out.err = d.ExecID, &d.Error
	default:
		return
	}
	s.mu.RLock()
	ch, ok := s.execs[execID]
	s.mu.RUnlock()
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
	s.mu.Lock()
	s.execs[execID] = ch
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		delete(s.execs, execID)
		s.mu.Unlock()
	}
}

// view returns the API view of a container, with its status lost when its
// host stopped reporting.
func (s *state) view(r *record, live func(host string) bool) api.Container {
	c := r.Container
	if c.Status.Active() && !live(c.Host) {
		c.Status = api.StatusLost
	}
	return c
}

func (s *state) get(id string) (*record, bool) {
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

// waitFor waits until cond holds for the container or ctx ends. It is
// woken by changes of that container only.
func (s *state) waitFor(ctx context.Context, id string, cond func(*record) bool) (*record, error) {
	for {
		s.mu.Lock()
		r, ok := s.m.Containers[id]
		// A record no longer kept was removed (the write-behind forgets
		// removed containers).
		cp := record{Container: api.Container{ID: id, Status: api.StatusRemoved}}
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

func (s *state) list() []*record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*record, 0, len(s.m.Containers))
	for _, r := range s.m.Containers {
		if r.Status != api.StatusRemoved {
			cp := *r
			out = append(out, &cp)
		}
	}
	slices.SortFunc(out, func(a, b *record) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out
}

// flush writes the changed records and then the cursor to the bucket, so
// that a restart resumes from a consistent point. A record stays dirty
// until it is written, and the cursor is stored only after every record it
// covers: a failed flush loses nothing, the next one writes it again. Puts
// are pipelined: the bucket is written as fast as the server stores.
func (s *state) flush(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue) error {
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
	seq, stream := s.m.Seq, s.stream
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
	_, err := kv.Put(ctx, cursorKey, []byte(cursor{Seq: seq, Stream: stream}.String()))
	return err
}

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
// the last event its records include, and the stream's creation time,
// which tells the stream apart from one deleted and made again.
type cursor struct {
	Seq    uint64
	Stream time.Time
}

func (c cursor) String() string { return fmt.Sprintf("%d %d", c.Seq, c.Stream.UnixNano()) }

func parseCursor(s string) cursor {
	var seq uint64
	var created int64
	if n, _ := fmt.Sscan(s, &seq, &created); n == 2 {
		return cursor{Seq: seq, Stream: time.Unix(0, created)}
	}
	return cursor{Seq: seq} // written before streams were told apart
}

// load reads the bucket into memory and returns the sequence to resume
// the events stream after; 0 when the state must be rebuilt from the
// whole stream: the bucket holds no cursor, or one of another stream (the
// stream was deleted and made again) or past its end (it was truncated
// under the projection). A rebuild empties the bucket first, so that no
// record of what the stream no longer holds survives it.
func (s *state) load(ctx context.Context, kv jetstream.KeyValue, info *jetstream.StreamInfo, log *slog.Logger) (uint64, error) {
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
			log.Warn("orchestrator: rebuilding state from the events stream", "reason", reason)
		}
		for _, key := range keys {
			if err := kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return 0, err
			}
		}
		return 0, nil
	}
	var recs []*record
	for _, key := range keys {
		if key == cursorKey {
			continue
		}
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var r record
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
	s.m.Seq = cur.Seq
	return cur.Seq, nil
}
