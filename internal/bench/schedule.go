package bench

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"time"

	"github.com/openagent/orchestrator/pkg/scheduler"
)

// ScheduleConfig configures Schedule.
type ScheduleConfig struct {
	Hosts      int // hosts in the fleet
	Placements int // placements timed; 0: 100,000
	Sample     int // fit hosts weighed per placement; 0: scheduler.DefaultSample
	Seed       uint64
}

// ScheduleResult is the speed of placement over a fleet, and what the
// sampled search costs in quality against looking at every host, over the
// same stream of requests filling the same fleet.
type ScheduleResult struct {
	Hosts      int     `json:"hosts"`
	Sample     int     `json:"sample"`
	Placements int     `json:"placements"`
	PerSecond  float64 `json:"placements_per_s"` // sampled, on one core
	P50        float64 `json:"p50_us"`
	P99        float64 `json:"p99_us"`
	// The same, looking at every host, for a baseline of the same run.
	ExhaustivePerSecond float64 `json:"exhaustive_placements_per_s"`
	ExhaustiveP50       float64 `json:"exhaustive_p50_us"`
	ExhaustiveP99       float64 `json:"exhaustive_p99_us"`
	// Quality, filling the fleet with a mix of requests until the first one
	// it cannot take: how many were placed before, and how much cpu was
	// left free then (fragmentation: room too scattered for the request).
	Sampled    Fill `json:"sampled"`
	Exhaustive Fill `json:"exhaustive"`
}

// Fill is how a fleet filled.
type Fill struct {
	Placed    int `json:"placed"`
	Failed    int `json:"failed"`
	HostsUsed int `json:"hosts_used"`
	// FreeCPU is the fraction of the fleet's cpu still free when the first
	// request failed: what fragmentation left unusable for that request.
	FreeCPU float64 `json:"free_cpu_fraction"`
}

// fleet is a heterogeneous fleet: three sizes of host in three zones.
func fleet(n int) []*scheduler.Host {
	sizes := []scheduler.Resources{{CPU: 8, MemoryMB: 32768, Pids: 4096}, {CPU: 16, MemoryMB: 65536, Pids: 8192}, {CPU: 64, MemoryMB: 262144, Pids: 32768}}
	hosts := make([]*scheduler.Host, n)
	for i := range hosts {
		hosts[i] = &scheduler.Host{ID: fmt.Sprintf("host-%05d", i), Drivers: []string{"fake"}, Labels: map[string]string{"zone": []string{"a", "b", "c"}[i%3]},
			Capacity: sizes[i%len(sizes)], Reserved: scheduler.Resources{CPU: 0.5, MemoryMB: 1024}}
	}
	return hosts
}

// mix is the requests a fleet is filled with: sizes that do not tile the
// hosts, so that where each goes decides how much room is left whole.
var mix = []scheduler.Resources{
	{CPU: 0.3, MemoryMB: 300, Pids: 64},
	{CPU: 0.7, MemoryMB: 1500, Pids: 100},
	{CPU: 1.5, MemoryMB: 3000, Pids: 256},
	{CPU: 3.3, MemoryMB: 7000, Pids: 512},
}

// Schedule measures placement (see ScheduleResult). It runs on one core.
func Schedule(cfg ScheduleConfig) ScheduleResult {
	if cfg.Placements <= 0 {
		cfg.Placements = 100_000
	}
	if cfg.Sample == 0 {
		cfg.Sample = scheduler.DefaultSample
	}
	prev := runtime.GOMAXPROCS(1)
	defer runtime.GOMAXPROCS(prev)
	res := ScheduleResult{Hosts: cfg.Hosts, Sample: cfg.Sample, Placements: cfg.Placements}
	res.PerSecond, res.P50, res.P99 = timePlacements(cfg, cfg.Sample)
	res.ExhaustivePerSecond, res.ExhaustiveP50, res.ExhaustiveP99 = timePlacements(cfg, -1)
	res.Sampled = fill(cfg, cfg.Sample)
	res.Exhaustive = fill(cfg, -1)
	return res
}

// timePlacements places requests of the mix over a half-full fleet
// (allocations left as they are, so every placement sees the same fleet),
// timing each in batches: the clock's own cost stays out of the figures.
func timePlacements(cfg ScheduleConfig, sample int) (perSecond, p50, p99 float64) {
	hosts := fleet(cfg.Hosts)
	for _, h := range hosts {
		h.Allocated = scheduler.Resources{CPU: (h.Capacity.CPU - 0.5) / 2, MemoryMB: h.Capacity.MemoryMB / 3, Pids: h.Capacity.Pids / 4}
	}
	now := time.Now()
	for _, h := range hosts {
		h.LastSeen = now
	}
	s := scheduler.Snapshot{Hosts: hosts, Now: now, Sample: sample}
	rng := rand.New(rand.NewPCG(cfg.Seed, 1))
	const batch = 100
	var per []float64
	begin := time.Now()
	for done := 0; done < cfg.Placements; done += batch {
		t := time.Now()
		for range batch {
			req := scheduler.Request{Driver: "fake", Resources: mix[rng.IntN(len(mix))]}
			if rng.IntN(4) == 0 {
				req.Constraints = map[string]string{"zone": "b"}
			}
			if _, err := scheduler.Place(s, req); err != nil {
				panic(err) // a half-full fleet fits every request of the mix
			}
		}
		per = append(per, float64(time.Since(t).Microseconds())/batch)
	}
	elapsed := time.Since(begin)
	slices.Sort(per)
	return float64(cfg.Placements) / elapsed.Seconds(), per[len(per)/2], per[len(per)*99/100]
}

// fill fills a fleet with the mix until a request fails.
func fill(cfg ScheduleConfig, sample int) Fill {
	hosts := fleet(cfg.Hosts)
	now := time.Now()
	for _, h := range hosts {
		h.LastSeen = now
	}
	byID := map[string]*scheduler.Host{}
	for _, h := range hosts {
		byID[h.ID] = h
	}
	s := scheduler.Snapshot{Hosts: hosts, Now: now, Sample: sample}
	rng := rand.New(rand.NewPCG(cfg.Seed, 2))
	var f Fill
	for {
		r := mix[rng.IntN(len(mix))]
		plan, err := scheduler.Place(s, scheduler.Request{Driver: "fake", Resources: r})
		if err != nil {
			f.Failed++
			break // the first request the fleet cannot take
		}
		h := byID[plan.HostID]
		h.Allocated = h.Allocated.Add(r)
		f.Placed++
	}
	var free, total float64
	for _, h := range hosts {
		usable := h.Capacity.Sub(h.Reserved)
		if h.Allocated.CPU > 0 {
			f.HostsUsed++
		}
		total += usable.CPU
		free += usable.Sub(h.Allocated).CPU
	}
	f.FreeCPU = free / total
	return f
}
