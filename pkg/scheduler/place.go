// Package scheduler places containers on hosts. Placement is a pure
// function over a snapshot of hosts. A host is fit when it is live, not
// draining or quarantined, has the driver, the capabilities, the labels the
// constraints ask for, no container of the request's anti-affinity group,
// and the free capacity (beyond what it reserves for itself). Among fit
// hosts the strategy chooses: binpack (the default) the one left fullest,
// spread the one left emptiest, ties broken by id.
//
// Placement looks at every host only when asked to (Sample < 0), or when
// the fleet is small: otherwise it starts at a random host and takes the
// best of the first Sample fit ones it meets, as Nomad limits its search,
// so that its cost does not grow with the fleet while the fleet has room.
// When no host fits, a second pass says why each one does not, with a
// typed reason; the common, successful path formats nothing.
package scheduler

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// Resources are amounts of cpu (cores), memory (MB), pids and GPUs.
type Resources struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int64   `json:"memoryMB"`
	Pids     int64   `json:"pids"`
	GPUs     int64   `json:"gpus,omitempty"`
}

// Add returns r + o.
func (r Resources) Add(o Resources) Resources {
	return Resources{CPU: r.CPU + o.CPU, MemoryMB: r.MemoryMB + o.MemoryMB, Pids: r.Pids + o.Pids, GPUs: r.GPUs + o.GPUs}
}

// Sub returns r - o.
func (r Resources) Sub(o Resources) Resources {
	return Resources{CPU: r.CPU - o.CPU, MemoryMB: r.MemoryMB - o.MemoryMB, Pids: r.Pids - o.Pids, GPUs: r.GPUs - o.GPUs}
}

// Host is what placement knows of one host.
type Host struct {
	ID        string
	Labels    map[string]string
	Drivers   []string
	Capacity  Resources
	Reserved  Resources // kept back for the host's own processes
	Allocated Resources // by containers placed there and not yet removed
	LastSeen  time.Time
	Draining  bool
	// Capabilities the host offers beyond running containers ("pause",
	// "gpu").
	Capabilities []string
	// Groups counts the host's containers by anti-affinity group.
	Groups map[string]int
	// QuarantinedUntil keeps a host whose creates keep failing out of
	// placement for a while.
	QuarantinedUntil time.Time
}

// Op is how a constraint compares a host's label.
type Op string

// Constraint operators.
const (
	OpEqual    Op = "="
	OpNotEqual Op = "!="
	OpIn       Op = "in"
	OpNotIn    Op = "notin"
	OpExists   Op = "exists"
)

// Constraint is a condition on a host's label.
type Constraint struct {
	Key    string   `json:"key"`
	Op     Op       `json:"op"`
	Values []string `json:"values,omitempty"`
}

// holds says whether a host's labels meet the constraint.
func (c Constraint) holds(labels map[string]string) bool {
	v, ok := labels[c.Key]
	switch c.Op {
	case OpEqual, "":
		return ok && len(c.Values) > 0 && v == c.Values[0]
	case OpNotEqual:
		return !ok || len(c.Values) == 0 || v != c.Values[0]
	case OpIn:
		return ok && slices.Contains(c.Values, v)
	case OpNotIn:
		return !ok || !slices.Contains(c.Values, v)
	case OpExists:
		return ok
	}
	return false
}

func (c Constraint) String() string {
	switch c.Op {
	case OpExists:
		return c.Key + " exists"
	case OpIn, OpNotIn:
		return fmt.Sprintf("%s %s (%s)", c.Key, c.Op, strings.Join(c.Values, ", "))
	}
	return fmt.Sprintf("%s%s%s", c.Key, c.Op, strings.Join(c.Values, ","))
}

// Check refuses a constraint that cannot be evaluated, naming why.
func (c Constraint) Check() error {
	switch {
	case c.Key == "":
		return errors.New("constraint: no label key")
	case c.Op == OpExists && len(c.Values) > 0:
		return fmt.Errorf("constraint %s: exists takes no values", c.Key)
	case (c.Op == OpEqual || c.Op == OpNotEqual) && len(c.Values) != 1:
		return fmt.Errorf("constraint %s %s: takes one value", c.Key, c.Op)
	case (c.Op == OpIn || c.Op == OpNotIn) && len(c.Values) == 0:
		return fmt.Errorf("constraint %s %s: takes one value or more", c.Key, c.Op)
	}
	switch c.Op {
	case OpEqual, OpNotEqual, OpIn, OpNotIn, OpExists:
		return nil
	}
	return fmt.Errorf("constraint %s: unknown operator %q (=, !=, in, notin, exists)", c.Key, c.Op)
}

// Strategy chooses among fit hosts.
type Strategy string

// Strategies.
const (
	Binpack Strategy = "binpack" // the host left fullest: fewer hosts in use, room kept whole
	Spread  Strategy = "spread"  // the host left emptiest: load evened out
)

// Request is what a container needs.
type Request struct {
	Driver      string            // required driver; "" takes the host's first
	HostID      string            // pin to one host, if set
	Constraints map[string]string // labels the host must have, equal
	Expressions []Constraint      // conditions on labels, with operators
	// Capabilities the host must offer.
	Capabilities []string
	// AntiAffinity is a group (a session group, a label's value) no other
	// container of which the host may run.
	AntiAffinity string
	Resources    Resources
	Strategy     Strategy // Binpack when empty
}

// Snapshot is the state placement decides on.
type Snapshot struct {
	Hosts []*Host
	Now   time.Time
	// LiveWithin is how recent a host's last heartbeat must be.
	LiveWithin time.Duration
	// Sample is how many fit hosts placement weighs: the best of the
	// first Sample it meets from a random start. 0 means DefaultSample;
	// below 0, every host.
	Sample int
	// Allocated, Groups and Quarantined, when set, hold what changes with
	// every placement, by host id, in place of the hosts' own fields: a
	// caller keeps one list of hosts and lends its maps, and placement
	// reads only the hosts it looks at.
	Allocated   map[string]Resources
	Groups      map[string]map[string]int
	Quarantined map[string]time.Time
	// Lost are the hosts declared lost, with when: not live until they
	// report after it.
	Lost map[string]time.Time
	// Draining are the hosts an operator drains: placement passes them by.
	Draining map[string]time.Time
}

// LastHeard is when the control plane last heard from a host, or could
// have: its last heartbeat, or since when it has been listening.
func LastHeard(lastSeen, heardSince time.Time) time.Time {
	if heardSince.After(lastSeen) {
		return heardSince
	}
	return lastSeen
}

func (s *Snapshot) live(h *Host, within time.Duration) bool {
	if lost, ok := s.Lost[h.ID]; ok && !h.LastSeen.After(lost) {
		return false
	}
	return Live(h.LastSeen, s.Now, within)
}

func (s *Snapshot) draining(h *Host) bool {
	_, ok := s.Draining[h.ID]
	return ok
}

func (s *Snapshot) allocated(h *Host) Resources {
	if s.Allocated != nil {
		return s.Allocated[h.ID]
	}
	return h.Allocated
}

func (s *Snapshot) groups(h *Host) map[string]int {
	if s.Groups != nil {
		return s.Groups[h.ID]
	}
	return h.Groups
}

func (s *Snapshot) quarantined(h *Host) time.Time {
	if s.Quarantined != nil {
		return s.Quarantined[h.ID]
	}
	return h.QuarantinedUntil
}

// DefaultSample is how many fit hosts a placement weighs by default.
// BenchmarkQuality measures what it costs against looking at every host.
const DefaultSample = 64

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

// ReasonKind is why a host is unfit, as a program tells it apart.
type ReasonKind string

// Reasons a host is unfit.
const (
	NotRequested ReasonKind = "not-requested" // another host was asked for
	Draining     ReasonKind = "draining"
	NotLive      ReasonKind = "not-live"
	Quarantined  ReasonKind = "quarantined"
	NoDriver     ReasonKind = "no-driver"
	NoCapability ReasonKind = "no-capability"
	Constrained  ReasonKind = "constraint"
	AntiAffinity ReasonKind = "anti-affinity"
	NoCPU        ReasonKind = "cpu"
	NoMemory     ReasonKind = "memory"
	NoPids       ReasonKind = "pids"
	NoGPUs       ReasonKind = "gpus"
)

// Unfit says why one host could not take the request: the kind, and the
// reason in words.
type Unfit struct {
	HostID string     `json:"hostId"`
	Kind   ReasonKind `json:"kind"`
	Reason string     `json:"reason"`
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

// Place chooses a host for req (see the package comment).
func Place(s Snapshot, req Request) (Plan, error) {
	p := newPlacement(s, req)
	n := len(s.Hosts)
	k, start := s.Sample, 0
	if k == 0 {
		k = DefaultSample
	}
	if k > 0 && n > k {
		start = rand.IntN(n)
	} else {
		k = n // every host
	}
	var best *Host
	var bestScore float64
	fit := 0
	for i := range n {
		h := s.Hosts[(start+i)%n]
		if p.unfit(h) != "" {
			continue
		}
		score := p.score(h)
		if best == nil || score < bestScore || score == bestScore && h.ID < best.ID {
			best, bestScore = h, score
		}
		if fit++; fit >= k {
			break
		}
	}
	if best == nil {
		return Plan{}, p.explain()
	}
	drv := req.Driver
	if drv == "" {
		drv = best.Drivers[0]
	}
	return Plan{HostID: best.ID, Driver: drv}, nil
}

// placement is one request's placement: what it checks, computed once.
type placement struct {
	s           Snapshot
	req         Request
	within      time.Duration
	constraints []Constraint
	spread      bool
}

func newPlacement(s Snapshot, req Request) *placement {
	p := &placement{s: s, req: req, within: s.LiveWithin, spread: req.Strategy == Spread}
	if p.within <= 0 {
		p.within = DefaultLiveWithin
	}
	keys := make([]string, 0, len(req.Constraints))
	for k := range req.Constraints {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p.constraints = append(p.constraints, Constraint{Key: k, Op: OpEqual, Values: []string{req.Constraints[k]}})
	}
	p.constraints = append(p.constraints, req.Expressions...)
	return p
}

// unfit returns why h cannot take the request, as a kind; "" if it can.
// It formats nothing: explain says it in words.
func (p *placement) unfit(h *Host) ReasonKind {
	req := &p.req
	switch {
	case req.HostID != "" && h.ID != req.HostID:
		return NotRequested
	case h.Draining || p.s.draining(h):
		return Draining
	case !p.s.live(h, p.within):
		return NotLive
	case p.s.quarantined(h).After(p.s.Now):
		return Quarantined
	case len(h.Drivers) == 0 || req.Driver != "" && !slices.Contains(h.Drivers, req.Driver):
		return NoDriver
	}
	for _, c := range req.Capabilities {
		if !slices.Contains(h.Capabilities, c) {
			return NoCapability
		}
	}
	for _, c := range p.constraints {
		if !c.holds(h.Labels) {
			return Constrained
		}
	}
	if req.AntiAffinity != "" && p.s.groups(h)[req.AntiAffinity] > 0 {
		return AntiAffinity
	}
	free := h.Capacity.Sub(h.Reserved).Sub(p.s.allocated(h))
	switch {
	case req.Resources.CPU > free.CPU+1e-9:
		return NoCPU
	case req.Resources.MemoryMB > free.MemoryMB:
		return NoMemory
	case req.Resources.Pids > free.Pids:
		return NoPids
	case req.Resources.GPUs > free.GPUs:
		return NoGPUs
	}
	return ""
}

// score orders fit hosts, lowest best: binpack prefers the host left
// fullest, spread the one left emptiest.
func (p *placement) score(h *Host) float64 {
	l := load(p.s.allocated(h).Add(p.req.Resources), h.Capacity.Sub(h.Reserved))
	if p.spread {
		return l
	}
	return -l
}

// explain says why each host is unfit.
func (p *placement) explain() *PlacementError {
	out := &PlacementError{}
	for _, h := range p.s.Hosts {
		kind := p.unfit(h)
		out.Hosts = append(out.Hosts, Unfit{HostID: h.ID, Kind: kind, Reason: p.describe(h, kind)})
	}
	slices.SortFunc(out.Hosts, func(a, b Unfit) int { return strings.Compare(a.HostID, b.HostID) })
	return out
}

// describe says in words why h is unfit.
func (p *placement) describe(h *Host, kind ReasonKind) string {
	req := &p.req
	free := h.Capacity.Sub(h.Reserved).Sub(p.s.allocated(h))
	usable := h.Capacity.Sub(h.Reserved)
	switch kind {
	case NotRequested:
		return "not the requested host " + req.HostID
	case Draining:
		return "draining"
	case NotLive:
		if _, lost := p.s.Lost[h.ID]; lost {
			return fmt.Sprintf("lost: last heartbeat %s ago", p.s.Now.Sub(h.LastSeen).Round(time.Second))
		}
		return fmt.Sprintf("not live: last heartbeat %s ago", p.s.Now.Sub(h.LastSeen).Round(time.Second))
	case Quarantined:
		return fmt.Sprintf("quarantined until %s: its creates kept failing", p.s.quarantined(h).UTC().Format(time.RFC3339))
	case NoDriver:
		if len(h.Drivers) == 0 {
			return "no drivers"
		}
		return fmt.Sprintf("no %s driver (has %s)", req.Driver, strings.Join(h.Drivers, ", "))
	case NoCapability:
		for _, c := range req.Capabilities {
			if !slices.Contains(h.Capabilities, c) {
				return fmt.Sprintf("no %s capability (has %s)", c, strings.Join(h.Capabilities, ", "))
			}
		}
	case Constrained:
		for _, c := range p.constraints {
			if !c.holds(h.Labels) {
				if c.Op == OpEqual || c.Op == "" {
					return fmt.Sprintf("label %s=%s wanted, has %q", c.Key, c.Values[0], h.Labels[c.Key])
				}
				got, ok := h.Labels[c.Key]
				if !ok {
					return fmt.Sprintf("label %s wanted, has none", c)
				}
				return fmt.Sprintf("label %s wanted, has %q", c, got)
			}
		}
	case AntiAffinity:
		return fmt.Sprintf("runs %d container(s) of group %s already", p.s.groups(h)[req.AntiAffinity], req.AntiAffinity)
	case NoCPU:
		return fmt.Sprintf("cpu: %g cores requested, %g free of %g", req.Resources.CPU, max(free.CPU, 0), usable.CPU)
	case NoMemory:
		return fmt.Sprintf("memory: %d MB requested, %d free of %d", req.Resources.MemoryMB, max(free.MemoryMB, 0), usable.MemoryMB)
	case NoPids:
		return fmt.Sprintf("pids: %d requested, %d free of %d", req.Resources.Pids, max(free.Pids, 0), usable.Pids)
	case NoGPUs:
		return fmt.Sprintf("gpus: %d requested, %d free of %d", req.Resources.GPUs, max(free.GPUs, 0), usable.GPUs)
	}
	return string(kind)
}

// load is the largest fraction of a resource used. A resource the host
// has none of counts only when something of it is used.
func load(used, capacity Resources) float64 {
	frac := func(u, c float64) float64 {
		if c <= 0 {
			if u <= 0 {
				return 0
			}
			return 1
		}
		return u / c
	}
	return max(frac(used.CPU, capacity.CPU), frac(float64(used.MemoryMB), float64(capacity.MemoryMB)),
		frac(float64(used.Pids), float64(capacity.Pids)), frac(float64(used.GPUs), float64(capacity.GPUs)))
}
