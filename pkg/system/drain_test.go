package system_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Draining a host: nothing new is placed there, each container that may
// move is replaced on the other host once and then stopped and removed on
// the drained one, what may not move stays running, and ending the drain lets
// placement use the host again. Only the admin may drain.
func TestDrainMovesContainersOnce(t *testing.T) {
	e := newLossEnvWith(t, 10*time.Second, 10*time.Second, "host-a", "host-b")
	cs := e.run(3, api.RescheduleAlways)
	never := e.run(1, api.RescheduleNever)[0]
	drained := cs[0].Host // binpack: all on one host
	other := "host-a"
	if drained == other {
		other = "host-b"
	}
	for _, c := range append(cs, never) {
		e.waitStatus(c.ID, api.StatusRunning)
		if c.Host != drained {
			t.Fatalf("placed %s on %s; want all on %s", c.ID, c.Host, drained)
		}
	}

	svcToken, err := e.sys.Tokens().Create(creds.Principal{Name: "svc", Role: events.RoleService})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New(e.sys.HTTPURL, client.WithToken(svcToken)).Drain(e.ctx, drained, true); !errors.Is(err, driver.ErrPermission) {
		t.Fatalf("a service drains a host: %v; want a permission error", err)
	}
	if _, err := e.c.Drain(e.ctx, "no-such-host", true); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("draining an unknown host: %v; want not found", err)
	}

	h, err := e.c.Drain(e.ctx, drained, true)
	if err != nil {
		t.Fatal(err)
	}
	if h.ID != drained || h.DrainingSince.IsZero() {
		t.Fatalf("the drained host: %+v; want it draining", h)
	}
	pinned := fakeSpec("--forever")
	pinned.Start, pinned.HostID = true, drained
	if _, err := e.c.Create(e.ctx, pinned); err == nil || !strings.Contains(err.Error(), "draining") {
		t.Fatalf("a create pinned to the draining host: %v; want it refused as draining", err)
	}
	if c := e.run(1, api.RescheduleAlways)[0]; c.Host != other {
		t.Fatalf("a new container went to %s while %s drains", c.Host, drained)
	}

	for _, c := range cs {
		e.eventually("container "+c.ID+" moved and removed", func() bool {
			got, err := e.c.Get(e.ctx, c.ID)
			return (errors.Is(err, driver.ErrNotFound) || err == nil && got.Status == api.StatusRemoved) && len(e.eventsOf(c.ID, events.ContainerRescheduled)) > 0
		})
		rs := e.eventsOf(c.ID, events.ContainerRescheduled)
		var d events.RescheduledData
		if len(rs) != 1 || events.Data(rs[0], &d) != nil || !strings.Contains(d.Reason, "draining") {
			t.Fatalf("%s rescheduled %d times (%+v); want once, for the drain", c.ID, len(rs), d)
		}
		rep := e.waitStatus(d.ReplacementID, api.StatusRunning)
		if rep.Host != other || rep.Replaces != c.ID || rep.RequestID != c.RequestID {
			t.Fatalf("the replacement of %s: %+v; want it on %s, naming the original and its request", c.ID, rep, other)
		}
		if _, err := e.drivers[drained].Get(e.ctx, c.ID); err == nil {
			t.Fatalf("%s is still on the drained host's runtime", c.ID)
		}
		if len(e.eventsOf(c.ID, events.ContainerStopped)) == 0 {
			t.Fatalf("%s was removed without being stopped first", c.ID)
		}
	}
	if got, err := e.c.Get(e.ctx, never.ID); err != nil || got.Status != api.StatusRunning || got.Host != drained || got.ReplacedBy != "" {
		t.Fatalf("a container whose policy is never: %+v %v; want it running where it was", got, err)
	}
	for req, ids := range e.running() {
		if len(ids) != 1 {
			t.Fatalf("request %s has %d containers running: %v", req, len(ids), ids)
		}
	}
	var marked events.HostDrainingData
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: events.HostDraining}) {
		if err != nil {
			t.Fatal(err)
		}
		_ = events.Data(ev, &marked)
	}
	if !marked.Draining || len(marked.Moving) != 3 || len(marked.Staying) != 1 || marked.Staying[0] != never.ID {
		t.Fatalf("host.draining said %+v; want three moving and %s staying", marked, never.ID)
	}

	if h, err = e.c.Drain(e.ctx, drained, false); err != nil || !h.DrainingSince.IsZero() {
		t.Fatalf("ending the drain: %+v %v", h, err)
	}
	c, err := e.c.Create(e.ctx, pinned)
	if err != nil || c.Host != drained {
		t.Fatalf("a create pinned to the host after its drain: %+v %v", c, err)
	}
}
