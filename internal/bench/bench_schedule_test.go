package bench

import (
	"testing"
	"time"
)

// The schedule benchmark runs and its figures hold together: the sampled
// search is at least as fast as looking at every host, and fills a fleet
// about as full.
func TestSchedule(t *testing.T) {
	res := Schedule(ScheduleConfig{Hosts: 300, Placements: 2000, Seed: 1})
	if res.PerSecond <= 0 || res.ExhaustivePerSecond <= 0 || res.P99 < res.P50 {
		t.Fatalf("figures %+v", res)
	}
	if res.Sampled.Placed < res.Exhaustive.Placed*95/100 {
		t.Fatalf("sampling placed %d before the first refusal, looking at every host %d", res.Sampled.Placed, res.Exhaustive.Placed)
	}
}

// The fleet benchmark starts what it is asked to and measures it.
func TestFleet(t *testing.T) {
	res, err := Fleet(t.Context(), FleetConfig{Hosts: 5, Containers: 50, Clients: 4, Window: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.PlacementsPerSec <= 0 || res.AllRunningSec <= 0 || res.RSSMB <= 0 || res.CPUSeconds <= 0 {
		t.Fatalf("figures %+v", res)
	}
}
