package orchestrator

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
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// record is what the orchestrator knows of one container: its API view,
// the spec it was made from, and the events-stream sequence of the last
// event applied to it.
type record struct {
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
}

// sameRequest reports whether r was placed by the request that placed
// other, asking for the same.
func (r *record) sameRequest(other *record) bool {
	return r.RequestID == other.RequestID && r.RequestSource == other.RequestSource &&
		(r.RequestDigest == "" || r.RequestDigest == other.RequestDigest)
}

// state is the projection of the events stream the orchestrator decides
// on: containers, hosts, and what each host has allocated. It is kept in
// memory, written behind to the containers bucket, and rebuilt from the
// events stream when the bucket is missing.
type state struct {
	mu         sync.RWMutex
	containers map[string]*record
	names      map[string]string // name → container id
	hosts      map[string]*events.HostRecord
	allocated  map[string]scheduler.Resources // by host
	seq        uint64                         // last applied events-stream sequence
	stream     time.Time                      // the events stream's creation time
	dirty      map[string]uint64              // container ids to write behind → the change that marked them
	changes    uint64                         // counts the marks, so a flush clears only what it wrote
	pending    map[string]struct{}            // ids of the containers pending
	changed    chan struct{}                  // closed and replaced on every change
	execs      map[string]chan execOutcome
}

// execOutcome is how an exec a caller waits for ended.
type execOutcome struct {
	res *api.ExecResult
	err *api.Error
}

func newState() *state {
	return &state{
		containers: map[string]*record{}, names: map[string]string{}, hosts: map[string]*events.HostRecord{},
		allocated: map[string]scheduler.Resources{}, dirty: map[string]uint64{}, pending: map[string]struct{}{}, changed: make(chan struct{}),
		execs: map[string]chan execOutcome{},
	}
}

func demand(spec driver.ContainerConfig) scheduler.Resources {
	return scheduler.Resources{CPU: spec.Resources.CPU, MemoryMB: spec.Resources.MemoryMB, Pids: spec.Resources.Pids}
}

// setStatus moves a record to a new status, keeping the allocations
// right; s.mu must be held.
func (s *state) setStatus(r *record, st api.Status) {
	was := r.Status.Active()
	if st == api.StatusPending {
		s.pending[r.ID] = struct{}{}
	} else {
		delete(s.pending, r.ID)
	}
	r.Status = st
	now := st.Active()
	switch {
	case was && !now:
		s.allocated[r.Host] = s.allocated[r.Host].Sub(demand(r.Spec))
	case !was && now:
		s.allocated[r.Host] = s.allocated[r.Host].Add(demand(r.Spec))
	}
}

// markDirty marks a record to be written behind; s.mu must be held.
func (s *state) markDirty(id string) {
	s.changes++
	s.dirty[id] = s.changes
}

func (s *state) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// reserve records a container placed but not yet announced, so that
// concurrent placements see its resources taken, and gives it its first
// generation. taken is "id" or "name" when either is in use, with the
// record that holds it.
func (s *state) reserve(r *record) (prev *record, taken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.containers[r.ID]
	if ok && old.Status != api.StatusRemoved {
		cp := *old
		return &cp, "id"
	}
	if r.Name != "" {
		if id, ok := s.names[r.Name]; ok && id != r.ID {
			return nil, "name"
		}
		s.names[r.Name] = r.ID
	}
	r.Generation = nextGeneration(0)
	if ok {
		r.Generation = nextGeneration(old.Generation) // an id used before
	}
	r.CreatedAt = time.Now().UTC()
	// The state keeps a record of its own: the caller goes on reading r
	// while the projection changes the kept one.
	kept := *r
	kept.Status = api.StatusFailed // inactive until setStatus
	s.containers[r.ID] = &kept
	s.setStatus(&kept, api.StatusPending)
	r.Status = api.StatusPending
	s.notifyLocked()
	return nil, ""
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
	r, ok := s.containers[id]
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
	for id := range s.pending {
		if r := s.containers[id]; r != nil && r.Seq != 0 && r.CreatedAt.Before(t) {
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
	for _, r := range s.containers {
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
	r, ok := s.containers[id]
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
	r, ok := s.containers[id]
	if !ok || r.Seq != 0 {
		return
	}
	s.setStatus(r, api.StatusRemoved)
	delete(s.containers, id)
	delete(s.dirty, id)
	if r.Name != "" && s.names[r.Name] == id {
		delete(s.names, r.Name)
	}
	s.notifyLocked()
}

// apply folds one event of the events stream into the state. It is
// idempotent: an event at or below a record's sequence changes nothing.
func (s *state) apply(seq uint64, e events.Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq > s.seq {
		s.seq = seq
	}
	id := events.Ext(e, events.ExtContainerID)
	switch e.Type() {
	case events.ContainerPlaced:
		var d struct {
			ContainerID, HostID, Driver, Name string
			RequestSource, RequestDigest      string
			Spec                              driver.ContainerConfig
		}
		if events.Data(e, &d) != nil {
			return
		}
		r, ok := s.containers[d.ContainerID]
		if ok && r.Seq >= seq {
			return
		}
		if !ok {
			r = &record{Container: api.Container{ID: d.ContainerID, Status: api.StatusFailed}}
			s.containers[d.ContainerID] = r
		}
		if r.Status.Active() && r.Host != d.HostID {
			s.setStatus(r, api.StatusFailed) // release a stale reservation elsewhere
		}
		r.Host, r.Driver, r.Name, r.Spec, r.CreatedAt = d.HostID, d.Driver, d.Name, d.Spec, e.Time()
		// Clone what comes from a message's headers: a substring would keep
		// the whole header block alive for as long as the record.
		r.RequestID = strings.Clone(events.CorrelationID(e))
		r.RequestSource, r.RequestDigest = d.RequestSource, d.RequestDigest
		r.Generation = max(r.Generation, events.Generation(e))
		api.FromSpec(&r.Container, d.Spec)
		if r.Name != "" {
			s.names[r.Name] = r.ID
		}
		if r.Seq == 0 && r.Status == api.StatusPending {
			// reserved by this orchestrator: already counted
		} else {
			s.setStatus(r, api.StatusPending)
		}
		r.Seq = seq
		s.markDirty(r.ID)
	case events.ExecCompleted:
		var d struct {
			ExecID string `json:"execId"`
			api.ExecResult
		}
		if events.Data(e, &d) == nil {
			d.ExecResult.ExecID = d.ExecID
			if ch, ok := s.execs[d.ExecID]; ok {
				select {
				case ch <- execOutcome{res: &d.ExecResult}:
				default:
				}
			}
		}
		return
	case events.ContainerCreated, events.ContainerStarted, events.ContainerExited,
		events.ContainerStopped, events.ContainerRemoved, events.ContainerFailed, events.ContainerLost:
		if e.Type() == events.ContainerFailed {
			s.failExec(e)
		}
		r, ok := s.containers[id]
		if !ok || r.Seq >= seq {
			return
		}
		s.applyContainer(r, e)
		r.Generation = max(r.Generation, events.Generation(e))
		r.Seq = seq
		s.markDirty(r.ID)
	case events.RequestAccepted:
		// The generation of the command it published: kept so that one
		// rebuilt from the log goes on after it.
		r, ok := s.containers[id]
		if g := events.Generation(e); ok && g > r.Generation {
			r.Generation = g
			s.markDirty(r.ID)
		}
		return
	default:
		return
	}
	s.notifyLocked()
}

func (s *state) applyContainer(r *record, e events.Event) {
	var d struct {
		ExitCode   int        `json:"exitCode"`
		OOMKilled  bool       `json:"oomKilled"`
		StartedAt  time.Time  `json:"startedAt"`
		FinishedAt time.Time  `json:"finishedAt"`
		Operation  string     `json:"operation"`
		Error      *api.Error `json:"error"`
	}
	_ = events.Data(e, &d)
	switch e.Type() {
	case events.ContainerCreated:
		if r.Status == api.StatusPending {
			s.setStatus(r, api.StatusCreated)
		}
	// A run's start and end may reach the log out of order (a worker that
	// crashed reports the start again after its watcher saw the end): the
	// runtime's times order them, and a report older than what is known
	// changes nothing.
	case events.ContainerStarted:
		if !r.FinishedAt.IsZero() && !d.StartedAt.After(r.FinishedAt) {
			return // this run's end is known
		}
		s.setStatus(r, api.StatusRunning)
		r.StartedAt, r.FinishedAt, r.ExitCode, r.OOMKilled, r.Error = d.StartedAt, time.Time{}, 0, false, nil
	case events.ContainerExited, events.ContainerStopped:
		if !d.FinishedAt.IsZero() && d.FinishedAt.Before(r.StartedAt) {
			return // the end of an earlier run
		}
		st := api.StatusExited
		if e.Type() == events.ContainerStopped {
			st = api.StatusStopped
		}
		s.setStatus(r, st)
		r.ExitCode, r.OOMKilled, r.FinishedAt = d.ExitCode, d.OOMKilled, d.FinishedAt
		if r.StartedAt.IsZero() && !d.StartedAt.IsZero() {
			r.StartedAt = d.StartedAt
		}
	case events.ContainerRemoved:
		s.setStatus(r, api.StatusRemoved)
		if r.Name != "" && s.names[r.Name] == r.ID {
			delete(s.names, r.Name)
		}
	case events.ContainerLost:
		var l struct{ Reason string }
		_ = events.Data(e, &l)
		s.setStatus(r, api.StatusLost)
		r.Error = &api.Error{Kind: api.KindNotFound, ID: r.ID, Message: l.Reason}
	case events.ContainerFailed:
		r.Error, r.FailedRequest = d.Error, strings.Clone(events.CorrelationID(e))
		if d.Operation == "place" || d.Operation == "create" {
			s.setStatus(r, api.StatusFailed)
		}
	}
}

// failExec hands a failed exec's error to whoever waits for it.
func (s *state) failExec(e events.Event) {
	var d struct {
		ExecID string     `json:"execId"`
		Error  *api.Error `json:"error"`
	}
	if events.Data(e, &d) != nil || d.ExecID == "" {
		return
	}
	if ch, ok := s.execs[d.ExecID]; ok {
		select {
		case ch <- execOutcome{err: d.Error}:
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
	r, ok := s.containers[id]
	if !ok {
		if rid, byName := s.names[id]; byName {
			r, ok = s.containers[rid]
		}
	}
	if !ok || r.Status == api.StatusRemoved {
		return nil, false
	}
	cp := *r
	return &cp, true
}

// waitFor waits until cond holds for the container or ctx ends.
func (s *state) waitFor(ctx context.Context, id string, cond func(*record) bool) (*record, error) {
	for {
		s.mu.RLock()
		r, ok := s.containers[id]
		// A record no longer kept was removed (the write-behind forgets
		// removed containers).
		cp := record{Container: api.Container{ID: id, Status: api.StatusRemoved}}
		if ok {
			cp = *r
		}
		changed := s.changed
		s.mu.RUnlock()
		if cond(&cp) {
			return &cp, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

func (s *state) list() []*record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*record, 0, len(s.containers))
	for _, r := range s.containers {
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
		r := s.containers[id]
		if r == nil || r.Status == api.StatusRemoved {
			dels = append(dels, id)
			continue
		}
		b, _ := json.Marshal(r)
		puts = append(puts, put{id, b})
	}
	seq, stream := s.seq, s.stream
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
		if r := s.containers[id]; r != nil && r.Status == api.StatusRemoved {
			delete(s.containers, id)
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
		s.containers[r.ID] = r
		s.setStatus(r, st)
		if r.Name != "" {
			s.names[r.Name] = r.ID
		}
	}
	s.seq = cur.Seq
	return cur.Seq, nil
}
