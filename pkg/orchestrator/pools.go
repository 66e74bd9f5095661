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
)

// LabelPool marks a pool's sandboxes with the pool's profile.
const LabelPool = driver.LabelPool

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
}

type pools struct {
	mu sync.Mutex
	m  map[string]*pool // by profile
	kv jetstream.KeyValue
}

// profile names what a pool's sandboxes have in common.
func profile(drv, image string, cpu float64, mem int64) string {
	if cpu <= 0 {
		cpu = driver.DefaultCPU
	}
	if mem <= 0 {
		mem = driver.DefaultMemoryMB
	}
	return strings.NewReplacer("/", "_", ":", "_").Replace(fmt.Sprintf("%s.%s.%g.%d", drv, image, cpu, mem))
}

// SetPool creates, changes or (with size 0) empties a pool.
func (o *Orchestrator) SetPool(ctx context.Context, p api.Pool) (*api.Pool, *api.Error) {
	req := api.SessionRequest{Driver: p.Driver, Image: p.Image}
	if aerr := defaultsFor(&req); aerr != nil {
		return nil, aerr
	}
	p.Driver, p.Image = req.Driver, req.Image
	if p.Size < 0 || p.Max < 0 || p.Max > 0 && p.Max < p.Size || p.Size > 100 || p.Max > 200 {
		return nil, &api.Error{Kind: api.KindInvalid, Field: "size", Message: "size must be 0-100 and max, if set, between size and 200"}
	}
	if p.Max == 0 {
		p.Max = 2 * p.Size
	}
	p.Target = p.Size
	key := profile(p.Driver, p.Image, p.CPU, p.MemoryMB)
	b, _ := json.Marshal(p)
	if _, err := o.pools.kv.Put(ctx, key, b); err != nil {
		return nil, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
	}
	o.pools.mu.Lock()
	pl, ok := o.pools.m[key]
	if !ok {
		pl = &pool{}
		o.pools.m[key] = pl
	}
	pl.cfg = p
	out := pl.view()
	o.pools.mu.Unlock()
	return &out, nil
}

func (pl *pool) view() api.Pool {
	v := pl.cfg
	v.Warm, v.Creating = len(pl.warm), pl.creating
	return v
}

// Pools lists the pools.
func (o *Orchestrator) Pools() []api.Pool {
	o.pools.mu.Lock()
	defer o.pools.mu.Unlock()
	out := []api.Pool{}
	for _, pl := range o.pools.m {
		out = append(out, pl.view())
	}
	slices.SortFunc(out, func(a, b api.Pool) int { return strings.Compare(a.Image+a.Driver, b.Image+b.Driver) })
	return out
}

// take hands a warm sandbox of the profile to a session, if there is one.
// A miss raises the pool's target, within its bounds.
func (o *Orchestrator) take(key string) (string, bool) {
	o.pools.mu.Lock()
	defer o.pools.mu.Unlock()
	pl, ok := o.pools.m[key]
	if !ok || pl.cfg.Size == 0 && pl.cfg.Max == 0 {
		return "", false
	}
	pl.lastTake = time.Now()
	for len(pl.warm) > 0 {
		id := pl.warm[0]
		pl.warm = pl.warm[1:]
		if r, ok := o.state.get(id); ok && r.Status == api.StatusRunning {
			return id, true
		}
	}
	pl.lastMiss = time.Now()
	if pl.cfg.Target < pl.cfg.Max {
		pl.cfg.Target++
	}
	return "", false
}

// loadPools reads the pools and finds their warm sandboxes again: running
// containers of a pool that no session took.
func (o *Orchestrator) loadPools(ctx context.Context) error {
	o.pools = &pools{m: map[string]*pool{}}
	kv, err := o.js.KeyValue(ctx, events.BucketPools)
	if err != nil {
		return err
	}
	o.pools.kv = kv
	// Pools were kept in the sessions bucket once, under a prefix: move
	// them to their own.
	if old, err := o.sess.kv.ListKeys(ctx); err == nil {
		for key := range old.Keys() {
			if !strings.HasPrefix(key, poolKeyPrefix) {
				continue
			}
			if entry, err := o.sess.kv.Get(ctx, key); err == nil {
				if _, err := kv.Put(ctx, strings.TrimPrefix(key, poolKeyPrefix), entry.Value()); err != nil {
					return err
				}
				_ = o.sess.kv.Purge(ctx, key)
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
	for key := range lister.Keys() {
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var p api.Pool
		if json.Unmarshal(entry.Value(), &p) == nil {
			o.pools.m[key] = &pool{cfg: p}
		}
	}
	return nil
}

// adoptWarm finds the pools' sandboxes in the projection, once it caught up.
func (o *Orchestrator) adoptWarm() {
	taken := map[string]bool{}
	for _, s := range o.Sessions(true) {
		taken[s.ContainerID] = true
	}
	o.pools.mu.Lock()
	defer o.pools.mu.Unlock()
	for _, r := range o.state.list() {
		key := r.Labels[LabelPool]
		if pl, ok := o.pools.m[key]; ok && r.Status == api.StatusRunning && !taken[r.ID] {
			pl.warm = append(pl.warm, r.ID)
		}
	}
}

// poolLoop keeps every pool at its target: it makes sandboxes that are
// missing, lets the target fall back to the size when no miss happened
// for a minute, and removes sandboxes above the target.
func (o *Orchestrator) poolLoop(ctx context.Context) error {
	o.adoptWarm()
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
		o.pools.mu.Lock()
		for key, pl := range o.pools.m {
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
					id, aerr := o.warmOne(ctx, key, cfg)
					o.pools.mu.Lock()
					pl.creating--
					if aerr == nil {
						pl.warm = append(pl.warm, id)
					}
					o.pools.mu.Unlock()
					if aerr != nil && ctx.Err() == nil {
						o.log.Warn("orchestrator: warm a sandbox", "pool", key, "err", aerr.Message)
						time.Sleep(time.Second) // do not spin on a pool that cannot fill
					}
				}(key, pl.cfg)
			}
		}
		o.pools.mu.Unlock()
		for _, id := range extra {
			rm, err := events.New(events.ContainerRemoveRequested, "/openagent/pools", events.ContainerRequestedData{ContainerID: id, Force: true})
			if err == nil {
				_, _ = o.Handle(ctx, rm)
			}
		}
	}
}

// warmOne makes one running sandbox for a pool.
func (o *Orchestrator) warmOne(ctx context.Context, key string, p api.Pool) (string, *api.Error) {
	spec := sandboxSpec(p.Driver, p.Image, p.CPU, p.MemoryMB, nil)
	id := newContainerID()
	spec.SessionID = id
	spec.Labels[LabelPool] = key
	e, err := events.New(events.ContainerCreateRequested, "/openagent/pools", api.CreateRequest{ContainerID: id, Driver: p.Driver, Start: true, Spec: spec})
	if err != nil {
		return "", &api.Error{Kind: api.KindInternal, Message: err.Error()}
	}
	c, aerr := o.runContainer(ctx, e)
	if aerr != nil {
		return "", aerr
	}
	return c.ID, nil
}
