package scheduler

import (
	"errors"
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
		{"least loaded wins", []*Host{host("a", 4, 8192, 3, 1024, "fake"), host("b", 4, 8192, 1, 1024, "fake")},
			Request{Driver: "fake", Resources: small}, Plan{"b", "fake"}, nil},
		{"memory decides when cpu is even", []*Host{host("a", 4, 8192, 1, 6000, "fake"), host("b", 4, 8192, 1, 1000, "fake")},
			Request{Driver: "fake", Resources: small}, Plan{"b", "fake"}, nil},
		{"ties break by id", []*Host{host("b", 4, 8192, 0, 0, "fake"), host("a", 4, 8192, 0, 0, "fake")},
			Request{Resources: small}, Plan{"a", "fake"}, nil},
		{"driver filters", []*Host{host("a", 4, 8192, 0, 0, "fake"), host("b", 4, 8192, 3, 0, "fake", "local")},
			Request{Driver: "local", Resources: small}, Plan{"b", "local"}, nil},
		{"pinned host", []*Host{host("a", 4, 8192, 0, 0, "fake"), host("b", 4, 8192, 3, 0, "fake")},
			Request{HostID: "b", Resources: small}, Plan{"b", "fake"}, nil},
		{"every host unfit, each says why", []*Host{
			host("full", 1, 8192, 0.75, 0, "fake"),
			host("nomem", 4, 1024, 0, 800, "fake"),
			host("nodriver", 4, 8192, 0, 0, "docker"),
			func() *Host { h := host("dead", 4, 8192, 0, 0, "fake"); h.LastSeen = now.Add(-time.Minute); return h }(),
			func() *Host { h := host("elsewhere", 4, 8192, 0, 0, "fake"); h.Labels["zone"] = "b"; return h }(),
		}, Request{Driver: "fake", Resources: small, Constraints: map[string]string{"zone": "a"}}, Plan{}, []Unfit{
			{"dead", "not live: last heartbeat 1m0s ago"},
			{"elsewhere", `label zone=a wanted, has "b"`},
			{"full", "cpu: 0.5 cores requested, 0.25 free of 1"},
			{"nodriver", "no fake driver (has docker)"},
			{"nomem", "memory: 512 MB requested, 224 free of 1024"},
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
