package worker

import (
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/events"
)

// DefaultSampleEvery is how often a worker samples its running containers'
// resource use for the metrics and the alert rules.
const DefaultSampleEvery = 10 * time.Second

// sampleTimeout bounds one container's sample (Docker's takes a CPU
// reading over about a second).
const sampleTimeout = 5 * time.Second

// sampleLoop samples the running containers every SampleEvery and
// publishes each round on the host's samples subject, in batches.
func (w *Worker) sampleLoop(ctx context.Context) error {
	t := time.NewTicker(w.cfg.SampleEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			w.publishSamples(w.sample(ctx))
		}
	}
}

// samplesPerBatch keeps a batch of samples far below the bus's message
// size, however many containers a host runs.
const samplesPerBatch = 1000

// publishSamples publishes a round of samples, at most once: the next
// round replaces a lost one.
func (w *Worker) publishSamples(samples []events.ContainerSample) {
	for len(samples) > 0 {
		n := min(len(samples), samplesPerBatch)
		b, _ := json.Marshal(events.SamplesBatch{Samples: samples[:n]})
		if err := w.cfg.NC.Publish(events.SamplesSubject(w.cfg.HostID), b); err != nil {
			w.log.Warn("worker: publish samples", "err", err)
			return
		}
		samples = samples[n:]
	}
}

// sample takes one sample of each container this host runs, a few at a
// time (a container that is not running has none), sorted by id.
func (w *Worker) sample(ctx context.Context) []events.ContainerSample {
	w.mu.Lock()
	owned := maps.Clone(w.owner)
	w.mu.Unlock()
	var mu sync.Mutex
	got := make(map[string]events.ContainerSample, len(owned))
	slots := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for id, drv := range owned {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			sctx, cancel := context.WithTimeout(ctx, sampleTimeout)
			defer cancel()
			st, err := drv.Stats(sctx, id)
			if err != nil {
				return // not running, or gone: no sample
			}
			at := st.Time
			if at.IsZero() {
				at = time.Now()
			}
			mu.Lock()
			got[id] = events.ContainerSample{ContainerID: id, CPU: st.CPUPercent / 100, MemoryBytes: st.MemoryBytes,
				MemoryLimitBytes: st.MemoryLimitBytes, Pids: st.Pids, At: at.UTC()}
			mu.Unlock()
		}()
	}
	wg.Wait()
	out := slices.Collect(maps.Values(got))
	slices.SortFunc(out, func(a, b events.ContainerSample) int { return strings.Compare(a.ContainerID, b.ContainerID) })
	return out
}

// countError counts a driver's failed call by its kind.
func (w *Worker) countError(drv, kind string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.errors[drv] == nil {
		w.errors[drv] = map[string]uint64{}
	}
	w.errors[drv][kind]++
}

// errorCounts are a driver's failed calls so far, by kind.
func (w *Worker) errorCounts(drv string) map[string]uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.errors[drv])
}
