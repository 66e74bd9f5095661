package scheduler

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var now = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

func host(id string, cpu float64, mem int64, allocCPU float64, allocMem int64, drivers ...string) *Host {
	return &Host{ID: id, Drivers: drivers, Capacity: Resources{CPU: cpu, MemoryMB: mem, Pids: 1000},
		Allocated: Resources{CPU: allocCPU, MemoryMB: allocMem}, LastSeen: now, Labels: map[string]string{"zone": "a"}}
}

func TestPlace(t *testing.T) {
	small := Resources{CPU: 0.5, MemoryMB: 512, Pids: 100}
	for _, tc := range []struct {
		name  string
		hosts []*Host
		req   Request
		want  Plan
		unfit []Unfit
	}{
		{"binpack: the host left fullest wins", []*Host{host("a", 4, 8192, 3, 1024, "fake"), host("b", 4, 8192, 1, 1024, "fake")},
			Request{Driver: "fake", Resources: small}, Plan{"a", "fake"}, nil},
		{"spread: the host left emptiest wins", []*Host{host("a", 4, 8192, 3, 1024, "fake"), host("b", 4, 8192, 1, 1024, "fake")},
			Request{Driver: "fake", Resources: small, Strategy: Spread}, Plan{"b", "fake"}, nil},
		{"spread: memory decides when cpu is even", []*Host{host("a", 4, 8192, 1, 6000, "fake"), host("b", 4, 8192, 1, 1000, "fake")},
			Request{Driver: "fake", Resources: small, Strategy: Spread}, Plan{"b", "fake"}, nil},
		{"ties break by id", []*Host{host("b", 4, 8192, 0, 0, "fake"), host("a", 4, 8192, 0, 0, "fake")},
			Request{Resources: small}, Plan{"a", "fake"}, nil},
		{"driver filters", []*Host{host("a", 4, 8192, 0, 0, "fake"), host("b", 4, 8192, 3, 0, "fake", "local")},
			Request{Driver: "local", Resources: small}, Plan{"b", "local"}, nil},
		{"pinned host", []*Host{host("a", 4, 8192, 0, 0, "fake"), host("b", 4, 8192, 3, 0, "fake")},
			Request{HostID: "b", Resources: small}, Plan{"b", "fake"}, nil},
		{"operators: notin and exists", []*Host{
			func() *Host { h := host("a", 4, 8192, 0, 0, "fake"); h.Labels["gpu"] = "a100"; return h }(),
			func() *Host {
				h := host("b", 4, 8192, 0, 0, "fake")
				h.Labels["zone"] = "b"
				h.Labels["gpu"] = "h100"
				return h
			}(),
			host("c", 4, 8192, 0, 0, "fake"),
		}, Request{Resources: small, Expressions: []Constraint{{Key: "zone", Op: OpNotIn, Values: []string{"a", "c"}}, {Key: "gpu", Op: OpExists}}}, Plan{"b", "fake"}, nil},
		{"anti-affinity keeps a group apart", []*Host{
			func() *Host { h := host("a", 4, 8192, 3, 0, "fake"); h.Groups = map[string]int{"s-1": 1}; return h }(),
			host("b", 4, 8192, 0, 0, "fake"),
		}, Request{Resources: small, AntiAffinity: "s-1"}, Plan{"b", "fake"}, nil},
		{"capabilities and GPUs", []*Host{
			func() *Host { h := host("a", 4, 8192, 0, 0, "fake"); h.Capabilities = []string{"pause"}; return h }(),
			func() *Host {
				h := host("b", 4, 8192, 0, 0, "fake")
				h.Capabilities, h.Capacity.GPUs, h.Allocated.GPUs = []string{"pause", "gpu"}, 2, 1
				return h
			}(),
			func() *Host {
				h := host("c", 4, 8192, 0, 0, "fake")
				h.Capabilities, h.Capacity.GPUs, h.Allocated.GPUs = []string{"pause", "gpu"}, 8, 1
				return h
			}(),
		}, Request{Resources: Resources{CPU: 0.5, MemoryMB: 512, Pids: 100, GPUs: 2}, Capabilities: []string{"gpu"}}, Plan{"c", "fake"}, nil},
		{"reserved capacity is not given out", []*Host{
			func() *Host { h := host("a", 4, 8192, 3, 0, "fake"); h.Reserved = Resources{CPU: 0.75}; return h }(),
			host("b", 4, 8192, 0, 0, "fake"),
		}, Request{Resources: small}, Plan{"b", "fake"}, nil},
		{"every host unfit, each says why", []*Host{
			host("full", 1, 8192, 0.75, 0, "fake"),
			host("nomem", 4, 1024, 0, 800, "fake"),
			host("nodriver", 4, 8192, 0, 0, "docker"),
			func() *Host { h := host("dead", 4, 8192, 0, 0, "fake"); h.LastSeen = now.Add(-time.Minute); return h }(),
			func() *Host { h := host("elsewhere", 4, 8192, 0, 0, "fake"); h.Labels["zone"] = "b"; return h }(),
			func() *Host {
				h := host("sick", 4, 8192, 0, 0, "fake")
				h.QuarantinedUntil = now.Add(time.Minute)
				return h
			}(),
			func() *Host {
				h := host("reserved", 4, 8192, 0, 0, "fake")
				h.Reserved = Resources{CPU: 3.75}
				return h
			}(),
		}, Request{Driver: "fake", Resources: small, Constraints: map[string]string{"zone": "a"}}, Plan{}, []Unfit{
			{"dead", NotLive, "not live: last heartbeat 1m0s ago"},
			{"elsewhere", Constrained, `label zone=a wanted, has "b"`},
			{"full", NoCPU, "cpu: 0.5 cores requested, 0.25 free of 1"},
			{"nodriver", NoDriver, "no fake driver (has docker)"},
			{"nomem", NoMemory, "memory: 512 MB requested, 224 free of 1024"},
			{"reserved", NoCPU, "cpu: 0.5 cores requested, 0.25 free of 0.25"},
			{"sick", Quarantined, "quarantined until 2026-11-30T12:01:00Z: its creates kept failing"},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Place(Snapshot{Hosts: tc.hosts, Now: now, LiveWithin: 10 * time.Second}, tc.req)
			if tc.unfit != nil {
				var pe *PlacementError
				if !errors.As(err, &pe) || !errors.Is(err, ErrNoHost) {
					t.Fatalf("got %v, %v; want a placement error", got, err)
				}
				if d := cmp.Diff(tc.unfit, pe.Hosts); d != "" {
					t.Fatalf("reasons (-want +got):\n%s", d)
				}
				if !strings.Contains(err.Error(), "nomem: memory") {
					t.Fatalf("message %q does not name each host", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestPlaceWithNoHosts(t *testing.T) {
	_, err := Place(Snapshot{Now: now}, Request{})
	if !errors.Is(err, ErrNoHost) || !strings.Contains(err.Error(), "no hosts registered") {
		t.Fatalf("got %v", err)
	}
}

func TestLive(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		ago    time.Duration
		within time.Duration
		want   bool
	}{
		{0, 10 * time.Second, true},
		{10 * time.Second, 10 * time.Second, true},
		{11 * time.Second, 10 * time.Second, false},
		{9 * time.Second, 0, true},   // the default, 10 s
		{11 * time.Second, 0, false}, // the default, 10 s
	} {
		if got := Live(now.Add(-tc.ago), now, tc.within); got != tc.want {
			t.Errorf("Live(%v ago, within %v) = %v; want %v", tc.ago, tc.within, got, tc.want)
		}
	}
}

// fleet is n live hosts of 16 cores, 64 GB and 4096 pids, one driver.
func fleet(n int) []*Host {
	hosts := make([]*Host, n)
	for i := range hosts {
		hosts[i] = &Host{ID: fmt.Sprintf("host-%04d", i), Drivers: []string{"fake"}, Labels: map[string]string{"zone": []string{"a", "b", "c"}[i%3]},
			Capacity: Resources{CPU: 16, MemoryMB: 65536, Pids: 4096}, LastSeen: now}
	}
	return hosts
}

func BenchmarkPlace1000(b *testing.B) {
	s := Snapshot{Hosts: fleet(1000), Now: now, LiveWithin: 10 * time.Second}
	req := Request{Driver: "fake", Resources: Resources{CPU: 0.5, MemoryMB: 512, Pids: 100}, Constraints: map[string]string{"zone": "a"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(s, req); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPlace1000Exhaustive(b *testing.B) {
	s := Snapshot{Hosts: fleet(1000), Now: now, LiveWithin: 10 * time.Second, Sample: -1}
	req := Request{Driver: "fake", Resources: Resources{CPU: 0.5, MemoryMB: 512, Pids: 100}, Constraints: map[string]string{"zone": "a"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Place(s, req); err != nil {
			b.Fatal(err)
		}
	}
}

// A sampled search that meets no fit host goes on until it finds one: the
// one fit host of a thousand is found, whatever the random start.
func TestSampledSearchFindsTheOnlyFitHost(t *testing.T) {
	hosts := fleet(1000)
	for _, h := range hosts {
		h.Allocated = h.Capacity
	}
	hosts[617].Allocated = Resources{}
	for range 50 {
		plan, err := Place(Snapshot{Hosts: hosts, Now: now, Sample: 4}, Request{Resources: Resources{CPU: 1, MemoryMB: 1, Pids: 1}})
		if err != nil || plan.HostID != hosts[617].ID {
			t.Fatalf("got %+v, %v; want %s", plan, err, hosts[617].ID)
		}
	}
}

// Constraints that cannot be evaluated are refused, naming why.
func TestConstraintCheck(t *testing.T) {
	for c, want := range map[*Constraint]string{
		{Key: "", Op: OpEqual, Values: []string{"a"}}:      "no label key",
		{Key: "zone", Op: OpExists, Values: []string{"a"}}: "takes no values",
		{Key: "zone", Op: OpEqual}:                         "takes one value",
		{Key: "zone", Op: OpIn}:                            "one value or more",
		{Key: "zone", Op: "~", Values: []string{"a"}}:      "unknown operator",
	} {
		if err := c.Check(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v; want %q", *c, err, want)
		}
	}
	if err := (Constraint{Key: "zone", Op: OpIn, Values: []string{"a", "b"}}).Check(); err != nil {
		t.Fatal(err)
	}
}
