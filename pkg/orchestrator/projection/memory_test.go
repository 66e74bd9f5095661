package projection

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// BenchmarkStateMemory reports the heap the projection holds per tracked
// container: go test -bench StateMemory -run XXX ./pkg/orchestrator/projection
func BenchmarkStateMemory(b *testing.B) {
	const n = 100000
	spec := driver.DefaultConfig()
	spec.SessionID, spec.Image, spec.Command = "s", "fake", []string{"fake", "--forever"}
	var evs [][3]events.Event
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		placed, _ := events.New(events.ContainerPlaced, "/b", map[string]any{"containerId": id, "hostId": "h", "driver": "fake", "spec": spec}, events.WithContainer(id))
		created, _ := events.New(events.ContainerCreated, "/b", map[string]any{"containerId": id, "hostId": "h", "driver": "fake"}, events.WithContainer(id))
		started, _ := events.New(events.ContainerStarted, "/b", map[string]any{"containerId": id, "hostId": "h", "startedAt": time.Now()}, events.WithContainer(id))
		evs = append(evs, [3]events.Event{placed, created, started})
	}
	b.ResetTimer()
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := NewStore()
		seq := uint64(0)
		for _, e := range evs {
			for _, ev := range e {
				seq++
				s.Apply(seq, ev)
			}
		}
		clear(s.dirty)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "bytes/container")
		runtime.KeepAlive(s)
	}
}
