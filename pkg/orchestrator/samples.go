package orchestrator

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
)

// Every orchestrator hears the hosts' resource samples (published at most
// once on events.SamplesSubject) and keeps the last of each container:
// what the container metrics show and the alert rules read.

// sampleMaxAge is how old a sample may be and still stand for its
// container: a host that stopped sending (or a container it no longer
// runs) is not shown as it was.
const sampleMaxAge = time.Minute

// samples are the last samples heard, by host and container.
type samples struct {
	mu sync.Mutex
	m  map[string]map[string]events.ContainerSample
}

// listenSamples keeps the samples the hosts send until ctx ends.
func (o *Orchestrator) listenSamples(ctx context.Context) error {
	sub, err := o.js.Conn().Subscribe(events.SamplesRoot+".*", func(m *nats.Msg) {
		host := events.SamplesHost(m.Subject)
		var b events.SamplesBatch
		if !events.ValidToken(host) || json.Unmarshal(m.Data, &b) != nil {
			return
		}
		o.samples.mu.Lock()
		defer o.samples.mu.Unlock()
		if o.samples.m == nil {
			o.samples.m = map[string]map[string]events.ContainerSample{}
		}
		of := o.samples.m[host]
		if of == nil {
			of = map[string]events.ContainerSample{}
			o.samples.m[host] = of
		}
		for _, s := range b.Samples {
			of[s.ContainerID] = s
		}
	})
	if err != nil {
		return err
	}
	<-ctx.Done()
	return sub.Unsubscribe()
}

// HostSample is a container's last resource sample and its host.
type HostSample struct {
	Host string
	events.ContainerSample
}

// Samples are the last resource samples of the active containers, each
// from the host the container is on, none older than sampleMaxAge.
func (o *Orchestrator) Samples() []HostSample {
	now := time.Now()
	on := map[string]string{}
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if r.Status.Active() {
				on[r.ID] = r.Host
			}
		}
	})
	o.samples.mu.Lock()
	defer o.samples.mu.Unlock()
	var out []HostSample
	for host, of := range o.samples.m {
		for id, s := range of {
			switch {
			case now.Sub(s.At) > sampleMaxAge || on[id] == "":
				delete(of, id) // forgotten: a later sample comes back
			case on[id] == host:
				out = append(out, HostSample{Host: host, ContainerSample: s})
			}
		}
	}
	return out
}
