package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/internal/eventlog"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/events"
)

// crashRequests is the size of the burst each crash test publishes.
const crashRequests = 320

// The built binaries, an orchestrator with its embedded NATS and a
// separate worker with the local driver, are killed with SIGKILL in the
// middle of a burst of run-to-completion creates: the orchestrator once a
// third of the requests were acknowledged, the worker once a third of the
// containers were created. Both restart on the same data directories and
// drain. Then, over the events stream and what the containers themselves
// wrote: no acknowledged request is lost, each container ran at most once
// and has one started event per run, every accepted outcome names a
// container that exists, no request was placed twice, and nothing is left
// pending.
func TestCrash(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the crash test mounts a volume into local containers, which needs root; run it as root (CI does)")
	}
	bins := buildBinaries(t)
	for _, sync := range []bool{false, true} {
		name := "default-sync"
		if sync {
			name = "sync-always"
		}
		t.Run(name, func(t *testing.T) { crashRun(t, bins, sync) })
	}
}

type binaries struct{ orchestrator, worker string }

func buildBinaries(t *testing.T) binaries {
	t.Helper()
	dir := t.TempDir()
	b := binaries{filepath.Join(dir, "orchestrator"), filepath.Join(dir, "worker")}
	for bin, pkg := range map[string]string{b.orchestrator: ".", b.worker: "../worker"} {
		if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
			t.Fatalf("build %s: %v\n%s", pkg, err, out)
		}
	}
	return b
}

// reachable makes a test directory and its parent reachable by the
// containers' unprivileged user.
func reachable(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// process is a built binary running, restartable with the same arguments.
type process struct {
	t    *testing.T
	name string
	bin  string
	args []string
	log  *os.File
	cmd  *exec.Cmd
}

func startProcess(t *testing.T, name, bin, logDir string, args ...string) *process {
	t.Helper()
	f, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	p := &process{t: t, name: name, bin: bin, args: args, log: f}
	p.start()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			_ = p.cmd.Wait()
		}
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(f.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("%s's log (end):\n%s", name, b)
		}
	})
	return p
}

func (p *process) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, p.args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	// Should the test binary die (a deadline's panic), its processes die
	// with it rather than outlive it.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
}

// kill ends the process with SIGKILL: no shutdown code runs.
func (p *process) kill() {
	p.t.Helper()
	fmt.Fprintf(p.log, "\n---- SIGKILL ----\n\n")
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// ledger is what the test sees on the events stream.
type ledger struct {
	mu          sync.Mutex
	outcome     map[string]events.Event    // request id → accepted or rejected
	placed      map[string]map[string]bool // request id → container ids placed
	created     map[string]bool            // container ids a worker created
	started     map[string]map[string]bool // container id → started event ids
	ended       map[string]bool            // container ids that exited, stopped or failed
	failures    map[string]string          // container id → failure message
	byType      map[string]int
	rescheduled map[string]int    // container id → its rescheduled events
	replacement map[string]string // lost container id → the one placed in its stead
	leader      uint64            // the token of the last leader.elected read
	stale       int               // events a former leader wrote after it, which every reader refuses
}

func newLedger() *ledger {
	return &ledger{outcome: map[string]events.Event{}, placed: map[string]map[string]bool{}, created: map[string]bool{},
		started: map[string]map[string]bool{}, ended: map[string]bool{}, failures: map[string]string{}, byType: map[string]int{},
		rescheduled: map[string]int{}, replacement: map[string]string{}}
}

func (l *ledger) add(e events.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if t := events.LeaderToken(e); t != 0 {
		if e.Type() == events.LeaderElected {
			l.leader = max(l.leader, t)
		} else if t < l.leader {
			l.stale++
			return
		}
	}
	l.byType[e.Type()]++
	id := events.Ext(e, events.ExtContainerID)
	switch e.Type() {
	case events.RequestAccepted, events.RequestRejected:
		l.outcome[events.CorrelationID(e)] = e
	case events.ContainerPlaced:
		req := events.CorrelationID(e)
		if l.placed[req] == nil {
			l.placed[req] = map[string]bool{}
		}
		l.placed[req][id] = true
	case events.ContainerCreated:
		l.created[id] = true
	case events.ContainerRescheduled:
		var d events.RescheduledData
		_ = events.Data(e, &d)
		l.rescheduled[id]++
		l.replacement[id] = d.ReplacementID
	case events.ContainerStarted:
		if l.started[id] == nil {
			l.started[id] = map[string]bool{}
		}
		l.started[id][e.ID()] = true
	case events.ContainerExited, events.ContainerStopped:
		l.ended[id] = true
	case events.ContainerFailed:
		l.ended[id] = true
		l.failures[id] = string(e.Data())
	}
}

func (l *ledger) count(typ string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byType[typ]
}

// undrained describes the requests without an outcome and the accepted
// containers that have not ended; "" when there are none.
func (l *ledger) undrained(ids []string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var noOutcome, running []string
	for _, id := range ids {
		o, ok := l.outcome[id]
		switch {
		case !ok:
			noOutcome = append(noOutcome, id)
		case o.Type() == events.RequestAccepted && !l.ended[events.Ext(o, events.ExtContainerID)]:
			cid := events.Ext(o, events.ExtContainerID)
			running = append(running, fmt.Sprintf("%s (container %s created %v, started %d)", id, cid, l.created[cid], len(l.started[cid])))
		}
	}
	if len(noOutcome)+len(running) == 0 {
		return ""
	}
	return fmt.Sprintf("%d without an outcome %.300v; %d accepted and not ended %.600v", len(noOutcome), noOutcome, len(running), running)
}

// unstarted describes the requests without an outcome and the accepted
// containers that never started; "" when there are none.
func (l *ledger) unstarted(ids []string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var noOutcome, waiting []string
	for _, id := range ids {
		o, ok := l.outcome[id]
		switch {
		case !ok:
			noOutcome = append(noOutcome, id)
		case o.Type() == events.RequestAccepted && len(l.started[events.Ext(o, events.ExtContainerID)]) == 0:
			waiting = append(waiting, id)
		}
	}
	if len(noOutcome)+len(waiting) == 0 {
		return ""
	}
	return fmt.Sprintf("%d without an outcome %.300v; %d accepted and not started %.300v", len(noOutcome), noOutcome, len(waiting), waiting)
}

// follow feeds the whole events stream into l until ctx ends, across
// server restarts.
func follow(ctx context.Context, t *testing.T, nc *nats.Conn, l *ledger) {
	js, _ := jetstream.New(nc)
	eventlog.Follow(ctx, js, func(e events.Event, _ uint64) { l.add(e) }, func(seq uint64, err error) {
		t.Errorf("the events stream holds an undecodable event at %d: %v", seq, err)
	})
}

func crashRun(t *testing.T, bins binaries, syncAlways bool) {
	runs := reachable(t)
	if err := os.Chmod(runs, 0o777); err != nil {
		t.Fatal(err)
	}
	orchData, workerData, logs := reachable(t), reachable(t), t.TempDir()
	natsAddr, httpAddr := freePort(t), freePort(t)
	natsURL := "nats://" + natsAddr
	args := []string{"--data-dir", orchData, "--http", httpAddr, "--nats-listen", natsAddr, "--worker=false"}
	if syncAlways {
		args = append(args, "--sync-always")
	}
	dataDirs.Store(httpAddr, orchData)
	orch := startProcess(t, "orchestrator", bins.orchestrator, logs, args...)
	waitHTTP(t, "http://"+httpAddr+"/v1/hosts")
	host := "crash-host"
	// The bus is closed: the worker gets a credential for its host from
	// the orchestrator's keys, the test connects as a service.
	auth, err := creds.Open(filepath.Join(orchData, "credentials"))
	if err != nil {
		t.Fatal(err)
	}
	workerCreds := filepath.Join(workerData, "worker.creds")
	if err := auth.WriteCreds(workerCreds, events.RoleWorker, host); err != nil {
		t.Fatal(err)
	}
	wrk := startProcess(t, "worker", bins.worker, logs, "--nats-url", natsURL, "--creds", workerCreds, "--host-id", host, "--drivers", "local",
		"--data-dir", workerData, "--cpu", "1000", "--memory", "10000000", "--pids", "10000000")
	t.Cleanup(func() { removeAll(t, "http://"+httpAddr) })
	waitHost(t, "http://"+httpAddr, host)

	copts, err := creds.NATSOptions(filepath.Join(orchData, "credentials", "service.creds"))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(natsURL, append(copts, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	l := newLedger()
	var followers sync.WaitGroup
	followers.Add(1)
	go func() { defer followers.Done(); follow(ctx, t, nc, l) }()
	defer func() { cancel(); followers.Wait() }()

	// The burst: every request is published until the server acknowledges
	// it, with the same id each time, as a careful service does.
	ids := make([]string, crashRequests)
	var acked atomic.Int64
	var pubs sync.WaitGroup
	js, _ := jetstream.New(nc)
	for i := range ids {
		ids[i] = fmt.Sprintf("crash-%03d", i)
	}
	work := make(chan string)
	for range 16 {
		pubs.Add(1)
		go func() {
			defer pubs.Done()
			for id := range work {
				publishUntilAcked(t, js, id, runs)
				acked.Add(1)
			}
		}()
	}
	go func() {
		defer close(work)
		for _, id := range ids {
			work <- id
		}
	}()

	// Kill the orchestrator (and with it the NATS server) once a third is
	// acknowledged.
	waitUntil(t, 60*time.Second, "a third of the requests acknowledged", func() bool { return acked.Load() >= crashRequests/3 })
	orch.kill()
	time.Sleep(300 * time.Millisecond)
	orch.start()
	// Kill the worker once a third of the containers were created: its
	// containers keep running and exit while it is away.
	waitUntil(t, 90*time.Second, "a third of the containers created", func() bool {
		return l.count(events.ContainerCreated) >= crashRequests/3
	})
	wrk.kill()
	time.Sleep(300 * time.Millisecond)
	wrk.start()
	pubs.Wait()

	var left string
	waitUntil(t, 2*time.Minute, "every request answered and every container ended", func() bool {
		left = l.undrained(ids)
		return left == ""
	}, &left)
	// The orchestrator's view settles after the last event.
	var list []api.Container
	waitUntil(t, 30*time.Second, "no container pending or running", func() bool {
		list = listAll(t, "http://"+httpAddr)
		var active []string
		for _, c := range list {
			if c.Status.Active() {
				active = append(active, fmt.Sprintf("%s %s (request %s)", c.ID, c.Status, c.RequestID))
			}
		}
		left = fmt.Sprintf("%d: %.600v", len(active), active)
		return len(active) == 0
	}, &left)

	l.mu.Lock()
	defer l.mu.Unlock()
	known := map[string]api.Container{}
	for _, c := range list {
		known[c.ID] = c
	}
	for _, id := range ids {
		o, ok := l.outcome[id]
		if !ok {
			t.Errorf("request %s was acknowledged and has no outcome", id)
			continue
		}
		if o.Type() != events.RequestAccepted {
			t.Errorf("request %s was rejected: %s", id, o.Data())
			continue
		}
		if n := len(l.placed[id]); n != 1 {
			t.Errorf("request %s placed %d containers (%v); want 1", id, n, l.placed[id])
		}
		var acc api.Accepted
		_ = json.Unmarshal(o.Data(), &acc)
		cid := acc.ContainerID
		if !l.placed[id][cid] {
			t.Errorf("request %s was accepted as container %s, which was never placed (placed: %v)", id, cid, l.placed[id])
		}
		if !l.created[cid] {
			t.Errorf("request %s was accepted as container %s, which no worker created (failure: %s)", id, cid, l.failures[cid])
		}
		if _, ok := known[cid]; !ok {
			t.Errorf("request %s's container %s is not known to the orchestrator", id, cid)
		}
		b, _ := os.ReadFile(filepath.Join(runs, id))
		runs := strings.Count(string(b), "run\n")
		if runs != 1 {
			t.Errorf("request %s's container %s ran %d times; want once", id, cid, runs)
		}
		if n := len(l.started[cid]); n != runs {
			t.Errorf("container %s ran %d times and has %d started events", cid, runs, n)
		}
	}
	t.Logf("events: %v", l.byType)
}

func publishUntilAcked(t *testing.T, js jetstream.JetStream, id, runs string) {
	// As a service writes it: what it does not set takes the defaults.
	publishCreateUntilAcked(t, js, "/crash-test", id, map[string]any{"driver": "local", "start": true, "spec": map[string]any{
		"image": "host", "command": []string{"/bin/sh", "-c", "echo run >> /runs/" + id},
		"resources": map[string]any{"cpu": 0.1, "memoryMB": 64, "pids": 20},
		"volumes":   []map[string]any{{"source": runs, "target": "/runs"}},
	}})
}

// publishCreateUntilAcked publishes a create request to the requests
// stream, again with the same id until the server acknowledges it, as a
// careful service does.
func publishCreateUntilAcked(t *testing.T, js jetstream.JetStream, source, id string, req map[string]any) {
	e, err := events.New(events.ContainerCreateRequested, source, req, events.WithID(id))
	if err != nil {
		t.Error(err)
		return
	}
	m, err := events.ToMsg(events.RequestsRoot+"."+events.Name(e.Type()), e)
	if err != nil {
		t.Error(err)
		return
	}
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err = js.PublishMsg(ctx, m, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitUntil waits for cond; when it does not come, the test fails with
// what was awaited and, if given, what was left.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool, left ...*string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if len(left) > 0 {
				what += ": " + *left[0]
			}
			t.Fatalf("not after %v: %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// dataDirs are the orchestrators' data directories by HTTP address: the
// API takes the admin token each writes there.
var dataDirs sync.Map

func authDo(req *http.Request) (*http.Response, error) {
	if dir, ok := dataDirs.Load(req.URL.Host); ok {
		if b, err := os.ReadFile(filepath.Join(dir.(string), "credentials", "admin.token")); err == nil {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
		}
	}
	return http.DefaultClient.Do(req)
}

func authGet(url string) (*http.Response, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return authDo(req)
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "the HTTP API answers", func() bool {
		resp, err := authGet(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func waitHost(t *testing.T, base, host string) {
	t.Helper()
	waitUntil(t, 30*time.Second, "host "+host+" registered", func() bool {
		resp, err := authGet(base + "/v1/hosts")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var hosts []api.Host
		_ = json.NewDecoder(resp.Body).Decode(&hosts)
		for _, h := range hosts {
			if h.ID == host && h.Live {
				return true
			}
		}
		return false
	})
}

func listAll(t *testing.T, base string) []api.Container {
	t.Helper()
	resp, err := authGet(base + "/v1/containers?all=true")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []api.Container
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	return list
}

// removeAll removes what a test left, so that no container outlives it.
func removeAll(t *testing.T, base string) {
	resp, err := authGet(base + "/v1/containers?all=true")
	if err != nil {
		return
	}
	var list []api.Container
	_ = json.NewDecoder(resp.Body).Decode(&list)
	resp.Body.Close()
	for _, c := range list {
		req, _ := http.NewRequest(http.MethodDelete, base+"/v1/containers/"+c.ID+"?force=true", nil)
		if resp, err := authDo(req); err == nil {
			resp.Body.Close()
		}
	}
}
