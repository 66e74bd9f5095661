package sessions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// poolKeyPrefix is where pools were kept in the sessions bucket, before
// they had a bucket of their own.
const poolKeyPrefix = "_pool."

// pool is one profile's warm sandboxes.
type pool struct {
	cfg      api.Pool
	warm     []string // running containers no session took yet, oldest first
	creating int
	lastMiss time.Time
	lastTake time.Time
	// A pool whose sandboxes keep failing waits longer after each failure
	// (poolBackoff), and says so once per change of what went wrong.
	failures int
	retryAt  time.Time
	lastErr  string
}

// Backoff of a pool that cannot fill: doubling from the first, up to the
// cap.
const (
	poolBackoffFirst = time.Second
	poolBackoffCap   = 5 * time.Minute
)

// poolBackoff is how long a pool waits after its nth failure in a row.
func poolBackoff(n int) time.Duration {
	d := poolBackoffFirst
	for i := 1; i < n && d < poolBackoffCap; i++ {
		d *= 2
	}
	return min(d, poolBackoffCap)
}

// pools are the warm pools, kept in the pools bucket.
type pools struct {
	mu sync.Mutex
	m  map[string]*pool // by profile
	kv jetstream.KeyValue
}

// profile names what a pool's sandboxes have in common: driver, image,
// resources and egress rules (as given, before names are resolved).
func profile(drv, image string, cpu float64, mem int64, egress []driver.EgressRule) string {
	if cpu <= 0 {
		cpu = driver.DefaultCPU
	}
	if mem <= 0 {
		mem = driver.DefaultMemoryMB
	}
	key := fmt.Sprintf("%s.%s.%g.%d", drv, image, cpu, mem)
	if len(egress) > 0 {
		b, _ := json.Marshal(egress)
		sum := sha256.Sum256(b)
		key += ".egress-" + hex.EncodeToString(sum[:6])
	}
	return strings.NewReplacer("/", "_", ":", "_").Replace(key)
}

// SetPool creates, changes or (with size 0) empties a pool. A pool of a
// driver no host offers is refused; so is one whose first sandbox cannot
// be made (an image no host has, resources no host fits): that one is made
// before the pool is taken, and becomes its first warm sandbox.
func (s *Service) SetPool(ctx context.Context, p api.Pool) (*api.Pool, error) {
	req := api.SessionRequest{Driver: p.Driver, Image: p.Image, CPU: p.CPU, MemoryMB: p.MemoryMB}
	if err := defaultsFor(&req); err != nil {
		return nil, err
	}
	p.Driver, p.Image = req.Driver, req.Image
	if p.Size < 0 || p.Max < 0 || p.Max > 0 && p.Max < p.Size || p.Size > 100 || p.Max > 200 {
		return nil, &api.Error{Kind: api.KindInvalid, Field: "size", Message: "size must be 0-100 and max, if set, between size and 200"}
	}
	if err := s.offered(p.Driver); err != nil {
		return nil, err
	}
	if p.Max == 0 {
		p.Max = 2 * p.Size
	}
	p.Target = p.Size
	key := profile(p.Driver, p.Image, p.CPU, p.MemoryMB, p.Egress)
	var first string
	if p.Size > 0 && !s.hasPool(key) {
		id, err := s.warmOne(ctx, key, p)
		if err != nil {
			e := api.AsError(err)
			return nil, &api.Error{Kind: e.Kind, Field: e.Field, Message: "the pool's first sandbox could not be made, so the pool was not set: " + e.Message}
		}
		first = id
	}
	b, _ := json.Marshal(p)
	if _, err := s.pools.kv.Put(ctx, key, b); err != nil {
		return nil, unavailable(err)
	}
	s.pools.mu.Lock()
	pl, ok := s.pools.m[key]
	if !ok {
		pl = &pool{}
		s.pools.m[key] = pl
	}
	pl.cfg = p
	pl.failures, pl.retryAt, pl.lastErr = 0, time.Time{}, ""
	if first != "" {
		pl.warm = append(pl.warm, first)
	}
	out := pl.view()
	s.pools.mu.Unlock()
	return &out, nil
}

func (s *Service) hasPool(key string) bool {
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	_, ok := s.pools.m[key]
	return ok
}

// offered refuses a driver that no registered host offers.
func (s *Service) offered(name string) error {
	have := map[string]bool{}
	for _, h := range s.ctl.Hosts() {
		for _, d := range h.Drivers {
			have[d.Name] = true
		}
	}
	if have[name] {
		return nil
	}
	names := slices.Sorted(maps.Keys(have))
	return &api.Error{Kind: api.KindInvalid, Field: "driver", Message: fmt.Sprintf("no host offers the %s driver (the hosts offer: %s)", name, strings.Join(names, ", "))}
}

// RemovePool removes a pool and the warm sandboxes it holds; sessions
// that took one of its sandboxes keep theirs.
func (s *Service) RemovePool(ctx context.Context, p api.Pool) error {
	req := api.SessionRequest{Driver: p.Driver, Image: p.Image}
	if err := defaultsFor(&req); err != nil {
		return err
	}
	key := profile(req.Driver, req.Image, p.CPU, p.MemoryMB, p.Egress)
	s.pools.mu.Lock()
	pl, ok := s.pools.m[key]
	if ok {
		delete(s.pools.m, key)
	}
	s.pools.mu.Unlock()
	if !ok {
		return &api.Error{Kind: api.KindNotFound, Field: "pool", Message: fmt.Sprintf("no pool of %s %s with those resources and egress rules", req.Driver, req.Image)}
	}
	if err := s.pools.kv.Delete(ctx, key); err != nil {
		return unavailable(err)
	}
	s.pools.mu.Lock()
	warm := slices.Clone(pl.warm)
	pl.warm = nil
	s.pools.mu.Unlock()
	for _, id := range warm {
		rm, err := events.New(events.ContainerRemoveRequested, poolSource, events.ContainerRequestedData{ContainerID: id, Force: true})
		if err == nil {
			_, _ = s.ctl.Accept(ctx, rm)
		}
	}
	return nil
}

func (pl *pool) view() api.Pool {
	v := pl.cfg
	v.Warm, v.Creating = len(pl.warm), pl.creating
	return v
}

// Pools lists the pools.
func (s *Service) Pools() []api.Pool {
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	out := []api.Pool{}
	for _, pl := range s.pools.m {
		out = append(out, pl.view())
	}
	slices.SortFunc(out, func(a, b api.Pool) int { return strings.Compare(a.Image+a.Driver, b.Image+b.Driver) })
	return out
}

// take hands a warm sandbox of the profile to a session, if there is one.
// A miss raises the pool's target, within its bounds.
func (s *Service) take(key string) (string, bool) {
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	pl, ok := s.pools.m[key]
	if !ok || pl.cfg.Size == 0 && pl.cfg.Max == 0 {
		return "", false
	}
	pl.lastTake = time.Now()
	for len(pl.warm) > 0 {
		id := pl.warm[0]
		pl.warm = pl.warm[1:]
		if c, ok := s.ctl.Container(id); ok && c.Status == api.StatusRunning {
			return id, true
		}
	}
	pl.lastMiss = time.Now()
	if pl.cfg.Target < pl.cfg.Max {
		pl.cfg.Target++
	}
	return "", false
}

// loadPools reads the pools.
func (s *Service) loadPools(ctx context.Context) error {
	kv := s.pools.kv
	// Pools were kept in the sessions bucket once, under a prefix: move
	// them to their own.
	if old, err := s.kv.ListKeys(ctx); err == nil {
		for key := range old.Keys() {
			if !strings.HasPrefix(key, poolKeyPrefix) {
				continue
			}
			if entry, err := s.kv.Get(ctx, key); err == nil {
				if _, err := kv.Put(ctx, strings.TrimPrefix(key, poolKeyPrefix), entry.Value()); err != nil {
					return err
				}
				_ = s.kv.Purge(ctx, key)
			}
		}
	}
	lister, err := kv.ListKeys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return err
	}
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	for key := range lister.Keys() {
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var p api.Pool
		if json.Unmarshal(entry.Value(), &p) == nil {
			s.pools.m[key] = &pool{cfg: p}
		}
	}
	return nil
}

// adoptWarm finds the pools' sandboxes again, once the control plane's
// projection caught up: running containers of a pool that no session
// took.
func (s *Service) adoptWarm() {
	taken := map[string]bool{}
	for _, sess := range s.List(true, admin) {
		taken[sess.ContainerID] = true
	}
	s.pools.mu.Lock()
	defer s.pools.mu.Unlock()
	for _, c := range s.ctl.List(events.ListQuery{Status: string(api.StatusRunning)}) {
		if pl, ok := s.pools.m[c.Labels[driver.LabelPool]]; ok && !taken[c.ID] {
			pl.warm = append(pl.warm, c.ID)
		}
	}
}

// poolLoop keeps every pool at its target: it makes sandboxes that are
// missing, lets the target fall back to the size when no miss happened
// for a minute, and removes sandboxes above the target.
func (s *Service) poolLoop(ctx context.Context) error {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		var extra []string
		s.pools.mu.Lock()
		for key, pl := range s.pools.m {
			if time.Now().Before(pl.retryAt) {
				continue // backing off after failures
			}
			if pl.cfg.Target > pl.cfg.Size && time.Since(pl.lastMiss) > time.Minute {
				pl.cfg.Target--
			}
			for len(pl.warm) > pl.cfg.Target {
				extra = append(extra, pl.warm[len(pl.warm)-1])
				pl.warm = pl.warm[:len(pl.warm)-1]
			}
			for ; len(pl.warm)+pl.creating < pl.cfg.Target; pl.creating++ {
				wg.Add(1)
				go func(key string, cfg api.Pool) {
					defer wg.Done()
					id, err := s.warmOne(ctx, key, cfg)
					if ctx.Err() != nil {
						return
					}
					s.pools.mu.Lock()
					defer s.pools.mu.Unlock()
					pl.creating--
					if err == nil {
						pl.warm = append(pl.warm, id)
						if pl.failures > 0 {
							s.log.Info("sessions: a pool fills again", "pool", key, "after_failures", pl.failures)
						}
						pl.failures, pl.retryAt, pl.lastErr = 0, time.Time{}, ""
						return
					}
					pl.failures++
					wait := poolBackoff(pl.failures)
					pl.retryAt = time.Now().Add(wait)
					if msg := err.Error(); msg != pl.lastErr {
						pl.lastErr = msg
						s.log.Warn("sessions: a pool cannot fill; it backs off", "pool", key, "failures", pl.failures, "retry_in", wait, "err", err)
					}
				}(key, pl.cfg)
			}
		}
		s.pools.mu.Unlock()
		for _, id := range extra {
			rm, err := events.New(events.ContainerRemoveRequested, poolSource, events.ContainerRequestedData{ContainerID: id, Force: true})
			if err == nil {
				_, _ = s.ctl.Accept(ctx, rm)
			}
		}
	}
}

// poolSource is the CloudEvents source of what pools ask.
const poolSource = "/openagent/pools"

// warmOne makes one running sandbox for a pool.
func (s *Service) warmOne(ctx context.Context, key string, p api.Pool) (string, error) {
	spec := sandboxSpec(p.Driver, p.Image, p.CPU, p.MemoryMB, p.Egress, nil)
	id := events.NewContainerID()
	spec.SessionID = id
	spec.Labels[driver.LabelPool] = key
	e, err := events.New(events.ContainerCreateRequested, poolSource, api.CreateRequest{ContainerID: id, Driver: p.Driver, Start: true, Spec: spec})
	if err != nil {
		return "", &api.Error{Kind: api.KindInternal, Message: err.Error()}
	}
	c, err := s.runContainer(ctx, e)
	if err != nil {
		return "", err
	}
	return c.ID, nil
}
