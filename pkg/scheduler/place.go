// Package scheduler places containers on hosts. Placement is a pure
// function over a snapshot of hosts: feasibility checks name why each host
// is unfit, and the feasible host left least loaded after placement wins.
package scheduler

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// Resources are amounts of cpu (cores), memory (MB) and pids.
type Resources struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int64   `json:"memoryMB"`
	Pids     int64   `json:"pids"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPU: r.CPU + o.CPU, MemoryMB: r.MemoryMB + o.MemoryMB, Pids: r.Pids + o.Pids}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPU: r.CPU - o.CPU, MemoryMB: r.MemoryMB - o.MemoryMB, Pids: r.Pids - o.Pids}
}

// Host is what placement knows of one host.
type Host struct {
	ID        string
	Labels    map[string]string
	Drivers   []string
	Capacity  Resources
	Allocated Resources // by containers placed there and not yet removed
	LastSeen  time.Time
	Draining  bool
}

// Request is what a container needs.
type Request struct {
	Driver      string            // required driver; "" takes the host's first
	HostID      string            // pin to one host, if set
	Constraints map[string]string // labels the host must have
	Resources   Resources
}

// Snapshot is the state placement decides on.
type Snapshot struct {
	Hosts []*Host
	Now   time.Time
	// LiveWithin is how recent a host's last heartbeat must be.
	LiveWithin time.Duration
}

// DefaultLiveWithin is how recent a host's heartbeat must be for it to be
// live, when nothing else is configured: five missed heartbeats of 2 s.
const DefaultLiveWithin = 10 * time.Second

// Live is the one liveness rule: a host is live while its last heartbeat
// is at most within old. Placement, the API's view and the doors all ask
// it.
func Live(lastSeen, now time.Time, within time.Duration) bool {
	if within <= 0 {
		within = DefaultLiveWithin
	}
	return now.Sub(lastSeen) <= within
}

// Plan is where a container goes.
type Plan struct {
	HostID string
	Driver string
}

// ErrNoHost is the error of a placement that found no fit host.
var ErrNoHost = errors.New("scheduler: no host fits")

// Unfit says why one host could not take the request.
type Unfit struct {
	HostID string `json:"hostId"`
	Reason string `json:"reason"`
}

// PlacementError lists why every host was unfit. It matches ErrNoHost.
type PlacementError struct {
	Hosts []Unfit
}

func (e *PlacementError) Error() string {
	if len(e.Hosts) == 0 {
		return "scheduler: no host fits: no hosts registered"
	}
	parts := make([]string, len(e.Hosts))
	for i, u := range e.Hosts {
		parts[i] = u.HostID + ": " + u.Reason
	}
	return "scheduler: no host fits: " + strings.Join(parts, "; ")
}

// Is reports whether target is ErrNoHost.
func (e *PlacementError) Is(target error) bool { return target == ErrNoHost }

// Place chooses a host for req: among the live hosts that have the driver,
// the labels and the free capacity, the one left least loaded (its most
// used resource the least used), ties broken by id.
func Place(s Snapshot, req Request) (Plan, error) {
	var (
		best      *Host
		bestScore float64
		unfit     []Unfit
	)
	for _, h := range s.Hosts {
		if reason := infeasible(s, h, req); reason != "" {
			unfit = append(unfit, Unfit{HostID: h.ID, Reason: reason})
			continue
		}
		score := load(h.Allocated.Add(req.Resources), h.Capacity)
		if best == nil || score < bestScore || score == bestScore && h.ID < best.ID {
			best, bestScore = h, score
		}
	}
	if best == nil {
		slices.SortFunc(unfit, func(a, b Unfit) int { return strings.Compare(a.HostID, b.HostID) })
		return Plan{}, &PlacementError{Hosts: unfit}
	}
	drv := req.Driver
	if drv == "" {
		drv = best.Drivers[0]
	}
	return Plan{HostID: best.ID, Driver: drv}, nil
}

// infeasible returns why h cannot take req, "" if it can.
func infeasible(s Snapshot, h *Host, req Request) string {
	switch {
	case req.HostID != "" && h.ID != req.HostID:
		return "not the requested host " + req.HostID
	case h.Draining:
		return "draining"
	case !Live(h.LastSeen, s.Now, s.LiveWithin):
		return fmt.Sprintf("not live: last heartbeat %s ago", s.Now.Sub(h.LastSeen).Round(time.Second))
	case len(h.Drivers) == 0:
		return "no drivers"
	case req.Driver != "" && !slices.Contains(h.Drivers, req.Driver):
		return fmt.Sprintf("no %s driver (has %s)", req.Driver, strings.Join(h.Drivers, ", "))
	}
	for _, k := range slices.Sorted(maps.Keys(req.Constraints)) {
		if got, ok := h.Labels[k]; !ok || got != req.Constraints[k] {
			return fmt.Sprintf("label %s=%s wanted, has %q", k, req.Constraints[k], got)
		}
	}
	free := h.Capacity.Sub(h.Allocated)
	switch {
	case req.Resources.CPU > free.CPU+1e-9:
		return fmt.Sprintf("cpu: %g cores requested, %g free of %g", req.Resources.CPU, max(free.CPU, 0), h.Capacity.CPU)
	case req.Resources.MemoryMB > free.MemoryMB:
		return fmt.Sprintf("memory: %d MB requested, %d free of %d", req.Resources.MemoryMB, max(free.MemoryMB, 0), h.Capacity.MemoryMB)
	case req.Resources.Pids > free.Pids:
		return fmt.Sprintf("pids: %d requested, %d free of %d", req.Resources.Pids, max(free.Pids, 0), h.Capacity.Pids)
	}
	return ""
}

// load is the largest fraction of a resource used.
func load(used, capacity Resources) float64 {
	frac := func(u, c float64) float64 {
		if c <= 0 {
			return 1
		}
		return u / c
	}
	return max(frac(used.CPU, capacity.CPU), frac(float64(used.MemoryMB), float64(capacity.MemoryMB)), frac(float64(used.Pids), float64(capacity.Pids)))
}
