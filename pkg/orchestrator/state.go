package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
}

// hostRecord is what a worker writes to the hosts bucket.
type hostRecord struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	Drivers   []api.DriverInfo  `json:"drivers"`
	Capacity  api.Resources     `json:"capacity"`
	LastSeen  time.Time         `json:"lastSeen"`
	StartedAt time.Time         `json:"startedAt"`
}

// state is the projection of the events stream the orchestrator decides
// on: containers, hosts, and what each host has allocated. It is kept in
// memory, written behind to the containers bucket, and rebuilt from the
// events stream when the bucket is missing.
type state struct {
	mu         sync.RWMutex
	containers map[string]*record
	names      map[string]string // name → container id
	hosts      map[string]*hostRecord
	allocated  map[string]scheduler.Resources // by host
	seq        uint64                         // last applied events-stream sequence
	dirty      map[string]bool                // container ids to write behind
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
		containers: map[string]*record{}, names: map[string]string{}, hosts: map[string]*hostRecord{},
		allocated: map[string]scheduler.Resources{}, dirty: map[string]bool{}, changed: make(chan struct{}),
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
	r.Status = st
	now := st.Active()
	switch {
	case was && !now:
		s.allocated[r.Host] = s.allocated[r.Host].Sub(demand(r.Spec))
	case !was && now:
		s.allocated[r.Host] = s.allocated[r.Host].Add(demand(r.Spec))
	}
}

func (s *state) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// reserve records a container placed but not yet announced, so that
// concurrent placements see its resources taken. ok is false if the id or
// name is taken.
func (s *state) reserve(r *record) (taken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.containers[r.ID]; ok && old.Status != api.StatusRemoved {
		return "id"
	}
	if r.Name != "" {
		if id, ok := s.names[r.Name]; ok && id != r.ID {
			return "name"
		}
		s.names[r.Name] = r.ID
	}
	r.Status = api.StatusFailed // inactive until setStatus
	s.containers[r.ID] = r
	s.setStatus(r, api.StatusPending)
	s.notifyLocked()
	return ""
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
		s.dirty[r.ID] = true
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
		events.ContainerStopped, events.ContainerRemoved, events.ContainerFailed:
		if e.Type() == events.ContainerFailed {
			s.failExec(e)
		}
		r, ok := s.containers[id]
		if !ok || r.Seq >= seq {
			return
		}
		s.applyContainer(r, e)
		r.Seq = seq
		s.dirty[r.ID] = true
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
	case events.ContainerStarted:
		s.setStatus(r, api.StatusRunning)
		r.StartedAt, r.FinishedAt, r.ExitCode, r.OOMKilled, r.Error = d.StartedAt, time.Time{}, 0, false, nil
	case events.ContainerExited:
		s.setStatus(r, api.StatusExited)
		r.ExitCode, r.OOMKilled, r.FinishedAt = d.ExitCode, d.OOMKilled, d.FinishedAt
	case events.ContainerStopped:
		s.setStatus(r, api.StatusStopped)
		r.ExitCode, r.FinishedAt = d.ExitCode, d.FinishedAt
	case events.ContainerRemoved:
		s.setStatus(r, api.StatusRemoved)
		if r.Name != "" && s.names[r.Name] == r.ID {
			delete(s.names, r.Name)
		}
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
// that a restart resumes from a consistent point. Puts are pipelined: the
// bucket is written as fast as the server stores, and the dirty set never
// piles up.
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
	for id := range s.dirty {
		r := s.containers[id]
		if r.Status == api.StatusRemoved {
			dels = append(dels, id)
			delete(s.containers, id)
			continue
		}
		b, _ := json.Marshal(r)
		puts = append(puts, put{id, b})
	}
	seq := s.seq
	clear(s.dirty)
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
	_, err := kv.Put(ctx, cursorKey, fmt.Appendf(nil, "%d", seq))
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

// load reads the bucket into memory and returns the sequence to resume
// the events stream after; 0 when the bucket holds no cursor and the state
// must be rebuilt from the whole stream.
func (s *state) load(ctx context.Context, kv jetstream.KeyValue) (uint64, error) {
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var cursor uint64
	var recs []*record
	for key := range lister.Keys() {
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		if key == cursorKey {
			fmt.Sscan(string(entry.Value()), &cursor)
			continue
		}
		var r record
		if json.Unmarshal(entry.Value(), &r) == nil {
			recs = append(recs, &r)
		}
	}
	if cursor == 0 {
		return 0, nil // no consistent snapshot: rebuild everything
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
	s.seq = cursor
	return cursor, nil
}
