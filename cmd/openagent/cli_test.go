package main_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
	"github.com/openagent/orchestrator/pkg/worker"
)

var binary string

// tokens are the admin tokens of the systems the tests started, by HTTP
// URL: run passes the CLI its server's.
var tokens sync.Map

func TestMain(m *testing.M) {
	local.MaybeRunShim()
	dir, err := os.MkdirTemp("", "openagent-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "openagent")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

func startSystem(t *testing.T) string {
	t.Helper()
	ns := natstest.Start(t)
	data, err := os.MkdirTemp("", "openagent-cli-data-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(data, 0o711)
	t.Cleanup(func() { os.RemoveAll(data) })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, system.Config{NATSURL: ns.ClientURL(), DataDir: data, HTTPAddr: "127.0.0.1:0",
		Orchestrator: true, Worker: true, HostID: "cli-host", Drivers: []string{"local", "fake"},
		Capacity: api.Resources{CPU: 2, Memory: 4096, Pids: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	tokens.Store(sys.HTTPURL, sys.AdminToken())
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run(t, sys.HTTPURL, "hosts").stdout, "cli-host") {
		if time.Now().After(deadline) {
			t.Fatal("the worker did not register")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return sys.HTTPURL
}

func run(t *testing.T, server string, args ...string) result {
	t.Helper()
	return runIn(t, server, nil, args...)
}

// mustRun is run that fails the test unless the command succeeds, and
// returns its standard output.
func mustRun(t *testing.T, server string, args ...string) string {
	t.Helper()
	r := run(t, server, args...)
	if r.code != 0 {
		t.Fatalf("openagent %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// runIn is run with standard input.
func runIn(t *testing.T, server string, stdin io.Reader, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = stdin
	cmd.Env = append(os.Environ(), "OPENAGENT_SERVER="+server)
	if tok, ok := tokens.Load(server); ok {
		cmd.Env = append(cmd.Env, "OPENAGENT_TOKEN="+tok.(string))
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestCLI(t *testing.T) {
	srv := startSystem(t)
	must := func(args ...string) string { t.Helper(); return mustRun(t, srv, args...) }
	id := strings.TrimSpace(must("run", "--name", "greeter", "--label", "team=ml", "host", "--", "/bin/sh", "-c", "echo hello; echo oops >&2; exec sleep 600"))
	if len(id) != 24 {
		t.Fatalf("run printed %q; want the container id", id)
	}
	if ps := must("ps"); !strings.Contains(ps, id[:12]) || !strings.Contains(ps, "greeter") || !strings.Contains(ps, "running") {
		t.Fatalf("ps:\n%s", ps)
	}
	var c api.Container
	if err := json.Unmarshal([]byte(must("inspect", "-o", "json", "greeter")), &c); err != nil {
		t.Fatal(err)
	}
	if c.ID != id || c.Driver != "local" || c.Host != "cli-host" || c.Labels["team"] != "ml" || c.Resources.Memory != 512 ||
		!c.Security.ReadOnly || c.Security.User != "65534:65534" || c.Security.Capabilities.Drop[0] != "ALL" {
		t.Fatalf("inspect: %+v", c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r := run(t, srv, "logs", id); r.stdout != "hello\n" || r.stderr != "oops\n"; r = run(t, srv, "logs", id) {
		if time.Now().After(deadline) {
			t.Fatalf("logs: stdout %q stderr %q", r.stdout, r.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := run(t, srv, "exec", id, "--", "/bin/sh", "-c", "id -u; exit 3"); r.code != 3 || r.stdout != "65534\n" {
		t.Fatalf("exec: exit %d stdout %q; want 3 and 65534", r.code, r.stdout)
	}
	if r := run(t, srv, "exec", "--timeout", "300ms", id, "--", "sleep", "30"); r.code != 124 || !strings.Contains(r.stderr, "timeout") {
		t.Fatalf("exec past its timeout: exit %d stderr %q", r.code, r.stderr)
	}
	if r := run(t, srv, "rm", id); r.code != 1 || !strings.HasPrefix(r.stderr, "openagent: conflict:") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("rm of a running container: exit %d stderr %q", r.code, r.stderr)
	}
	must("stop", "--timeout", "2s", id)
	if r := run(t, srv, "ps", "--all", "-o", "json"); !strings.Contains(r.stdout, `"status":"stopped"`) || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("ps --all -o json: %q", r.stdout)
	}
	if ps := must("ps"); strings.Contains(ps, id[:12]) {
		t.Fatalf("ps lists a stopped container:\n%s", ps)
	}
	must("rm", id)
	events := must("events", "-o", "json", "--container", id)
	var types []string
	for _, line := range strings.Split(strings.TrimSpace(events), "\n") {
		var e struct {
			SpecVersion string `json:"specversion"`
			Type        string `json:"type"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.SpecVersion != "1.0" {
			t.Fatalf("event line %q is not a structured CloudEvent", line)
		}
		types = append(types, strings.TrimPrefix(e.Type, "io.openagent."))
	}
	want := "container.placed container.created container.started exec.completed exec.completed container.stopped container.removed"
	if got := strings.Join(types, " "); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
}

func TestCLIErrors(t *testing.T) {
	srv := startSystem(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", "nope"}, "openagent: not found: no container nope"},
		{[]string{"run", "--cpu", "0", "host", "--", "true"}, "openagent: invalid: data.spec.resources.cpu: must be > 0, got 0"},
		{[]string{"run", "--cpu", "64", "host", "--", "true"}, "openagent: resource limit: scheduler: no host fits: cli-host: cpu: 64 cores requested, 2 free of 2"},
		{[]string{"run", "--env", "NOEQUALS", "host"}, "openagent: invalid: --env \"NOEQUALS\" is not K=V"},
		{[]string{"ps", "-o", "yaml"}, "openagent: invalid: -o must be table or json, not \"yaml\""},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := run(t, srv, tc.args...)
			if r.code != 1 || !strings.HasPrefix(r.stderr, tc.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Fatalf("exit %d stderr %q; want 1 and one line starting %q", r.code, r.stderr, tc.want)
			}
		})
	}
	if r := run(t, "http://127.0.0.1:1", "ps"); r.code != 1 || !strings.HasPrefix(r.stderr, "openagent: unavailable:") {
		t.Fatalf("no orchestrator: exit %d stderr %q", r.code, r.stderr)
	}
}

// The CLI drives docker containers end to end.
func TestCLIDocker(t *testing.T) {
	ns := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d, err := docker.New(ctx, docker.Config{StateDir: t.TempDir(), Scope: "test-cli"})
	if err != nil {
		if os.Getenv("OPENAGENT_REQUIRE_DOCKER") != "" {
			t.Fatalf("docker engine required: %v", err)
		}
		t.Skipf("no docker engine here: %v", err)
	}
	defer d.Close()
	if err := docker.EnsureImages(ctx, d.Client(), nil); err != nil {
		t.Fatal(err)
	}
	drivers := []driver.Driver{d}
	sys, err := system.Start(ctx, system.Config{NATSURL: ns.ClientURL(), HTTPAddr: "127.0.0.1:0", Orchestrator: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	if err := sys.AddWorker(ctx, worker.Config{HostID: "docker-host", Drivers: drivers, Capacity: api.Resources{CPU: 2, Memory: 4096, Pids: 1000}}); err != nil {
		t.Fatal(err)
	}
	srv := sys.HTTPURL
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(run(t, srv, "hosts").stdout, "docker-host") {
		if time.Now().After(deadline) {
			t.Fatal("no host")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := run(t, srv, "run", "--driver", "docker", docker.ImageShell, "--", "/bin/sh", "-c", "echo from docker; exec sleep 60")
	if r.code != 0 {
		t.Fatalf("run: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	t.Cleanup(func() { run(t, srv, "rm", "--force", id) })
	if r := run(t, srv, "exec", id, "--", "/bin/sh", "-c", "id -u; exit 7"); r.code != 7 || r.stdout != "65534\n" {
		t.Fatalf("exec: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	deadline = time.Now().Add(10 * time.Second)
	for r := run(t, srv, "logs", id); r.stdout != "from docker\n"; r = run(t, srv, "logs", id) {
		if time.Now().After(deadline) {
			t.Fatalf("logs %q", r.stdout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := run(t, srv, "stop", "--timeout", "1s", id); r.code != 0 {
		t.Fatalf("stop: %s", r.stderr)
	}
	if r := run(t, srv, "inspect", "-o", "json", id); !strings.Contains(r.stdout, `"status":"stopped"`) || !strings.Contains(r.stdout, `"driver":"docker"`) {
		t.Fatalf("inspect: %s", r.stdout)
	}
	if r := run(t, srv, "rm", id); r.code != 0 {
		t.Fatalf("rm: %s", r.stderr)
	}
}

func TestCLISessions(t *testing.T) {
	srv := startSystem(t)
	r := run(t, srv, "session", "create", "--language", "python", "--language", "sh", "--timeout", "10m", "--idle-timeout", "0", "-o", "json")
	if r.code != 0 {
		t.Fatalf("create: %s", r.stderr)
	}
	var s api.Session
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil || s.Status != api.SessionReady || s.IdleTimeoutMs != 0 || s.ContainerID == "" || s.Host == "" || len(s.Languages) != 2 {
		t.Fatalf("session %+v (%v)", s, err)
	}
	if r := run(t, srv, "session", "exec", s.ID, "--code", "print(sum([1,2,3]))"); r.code != 0 || r.stdout != "6\n" {
		t.Fatalf("exec: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := run(t, srv, "session", "exec", "--language", "sh", s.ID, "--code", "echo oops >&2; exit 5"); r.code != 5 || r.stderr != "oops\n" {
		t.Fatalf("exit status: %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "session", "exec", "--timeout", "300ms", s.ID, "--code", "while True: pass"); r.code != 124 {
		t.Fatalf("timeout: %d %q", r.code, r.stderr)
	}
	local := filepath.Join(t.TempDir(), "in.txt")
	os.WriteFile(local, []byte("hello file"), 0o644)
	if r := run(t, srv, "session", "cp", local, s.ID+":data/in.txt"); r.code != 0 {
		t.Fatalf("cp in: %s", r.stderr)
	}
	if r := run(t, srv, "session", "cp", s.ID+":data/in.txt", "-"); r.stdout != "hello file" {
		t.Fatalf("cp out: %q %s", r.stdout, r.stderr)
	}
	// Standard input and output, and a directory as the destination.
	if r := runIn(t, srv, strings.NewReader("from stdin"), "session", "cp", "-", s.ID+":data/stdin.txt"); r.code != 0 {
		t.Fatalf("cp - S:path: %s", r.stderr)
	}
	dir := t.TempDir()
	if r := run(t, srv, "session", "cp", s.ID+":data/stdin.txt", dir+"/"); r.code != 0 {
		t.Fatalf("cp S:path DIR/: %s", r.stderr)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "stdin.txt")); err != nil || string(b) != "from stdin" {
		t.Fatalf("cp into a directory: %q %v", b, err)
	}
	if r := run(t, srv, "session", "cp", local, s.ID+":data/"); r.code != 0 {
		t.Fatalf("cp FILE S:DIR/: %s", r.stderr)
	}
	if r := run(t, srv, "session", "cp", s.ID+":data/in.txt", "-"); r.stdout != "hello file" {
		t.Fatalf("cp into a session directory: %q %s", r.stdout, r.stderr)
	}
	if r := run(t, srv, "session", "cp", s.ID+":../etc/passwd", "-"); r.code != 1 || !strings.Contains(r.stderr, "leaves the workspace") {
		t.Fatalf("path escape: %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "session", "extend", s.ID, "--timeout", "2h"); r.code != 0 {
		t.Fatalf("extend: %s", r.stderr)
	}
	if r := run(t, srv, "session", "ls"); !strings.Contains(r.stdout, s.ID) {
		t.Fatalf("ls: %s", r.stdout)
	}
	if r := run(t, srv, "session", "rm", s.ID); r.code != 0 {
		t.Fatalf("rm: %s", r.stderr)
	}
	if r := run(t, srv, "session", "create", "--timeout", "0s"); r.code != 1 || !strings.Contains(r.stderr, "timeoutMs") {
		t.Fatalf("timeout 0: %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "pool", "set", "--driver", "fake", "--size", "1"); r.code != 0 {
		t.Fatalf("pool set: %s", r.stderr)
	}
	if r := run(t, srv, "pool", "ls"); !strings.Contains(r.stdout, "fake") {
		t.Fatalf("pool ls: %s", r.stdout)
	}
}

// The habits users bring from docker and kubectl: short ids and names
// everywhere, several ids at once, ps -q and --format, a status that does
// not exist refused, flags after the id, events by short id with a limit,
// placement flags on run.
func TestCLIHabits(t *testing.T) {
	srv := startSystem(t)
	must := func(args ...string) string { t.Helper(); return mustRun(t, srv, args...) }
	a := strings.TrimSpace(must("run", "--name", "alpha", "fake", "--", "fake", "--forever"))
	b := strings.TrimSpace(must("run", "--name", "beta", "fake", "--", "fake", "--forever"))
	if ids := strings.Fields(must("ps", "-q")); len(ids) != 2 || !slices.Contains(ids, a) || !slices.Contains(ids, b) {
		t.Fatalf("ps -q: %v; want %s and %s", ids, a, b)
	}
	if names := strings.Fields(must("ps", "--format", "{{.Name}}:{{.Status}}")); !slices.Equal(sorted(names), []string{"alpha:running", "beta:running"}) {
		t.Fatalf("ps --format: %v", names)
	}
	if r := run(t, srv, "ps", "--status", "sleeping"); r.code != 1 || !strings.Contains(r.stderr, "running") {
		t.Fatalf("ps --status sleeping: exit %d %q; want an error listing the statuses", r.code, r.stderr)
	}
	var c api.Container
	if err := json.Unmarshal([]byte(must("inspect", "-o", "json", a[:12])), &c); err != nil || c.ID != a {
		t.Fatalf("inspect by the short id ps shows: %+v %v", c, err)
	}
	// Flags after the id are flags; the command comes after "--".
	var res api.ExecResult
	if err := json.Unmarshal([]byte(must("exec", a[:12], "-o", "json", "--", "fake", "--stdout", "hi")), &res); err != nil || res.Stdout != "hi\n" {
		t.Fatalf("exec ID -o json -- cmd: %+v %v", res, err)
	}
	if r := run(t, srv, "exec", "beta", "--", "fake", "--exit", "3"); r.code != 3 {
		t.Fatalf("exec by name: exit %d %s", r.code, r.stderr)
	}
	if err := json.Unmarshal([]byte(must("inspect", "-o", "json", "beta")), &c); err != nil || c.Error != nil || c.Status != api.StatusRunning {
		t.Fatalf("after a failed exec the container is %+v; want running with no error", c)
	}
	lines := strings.Split(strings.TrimSpace(must("events", "--container", a[:12], "--limit", "2")), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "container.placed") {
		t.Fatalf("events --container SHORT --limit 2: %q", lines)
	}
	if out := must("events", "--container", "alpha", "--since", "1h"); !strings.Contains(out, "container.started") {
		t.Fatalf("events --container NAME: %q", out)
	}
	// Each line starts with its sequence in the events stream: the cursor
	// a reader resumes from with --from, after the last it read.
	firstSeq, err := strconv.ParseUint(strings.Fields(lines[0])[0], 10, 64)
	if err != nil {
		t.Fatalf("events: no sequence first on %q", lines[0])
	}
	resumed := strings.Split(strings.TrimSpace(must("events", "--container", a[:12], "--from", strconv.FormatUint(firstSeq+1, 10))), "\n")
	if len(resumed) == 0 || strings.Contains(resumed[0], "container.placed") {
		t.Fatalf("events --from after the placement: %q", resumed)
	}
	for _, l := range resumed {
		if n, err := strconv.ParseUint(strings.Fields(l)[0], 10, 64); err != nil || n <= firstSeq {
			t.Fatalf("events --from %d printed %q", firstSeq+1, l)
		}
	}
	if r := run(t, srv, "events", "--from", "yesterday"); r.code != 1 || !strings.Contains(r.stderr, "--from") {
		t.Fatalf("events --from yesterday: exit %d %q", r.code, r.stderr)
	}
	// Placement flags reach the scheduler.
	if r := run(t, srv, "run", "--constraint", "zone=mars", "fake", "--", "fake"); r.code == 0 || !strings.Contains(r.stderr, "zone") {
		t.Fatalf("run --constraint zone=mars: exit %d %q; want refused for want of such a host", r.code, r.stderr)
	}
	if r := run(t, srv, "run", "--constraint", "zone in mars,venus", "fake", "--", "fake"); r.code == 0 || !strings.Contains(r.stderr, "zone in (mars, venus)") {
		t.Fatalf("run --constraint 'zone in mars,venus': exit %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "run", "--strategy", "random", "fake", "--", "fake"); r.code == 0 || !strings.Contains(r.stderr, "strategy") {
		t.Fatalf("run --strategy random: exit %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "run", "--host", "nowhere", "fake", "--", "fake"); r.code == 0 || !strings.Contains(r.stderr, "nowhere") {
		t.Fatalf("run --host nowhere: exit %d %q", r.code, r.stderr)
	}
	// Dynamic shell completion: names and ids from the orchestrator.
	if out := must("__complete", "inspect", "alp"); !strings.Contains(out, "alpha") {
		t.Fatalf("completion of a name: %q", out)
	}
	if out := must("__complete", "stop", a[:6]); !strings.Contains(out, a) {
		t.Fatalf("completion of an id: %q", out)
	}
	// Several ids at once; one that names nothing fails alone.
	if out := must("stop", "--force", "alpha", b[:12]); strings.Fields(out)[0] != a || strings.Fields(out)[1] != b {
		t.Fatalf("stop two: %q", out)
	}
	r := run(t, srv, "rm", a, "ghost", b)
	if r.code != 1 || !strings.Contains(r.stderr, "ghost") || strings.Count(r.stdout, "\n") != 2 {
		t.Fatalf("rm a ghost b: exit %d stdout %q stderr %q; want two removed and the ghost named", r.code, r.stdout, r.stderr)
	}
}

func sorted(s []string) []string { slices.Sort(s); return s }

// Input is refused, naming the field, not replaced with defaults; output
// past the cap is printed cut, and said to be.
func TestCLISessionInput(t *testing.T) {
	srv := startSystem(t)
	for _, tc := range []struct {
		args  []string
		field string
	}{
		{[]string{"session", "create", "--cpu", "-1"}, "cpu"},
		{[]string{"session", "create", "--memory", "-1"}, "memoryMB"},
	} {
		if r := run(t, srv, tc.args...); r.code != 1 || !strings.Contains(r.stderr, tc.field) {
			t.Errorf("openagent %s: exit %d %q; want refused naming %s", strings.Join(tc.args, " "), r.code, r.stderr, tc.field)
		}
	}
	r := run(t, srv, "session", "create", "-o", "json")
	var s api.Session
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("create: %s %v", r.stderr, err)
	}
	if r := run(t, srv, "session", "exec", s.ID, "--code", " "); r.code != 1 || !strings.Contains(r.stderr, "code") {
		t.Errorf("exec with no code: exit %d %q", r.code, r.stderr)
	}
	if r := run(t, srv, "session", "exec", "--timeout", "2h", s.ID, "--code", "print(1)"); r.code != 1 || !strings.Contains(r.stderr, "timeoutMs") {
		t.Errorf("exec with a timeout past the bound: exit %d %q", r.code, r.stderr)
	}
	r = run(t, srv, "session", "exec", s.ID, "--code", `print("x" * 300000)`)
	if r.code != 0 || len(r.stdout) != events.MaxExecOutput || !strings.Contains(r.stderr, "cut at 256 KiB") {
		t.Errorf("output past the cap: exit %d, %d bytes printed, stderr %q; want %d bytes and a word that it was cut", r.code, len(r.stdout), r.stderr, events.MaxExecOutput)
	}
	if r := run(t, srv, "session", "rm", s.ID); r.code != 0 {
		t.Fatal(r.stderr)
	}
	for _, line := range strings.Split(run(t, srv, "session", "ls", "--all").stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == s.ID && f[len(f)-1] != "-" {
			t.Errorf("an ended session counts down: %q", line)
		}
	}
	// Three tenths of a core allocated print as 0.3, not 0.30000000000000004.
	for range 3 {
		if r := run(t, srv, "run", "--cpu", "0.1", "fake", "--", "fake", "--forever"); r.code != 0 {
			t.Fatal(r.stderr)
		}
	}
	if out := run(t, srv, "hosts").stdout; !strings.Contains(out, "0.3/") || strings.Contains(out, "0000") {
		t.Errorf("hosts:\n%s", out)
	}
	// Draining shows in the host's state, and ends.
	if r := run(t, srv, "hosts", "drain", "cli-host"); r.code != 0 || r.stdout != "cli-host draining\n" {
		t.Errorf("hosts drain: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	if out := run(t, srv, "hosts").stdout; !strings.Contains(out, "draining") {
		t.Errorf("hosts while draining:\n%s", out)
	}
	if r := run(t, srv, "run", "--host", "cli-host", "fake", "--", "fake", "--forever"); r.code != 1 || !strings.Contains(r.stderr, "draining") {
		t.Errorf("run on a draining host: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, srv, "hosts", "drain", "--disable", "cli-host"); r.code != 0 || r.stdout != "cli-host live\n" {
		t.Errorf("hosts drain --disable: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	if r := run(t, srv, "hosts", "drain", "nowhere"); r.code != 1 || !strings.Contains(r.stderr, "not found: no host nowhere") {
		t.Errorf("draining an unknown host: exit %d: %s", r.code, r.stderr)
	}
}
