package projection_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func ev(t *testing.T, typ, id string, data any, opts ...events.Option) events.Event {
	t.Helper()
	e, err := events.New(typ, "/tests", data, append([]events.Option{events.WithContainer(id), events.WithHost("h")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func placed(t *testing.T, id, name string) events.Event {
	spec := driver.DefaultConfig()
	spec.SessionID, spec.Image, spec.Command = id, "fake", []string{"fake"}
	spec.Resources.CPU = 0.5
	return ev(t, events.ContainerPlaced, id, events.PlacedData{ContainerID: id, HostID: "h", Driver: "fake", Name: name, Spec: spec},
		events.WithGeneration(10))
}

func started(t *testing.T, id string, at time.Time) events.Event {
	return ev(t, events.ContainerStarted, id, events.StartedData{ContainerID: id, HostID: "h", StartedAt: at})
}

func exited(t *testing.T, id string, at time.Time, code int) events.Event {
	return ev(t, events.ContainerExited, id, events.ExitedData{ContainerID: id, HostID: "h", ExitCode: code, FinishedAt: at})
}

// view is what a test compares: what a user would see of a container and
// of its host.
type view struct {
	Status     api.Status
	ExitCode   int
	Generation uint64
	CPU        float64 // allocated on the host
	Pending    bool
	Named      string // the id its name points to
	Error      string // the container's error, as the API shows it
}

func look(m *projection.Model, id string) view {
	r, ok := m.Containers[id]
	if !ok {
		return view{}
	}
	_, pending := m.Pending[id]
	v := view{Status: r.Status, ExitCode: r.ExitCode, Generation: r.Generation, CPU: m.Allocated["h"].CPU, Pending: pending, Named: m.Names["web"]}
	if r.Error != nil {
		v.Error = r.Error.Message
	}
	return v
}

func TestApply(t *testing.T) {
	for _, tc := range []struct {
		name   string
		events func(t *testing.T) []events.Event
		want   view
	}{
		{"placed is pending and holds its resources", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", "web")}
		}, view{Status: api.StatusPending, Generation: 10, CPU: 0.5, Pending: true, Named: "c"}},
		{"created and started is running", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), ev(t, events.ContainerCreated, "c", events.CreatedData{ContainerID: "c", HostID: "h", Driver: "fake"}), started(t, "c", t0)}
		}, view{Status: api.StatusRunning, Generation: 10, CPU: 0.5}},
		{"an exit releases the resources", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), started(t, "c", t0), exited(t, "c", t0.Add(time.Second), 3)}
		}, view{Status: api.StatusExited, ExitCode: 3, Generation: 10}},
		{"a start reported after its run's end changes nothing", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), exited(t, "c", t0.Add(time.Second), 0), started(t, "c", t0)}
		}, view{Status: api.StatusExited, Generation: 10}},
		{"the end of an earlier run does not end a new one", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), started(t, "c", t0.Add(time.Minute)), exited(t, "c", t0.Add(time.Second), 1)}
		}, view{Status: api.StatusRunning, Generation: 10, CPU: 0.5}},
		{"a failed create releases the resources", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), ev(t, events.ContainerFailed, "c", events.FailedData{ContainerID: "c", Operation: "create",
				Error: events.Error{Kind: events.KindInvalid, Message: "no"}})}
		}, view{Status: api.StatusFailed, Generation: 10, Error: "no"}},
		{"a failed exec leaves the container running, with no error of its own", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), started(t, "c", t0), ev(t, events.ContainerFailed, "c", events.FailedData{ContainerID: "c", Operation: "exec",
				ExecID: "x", Error: events.Error{Kind: events.KindTimeout, Message: "slow"}})}
		}, view{Status: api.StatusRunning, Generation: 10, CPU: 0.5}},
		{"lost holds nothing", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", ""), started(t, "c", t0), ev(t, events.ContainerLost, "c", events.LostData{ContainerID: "c", HostID: "h", Reason: "gone"},
				events.WithGeneration(20))}
		}, view{Status: api.StatusLost, Generation: 20, Error: "gone"}},
		{"removed frees the name", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", "web"), started(t, "c", t0), exited(t, "c", t0.Add(time.Second), 0),
				ev(t, events.ContainerRemoved, "c", events.RemovedData{ContainerID: "c", HostID: "h"})}
		}, view{Status: api.StatusRemoved, Generation: 10}},
		{"removed is the end: a late report of the run's end does not bring it back", func(t *testing.T) []events.Event {
			return []events.Event{placed(t, "c", "web"), started(t, "c", t0), ev(t, events.ContainerRemoved, "c", events.RemovedData{ContainerID: "c", HostID: "h"}),
				exited(t, "c", t0.Add(time.Second), 137), started(t, "c", t0.Add(time.Minute))}
		}, view{Status: api.StatusRemoved, Generation: 10}},
		{"an accepted request's generation is kept", func(t *testing.T) []events.Event {
			acc := ev(t, events.RequestAccepted, "c", events.AcceptedData{RequestID: "r", RequestType: events.ContainerStopRequested, ContainerID: "c"},
				events.WithGeneration(15))
			return []events.Event{placed(t, "c", ""), acc}
		}, view{Status: api.StatusPending, Generation: 15, CPU: 0.5, Pending: true}},
		{"events of an unknown container change nothing", func(t *testing.T) []events.Event {
			return []events.Event{started(t, "c", t0)}
		}, view{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := projection.New()
			for i, e := range tc.events(t) {
				projection.Apply(m, uint64(i+1), e)
			}
			if diff := cmp.Diff(tc.want, look(m, "c")); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

// Applying an event again, or an older one, changes nothing: the fold is
// idempotent, as a replay from a cursor needs.
func TestApplyIsIdempotent(t *testing.T) {
	m := projection.New()
	p, s, x := placed(t, "c", ""), started(t, "c", t0), exited(t, "c", t0.Add(time.Second), 7)
	for i, e := range []events.Event{p, s, x} {
		projection.Apply(m, uint64(i+1), e)
	}
	before := look(m, "c")
	for i, e := range []events.Event{p, s, x} {
		if id := projection.Apply(m, uint64(i+1), e); id != "" {
			t.Errorf("event %d applied again changed %s", i+1, id)
		}
	}
	if diff := cmp.Diff(before, look(m, "c")); diff != "" {
		t.Fatalf("replayed events changed the model (-before +after):\n%s", diff)
	}
}

// A placement announced for a container reserved in memory counts its
// resources once.
func TestApplyPlacedOfAReservation(t *testing.T) {
	m := projection.New()
	spec := driver.DefaultConfig()
	spec.Resources.CPU = 0.5
	m.Put(&projection.Record{Container: api.Container{ID: "c", Host: "h", Status: api.StatusPending}, Spec: spec})
	projection.Apply(m, 1, placed(t, "c", ""))
	if got := m.Allocated["h"].CPU; got != 0.5 {
		t.Fatalf("allocated %g cores; want 0.5, counted once", got)
	}
}
