package worker_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/worker"
)

// A fake container's program is the workload: it outlives its worker.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/openagent/orchestrator/pkg/driver/fake.program.run.func1"))
}

// host is a worker with the fake driver on a provisioned bus, and what the
// test needs to send it commands and read what it reports.
type host struct {
	t   *testing.T
	ctx context.Context
	js  jetstream.JetStream
	pub *events.Publisher
	drv *fake.Driver
	log jetstream.Stream
}

func startHost(t *testing.T) *host {
	t.Helper()
	srv := natstest.Start(t)
	nc, js := srv.Connect()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	if _, err := events.Provision(ctx, js, events.ProvisionConfig{}); err != nil {
		t.Fatal(err)
	}
	v, err := events.NewValidator()
	if err != nil {
		t.Fatal(err)
	}
	h := &host{t: t, ctx: ctx, js: js, pub: events.NewPublisher(js, v), drv: fake.New()}
	if h.log, err = js.Stream(ctx, events.StreamEvents); err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(ctx, worker.Config{NC: nc, JS: js, Validator: v, HostID: "h1", Drivers: []driver.Driver{h.drv},
		Capacity: api.Resources{CPU: 4, Memory: 4096, Pids: 1000}, Heartbeat: 100 * time.Millisecond, Protected: []string{"/srv/openagent-data"}})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
	return h
}

// command publishes a command for host h1 with the given generation.
func (h *host) command(typ, id string, gen uint64, data any) events.Event {
	h.t.Helper()
	e, err := events.New(typ, "/tests", data, events.WithHost("h1"), events.WithContainer(id), events.WithGeneration(gen))
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.pub.Publish(h.ctx, e); err != nil {
		h.t.Fatal(err)
	}
	return e
}

// wait returns the first event of a type about a container that the log
// holds within a few seconds.
func (h *host) wait(id, typ string) events.Event {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range h.eventsOf(id) {
			if e.Type() == typ {
				return e
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("no %s for %s; the log has %v", typ, id, types(h.eventsOf(id)))
	return events.Event{}
}

func (h *host) eventsOf(id string) []events.Event {
	h.t.Helper()
	// A worker sends its events to its subtree of the ingest stream.
	cons, err := h.js.OrderedConsumer(h.ctx, events.StreamIngest, jetstream.OrderedConsumerConfig{FilterSubjects: []string{events.IngestSubject("h1", events.ContainerFilter(id))}})
	if err != nil {
		h.t.Fatal(err)
	}
	var out []events.Event
	for {
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			h.t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			e, err := events.FromMsg(natsMsg(m))
			if err != nil {
				h.t.Fatal(err)
			}
			out = append(out, e)
		}
		if n == 0 {
			return out
		}
	}
}

func types(es []events.Event) []string {
	var out []string
	for _, e := range es {
		out = append(out, events.Name(e.Type()))
	}
	return out
}

func count(es []events.Event, typ string) int {
	n := 0
	for _, e := range es {
		if e.Type() == typ {
			n++
		}
	}
	return n
}

func fakeSpec(id string, args ...string) driver.ContainerConfig {
	spec := driver.DefaultConfig()
	spec.SessionID, spec.Image, spec.Command = id, "fake", append([]string{"fake"}, args...)
	return spec
}

// A create delivered twice (the second time as a new message, as after a
// crash past the dedupe window) makes and runs one container, once.
func TestRedeliveredCreateRunsOnce(t *testing.T) {
	h := startHost(t)
	data := events.CreateCommandData{ContainerID: "c1", HostID: "h1", Driver: "fake", Start: true, Spec: fakeSpec("c1", "--stdout", "hi")}
	h.command(events.CommandCreate, "c1", 5, data)
	h.wait("c1", events.ContainerExited)
	h.command(events.CommandCreate, "c1", 5, data) // a new event id: not deduplicated
	time.Sleep(300 * time.Millisecond)
	log := h.eventsOf("c1")
	if n := count(log, events.ContainerStarted); n != 1 {
		t.Fatalf("%d started events (%v); want 1", n, types(log))
	}
	ct, err := h.drv.Get(h.ctx, "c1")
	if err != nil || ct.Status != driver.StatusExited {
		t.Fatalf("container %+v (%v); want exited, run once", ct, err)
	}
}

// Removing a container the host does not have reports it removed, so that
// the request ends; an older command then is refused.
func TestRemoveOfAnUnknownContainer(t *testing.T) {
	h := startHost(t)
	h.command(events.CommandRemove, "ghost", 9, events.ContainerCommandData{ContainerID: "ghost", HostID: "h1"})
	removed := h.wait("ghost", events.ContainerRemoved)
	if events.Generation(removed) != 9 {
		t.Fatalf("removed carries generation %d; want the command's 9", events.Generation(removed))
	}
	h.command(events.CommandCreate, "ghost", 3, events.CreateCommandData{ContainerID: "ghost", HostID: "h1", Driver: "fake", Start: true, Spec: fakeSpec("ghost", "--forever")})
	refused := h.wait("ghost", events.ContainerCommandRefused)
	var d events.CommandRefusedData
	if err := events.Data(refused, &d); err != nil || d.Generation != 3 || d.Current != 9 {
		t.Fatalf("refusal %s; want generation 3 refused under 9", refused.Data())
	}
	if _, err := h.drv.Get(h.ctx, "ghost"); err == nil {
		t.Fatal("a refused create left a container")
	}
}

// An exec's output past the cap is cut, on a rune boundary, and says so.
func TestExecOutputIsCapped(t *testing.T) {
	h := startHost(t)
	h.command(events.CommandCreate, "x1", 1, events.CreateCommandData{ContainerID: "x1", HostID: "h1", Driver: "fake", Start: true, Spec: fakeSpec("x1", "--forever")})
	h.wait("x1", events.ContainerStarted)
	line := strings.Repeat("é", 100_000) // 200,000 bytes a line
	h.command(events.CommandExec, "x1", 2, events.ExecCommandData{ContainerID: "x1", HostID: "h1", ExecID: "e1",
		Command: []string{"fake", "--stdout", line, "--stdout", line}})
	done := h.wait("x1", events.ExecCompleted)
	var d events.ExecCompletedData
	if err := events.Data(done, &d); err != nil {
		t.Fatal(err)
	}
	if !d.Truncated || len(d.Stdout) > 256<<10+3 || !strings.HasPrefix(d.Stdout, "éé") {
		t.Fatalf("stdout of %d bytes, truncated %v; want at most 256 KiB and truncated", len(d.Stdout), d.Truncated)
	}
	if strings.Contains(d.Stdout[:len(d.Stdout)-3], "\uFFFD") {
		t.Fatal("the output was cut inside a rune before its end")
	}
}

func natsMsg(m jetstream.Msg) *nats.Msg {
	return &nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()}
}

// A bind mount's host path is checked as it resolves on the host: a
// symbolic link to /etc (or through /proc/self/root) is refused, with a
// permission error naming the field; one to an ordinary directory mounts
// the directory it resolves to.
func TestMountsAreResolvedOnTheHost(t *testing.T) {
	h := startHost(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"etc": "/etc", "work-link": work, "loop": "/proc/self/root/etc"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}
	create := func(id, source string) {
		spec := fakeSpec(id, "--forever")
		spec.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: source, Target: "/mnt"}}
		h.command(events.CommandCreate, id, 1, events.CreateCommandData{ContainerID: id, HostID: "h1", Driver: "fake", Start: true, Spec: spec})
	}
	for id, source := range map[string]string{"via-link": filepath.Join(dir, "etc"), "via-proc": "/proc/self/root/etc/shadow",
		"via-dotdot": work + "/../etc/passwd", "via-loop": filepath.Join(dir, "loop")} {
		create(id, source)
		failed := h.wait(id, events.ContainerFailed)
		var d events.FailedData
		if err := events.Data(failed, &d); err != nil || d.Error.Kind != events.KindPermission || !strings.Contains(d.Error.Message, "spec.volumes[0].source") {
			t.Fatalf("%s (%s): failed %+v; want a permission error naming spec.volumes[0].source", id, source, d.Error)
		}
		if _, err := h.drv.Get(h.ctx, id); err == nil {
			t.Fatalf("%s: a refused mount left a container", id)
		}
	}
	create("ok", filepath.Join(dir, "work-link"))
	h.wait("ok", events.ContainerStarted)
	ct, err := h.drv.Get(h.ctx, "ok")
	if err != nil || len(ct.Config.Volumes) != 1 || ct.Config.Volumes[0].Source != work {
		t.Fatalf("mounted %+v (%v); want the resolved %s", ct.Config.Volumes, err, work)
	}
}
