package drivertest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Harness makes a driver for the suite.
type Harness struct {
	// New returns the driver under test. It is called once per Run.
	New func(t *testing.T) driver.Driver
	// Config returns a valid config whose main process runs p.
	Config func(p Program) driver.ContainerConfig
	// Command expresses p as a command to Exec, or as a health check.
	Command func(p Program) []string
	// Slow scales the suite's waits for drivers whose operations take
	// long (a real engine); 1 when zero.
	Slow float64
	// Shell says the driver's containers have a POSIX shell at /bin/sh:
	// then the enforcement proofs run, for the settings Health says the
	// driver enforces.
	Shell bool
}

type suite struct {
	Harness
	d   driver.Driver
	seq atomic.Int64
	pfx string
}

// Run runs every conformance test against the harness's driver, each a
// named subtest.
func Run(t *testing.T, h Harness) {
	if h.Slow == 0 {
		h.Slow = 1
	}
	s := &suite{Harness: h, d: h.New(t), pfx: fmt.Sprintf("dt%d", time.Now().UnixNano()%1e6)}
	for _, tc := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"CreateReturnsCreated", s.createReturnsCreated},
		{"CreateRefusesInvalidConfig", s.createRefusesInvalidConfig},
		{"CreateDuplicateIDConflicts", s.createDuplicateID},
		{"StartRuns", s.startRuns},
		{"StartRunningIsNoop", s.startRunningIsNoop},
		{"StopNotRunningIsNoop", s.stopNotRunningIsNoop},
		{"StopGraceful", s.stopGraceful},
		{"StopKillsProcessIgnoringTERM", s.stopKillsIgnoringTERM},
		{"StopForce", s.stopForce},
		{"StartAgainAfterExit", s.startAgainAfterExit},
		{"RemoveRunningConflictsUnlessForced", s.removeRunning},
		{"RemoveForgets", s.removeForgets},
		{"UnknownIDNotFound", s.unknownID},
		{"ExitCodeReported", s.exitCode},
		{"WaitReturnsExit", s.waitReturnsExit},
		{"ContextDeadlineCancelsWait", s.contextDeadline},
		{"LogsTellStreamsApart", s.logsStreams},
		{"LogsTail", s.logsTail},
		{"LogsTimestampsAndSince", s.logsTimestamps},
		{"LogsFollow", s.logsFollow},
		{"ExecExitCodeAndStreams", s.execExitCode},
		{"ExecStdinEnvWorkingDir", s.execStdin},
		{"ExecTimeoutKills", s.execTimeout},
		{"ExecStreams", s.execStreams},
		{"ExecNotRunningConflicts", s.execNotRunning},
		{"ListFilters", s.listFilters},
		{"Stats", s.stats},
		{"DriverHealth", s.driverHealth},
		{"ContainerHealth", s.containerHealth},
		{"Volumes", s.volumes},
		{"Networks", s.networks},
	} {
		t.Run(tc.name, tc.fn)
	}
	// Optional capabilities are tested where a driver has them.
	if _, ok := s.d.(driver.Pauser); ok {
		t.Run("PauseResume", s.pauseResume)
	}
	if h.Shell {
		s.runProofs(t)
	}
}

func (s *suite) wait(d time.Duration) time.Duration { return time.Duration(float64(d) * s.Slow) }

func (s *suite) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), s.wait(60*time.Second))
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) newID() string { return fmt.Sprintf("%s-%d", s.pfx, s.seq.Add(1)) }

// create makes a container running p, removed when the test ends.
func (s *suite) create(t *testing.T, p Program, mutate ...func(*driver.ContainerConfig)) string {
	t.Helper()
	cfg := s.Config(p)
	for _, m := range mutate {
		m(&cfg)
	}
	id := s.newID()
	c, err := s.d.Create(s.ctx(t), id, cfg)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if c.ID != id {
		t.Fatalf("created id %q; want %q", c.ID, id)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.wait(30*time.Second))
		defer cancel()
		if err := s.d.Remove(ctx, id, driver.RemoveOptions{Force: true}); err != nil && !errors.Is(err, driver.ErrNotFound) {
			t.Errorf("cleanup: remove %s: %v", id, err)
		}
	})
	return id
}

func (s *suite) start(t *testing.T, p Program, mutate ...func(*driver.ContainerConfig)) string {
	t.Helper()
	id := s.create(t, p, mutate...)
	if err := s.d.Start(s.ctx(t), id); err != nil {
		t.Fatalf("start: %v", err)
	}
	return id
}

func (s *suite) get(t *testing.T, id string) *driver.Container {
	t.Helper()
	c, err := s.d.Get(s.ctx(t), id)
	if err != nil {
		t.Fatalf("get %s: %v", id, err)
	}
	return c
}

func (s *suite) waitExit(t *testing.T, id string) *driver.ExitStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.wait(30*time.Second))
	defer cancel()
	st, err := s.d.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	return st
}

func (s *suite) eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(s.wait(15 * time.Second))
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *suite) logs(t *testing.T, id string, opts driver.LogOptions) []driver.LogEntry {
	t.Helper()
	seq, err := s.d.Logs(s.ctx(t), id, opts)
	if err != nil {
		t.Fatalf("logs: %v", err)
	}
	var out []driver.LogEntry
	for e, err := range seq {
		if err != nil {
			t.Fatalf("logs: %v", err)
		}
		out = append(out, e)
	}
	return out
}

func lines(entries []driver.LogEntry, stream driver.Stream) []string {
	var out []string
	for _, e := range entries {
		if stream == "" || e.Stream == stream {
			out = append(out, e.Line)
		}
	}
	return out
}

var forever = Program{Forever: true}

func (s *suite) createReturnsCreated(t *testing.T) {
	before := time.Now().Add(-time.Second)
	id := s.create(t, forever, func(c *driver.ContainerConfig) { c.Labels = map[string]string{"app": "suite"} })
	c := s.get(t, id)
	if c.Status != driver.StatusCreated {
		t.Fatalf("status %v; want created", c.Status)
	}
	if c.CreatedAt.Before(before) || c.Driver != s.d.Name() || c.Labels["app"] != "suite" || c.SessionID == "" {
		t.Fatalf("got %+v; want created now by %s with label app=suite and the session id", c, s.d.Name())
	}
}

func (s *suite) createRefusesInvalidConfig(t *testing.T) {
	for name, mutate := range map[string]func(*driver.ContainerConfig){
		"resources.cpu":      func(c *driver.ContainerConfig) { c.Resources.CPU = 0 },
		"resources.memoryMB": func(c *driver.ContainerConfig) { c.Resources.MemoryMB = -1 },
		"image":              func(c *driver.ContainerConfig) { c.Image = "" },
		"sessionId":          func(c *driver.ContainerConfig) { c.SessionID = "" },
		"volumes[0].target": func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Source: "/tmp", Target: "data"}}
		},
		"env.1X": func(c *driver.ContainerConfig) { c.Env = map[string]string{"1X": "y"} },
	} {
		t.Run(name, func(t *testing.T) {
			cfg := s.Config(forever)
			mutate(&cfg)
			_, err := s.d.Create(s.ctx(t), s.newID(), cfg)
			if !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), name) {
				t.Fatalf("got %v; want ErrInvalid naming %s", err, name)
			}
		})
	}
}

func (s *suite) createDuplicateID(t *testing.T) {
	id := s.create(t, forever)
	_, err := s.d.Create(s.ctx(t), id, s.Config(forever))
	if !errors.Is(err, driver.ErrAlreadyExists) || !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("second create: %v; want ErrAlreadyExists", err)
	}
}

func (s *suite) startRuns(t *testing.T) {
	id := s.start(t, forever)
	c := s.get(t, id)
	if c.Status != driver.StatusRunning || c.StartedAt.IsZero() {
		t.Fatalf("status %v started %v; want running with a start time", c.Status, c.StartedAt)
	}
}

func (s *suite) startRunningIsNoop(t *testing.T) {
	id := s.start(t, forever)
	first := s.get(t, id).StartedAt
	if err := s.d.Start(s.ctx(t), id); err != nil {
		t.Fatalf("second start: %v", err)
	}
	c := s.get(t, id)
	if c.Status != driver.StatusRunning || !c.StartedAt.Equal(first) {
		t.Fatalf("second start changed the container: %v started %v (was %v)", c.Status, c.StartedAt, first)
	}
}

func (s *suite) stopNotRunningIsNoop(t *testing.T) {
	id := s.create(t, forever)
	if err := s.d.Stop(s.ctx(t), id, driver.StopOptions{}); err != nil {
		t.Fatalf("stop of a created container: %v", err)
	}
	if st := s.get(t, id).Status; st != driver.StatusCreated {
		t.Fatalf("status %v after a no-op stop; want created", st)
	}
	id2 := s.start(t, forever)
	for range 2 {
		if err := s.d.Stop(s.ctx(t), id2, driver.StopOptions{Timeout: s.wait(5 * time.Second)}); err != nil {
			t.Fatalf("stop: %v", err)
		}
	}
	if st := s.get(t, id2).Status; st != driver.StatusStopped {
		t.Fatalf("status %v; want stopped", st)
	}
}

func (s *suite) stopGraceful(t *testing.T) {
	id := s.start(t, forever)
	begin := time.Now()
	if err := s.d.Stop(s.ctx(t), id, driver.StopOptions{Timeout: s.wait(20 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > s.wait(10*time.Second) {
		t.Fatalf("a process that honours SIGTERM took %v to stop", took)
	}
	c := s.get(t, id)
	if c.Status != driver.StatusStopped || c.FinishedAt.IsZero() {
		t.Fatalf("got %v finished %v; want stopped with a finish time", c.Status, c.FinishedAt)
	}
}

func (s *suite) stopKillsIgnoringTERM(t *testing.T) {
	id := s.start(t, Program{IgnoreTERM: true, Forever: true})
	time.Sleep(s.wait(300 * time.Millisecond)) // let the shell install its trap
	begin := time.Now()
	if err := s.d.Stop(s.ctx(t), id, driver.StopOptions{Timeout: 500 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(begin)
	if took < 400*time.Millisecond {
		t.Fatalf("stopped after %v; SIGTERM is ignored, so it must wait the 500ms grace period", took)
	}
	if took > s.wait(10*time.Second) {
		t.Fatalf("stopped after %v; want SIGKILL soon after the grace period", took)
	}
	if st := s.get(t, id).Status; st != driver.StatusStopped {
		t.Fatalf("status %v; want stopped", st)
	}
}

func (s *suite) stopForce(t *testing.T) {
	id := s.start(t, Program{IgnoreTERM: true, Forever: true})
	begin := time.Now()
	if err := s.d.Stop(s.ctx(t), id, driver.StopOptions{Force: true, Timeout: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took > s.wait(5*time.Second) {
		t.Fatalf("forced stop took %v", took)
	}
	if st := s.get(t, id).Status; st != driver.StatusStopped {
		t.Fatalf("status %v; want stopped", st)
	}
}

func (s *suite) startAgainAfterExit(t *testing.T) {
	id := s.start(t, Program{Stdout: []string{"run"}, ExitCode: 0})
	s.waitExit(t, id)
	if err := s.d.Start(s.ctx(t), id); err != nil {
		t.Fatalf("start after exit: %v", err)
	}
	s.waitExit(t, id)
	s.eventually(t, "both runs' output is in the logs", func() bool {
		return len(lines(s.logs(t, id, driver.LogOptions{}), driver.Stdout)) == 2
	})
}

func (s *suite) removeRunning(t *testing.T) {
	id := s.start(t, forever)
	err := s.d.Remove(s.ctx(t), id, driver.RemoveOptions{})
	if !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("remove of a running container: %v; want ErrConflict", err)
	}
	if st := s.get(t, id).Status; st != driver.StatusRunning {
		t.Fatalf("a refused remove left it %v; want running", st)
	}
	if err := s.d.Remove(s.ctx(t), id, driver.RemoveOptions{Force: true}); err != nil {
		t.Fatalf("forced remove: %v", err)
	}
	if _, err := s.d.Get(s.ctx(t), id); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("get after remove: %v; want ErrNotFound", err)
	}
}

func (s *suite) removeForgets(t *testing.T) {
	id := s.start(t, Program{ExitCode: 0})
	s.waitExit(t, id)
	if err := s.d.Remove(s.ctx(t), id, driver.RemoveOptions{}); err != nil {
		t.Fatalf("remove of an exited container: %v", err)
	}
	list, err := s.d.List(s.ctx(t), driver.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range list {
		if c.ID == id {
			t.Fatalf("removed container %s still listed", id)
		}
	}
	if err := s.d.Remove(s.ctx(t), id, driver.RemoveOptions{}); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("second remove: %v; want ErrNotFound", err)
	}
}

func (s *suite) unknownID(t *testing.T) {
	ctx := s.ctx(t)
	id := "no-such-" + s.newID()
	ops := map[string]func() error{
		"Start":  func() error { return s.d.Start(ctx, id) },
		"Stop":   func() error { return s.d.Stop(ctx, id, driver.StopOptions{}) },
		"Remove": func() error { return s.d.Remove(ctx, id, driver.RemoveOptions{Force: true}) },
		"Get":    func() error { _, err := s.d.Get(ctx, id); return err },
		"Logs":   func() error { _, err := s.d.Logs(ctx, id, driver.LogOptions{}); return err },
		"Exec": func() error {
			_, err := s.d.Exec(ctx, id, driver.ExecOptions{Command: s.Command(Program{})})
			return err
		},
		"Wait":            func() error { _, err := s.d.Wait(ctx, id); return err },
		"Stats":           func() error { _, err := s.d.Stats(ctx, id); return err },
		"ContainerHealth": func() error { _, err := s.d.ContainerHealth(ctx, id); return err },
	}
	if p, ok := s.d.(driver.Pauser); ok {
		ops["Pause"] = func() error { return p.Pause(ctx, id) }
	}
	for name, op := range ops {
		t.Run(name, func(t *testing.T) {
			err := op()
			if !errors.Is(err, driver.ErrNotFound) || !strings.Contains(err.Error(), id) {
				t.Fatalf("got %v; want ErrNotFound naming %s", err, id)
			}
		})
	}
}

func (s *suite) exitCode(t *testing.T) {
	id := s.start(t, Program{ExitCode: 3})
	st := s.waitExit(t, id)
	if st.ExitCode != 3 || st.OOMKilled {
		t.Fatalf("exit %+v; want code 3, not OOM", st)
	}
	c := s.get(t, id)
	if c.Status != driver.StatusExited || c.ExitCode != 3 || c.FinishedAt.IsZero() {
		t.Fatalf("container %v exit %d finished %v; want exited 3 with a finish time", c.Status, c.ExitCode, c.FinishedAt)
	}
}

func (s *suite) waitReturnsExit(t *testing.T) {
	id := s.start(t, Program{Sleep: 2 * time.Second, ExitCode: 7})
	begin := time.Now()
	st := s.waitExit(t, id)
	if st.ExitCode != 7 {
		t.Fatalf("exit code %d; want 7", st.ExitCode)
	}
	// Starting may eat into the sleep on a loaded machine, not all of it.
	if time.Since(begin) < 500*time.Millisecond {
		t.Fatalf("wait returned after %v, before the process had slept", time.Since(begin))
	}
	if st := s.get(t, id).Status; st != driver.StatusExited {
		t.Fatalf("status %v after wait; want exited", st)
	}
}

func (s *suite) contextDeadline(t *testing.T) {
	id := s.start(t, forever)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := s.d.Wait(ctx, id)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait past its deadline: %v; want context.DeadlineExceeded", err)
	}
	if took := time.Since(begin); took > s.wait(5*time.Second) {
		t.Fatalf("wait returned %v after its 200ms deadline", took)
	}
}

func (s *suite) logsStreams(t *testing.T) {
	id := s.start(t, Program{Stdout: []string{"out one", "out twö"}, Stderr: []string{"err one"}})
	s.waitExit(t, id)
	var got []driver.LogEntry
	s.eventually(t, "all three lines are logged", func() bool {
		got = s.logs(t, id, driver.LogOptions{})
		return len(got) == 3
	})
	if o, e := lines(got, driver.Stdout), lines(got, driver.Stderr); !slices.Equal(o, []string{"out one", "out twö"}) || !slices.Equal(e, []string{"err one"}) {
		t.Fatalf("stdout %q stderr %q; want [out one out twö] and [err one]", o, e)
	}
}

func (s *suite) logsTail(t *testing.T) {
	id := s.start(t, Program{Stdout: []string{"1", "2", "3", "4", "5"}})
	s.waitExit(t, id)
	s.eventually(t, "five lines are logged", func() bool { return len(s.logs(t, id, driver.LogOptions{})) == 5 })
	if got := lines(s.logs(t, id, driver.LogOptions{Tail: 2}), ""); !slices.Equal(got, []string{"4", "5"}) {
		t.Fatalf("tail 2: %q; want [4 5]", got)
	}
}

func (s *suite) logsTimestamps(t *testing.T) {
	id := s.start(t, Program{Stdout: []string{"early"}, Sleep: 1200 * time.Millisecond, Later: []string{"late"}})
	s.waitExit(t, id)
	var got []driver.LogEntry
	s.eventually(t, "both lines are logged", func() bool {
		got = s.logs(t, id, driver.LogOptions{Timestamps: true})
		return len(got) == 2
	})
	if got[0].Time.IsZero() || got[1].Time.Before(got[0].Time.Add(time.Second)) {
		t.Fatalf("times %v and %v; want both set, a second or more apart", got[0].Time, got[1].Time)
	}
	since := s.logs(t, id, driver.LogOptions{Since: got[1].Time.Add(-100 * time.Millisecond)})
	if l := lines(since, ""); !slices.Equal(l, []string{"late"}) {
		t.Fatalf("since the second line: %q; want [late]", l)
	}
}

func (s *suite) logsFollow(t *testing.T) {
	id := s.start(t, Program{Stdout: []string{"first"}, Sleep: 700 * time.Millisecond, Later: []string{"second"}})
	seq, err := s.d.Logs(s.ctx(t), id, driver.LogOptions{Follow: true})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for e, err := range seq {
		if err != nil {
			t.Fatalf("follow: %v", err)
		}
		got = append(got, e.Line)
	}
	// The sequence ended by itself when the container exited, with the line
	// written after following began.
	if !slices.Equal(got, []string{"first", "second"}) {
		t.Fatalf("followed %q; want [first second]", got)
	}
}

func (s *suite) execExitCode(t *testing.T) {
	id := s.start(t, forever)
	res, err := s.d.Exec(s.ctx(t), id, driver.ExecOptions{Command: s.Command(Program{Stdout: []string{"to out"}, Stderr: []string{"to err"}, ExitCode: 4})})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 4 || string(res.Stdout) != "to out\n" || string(res.Stderr) != "to err\n" || res.TimedOut {
		t.Fatalf("got exit %d stdout %q stderr %q timedOut %v; want 4, \"to out\\n\", \"to err\\n\", false", res.ExitCode, res.Stdout, res.Stderr, res.TimedOut)
	}
}

func (s *suite) execStdin(t *testing.T) {
	id := s.start(t, forever)
	res, err := s.d.Exec(s.ctx(t), id, driver.ExecOptions{
		Command: s.Command(Program{Cat: true}),
		Stdin:   strings.NewReader("from stdin\n"),
		Env:     map[string]string{"GREETING": "hello"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || string(res.Stdout) != "from stdin\n" {
		t.Fatalf("got exit %d stdout %q; want 0 and the input", res.ExitCode, res.Stdout)
	}
}

func (s *suite) execTimeout(t *testing.T) {
	id := s.start(t, forever)
	begin := time.Now()
	res, err := s.d.Exec(s.ctx(t), id, driver.ExecOptions{
		Command: s.Command(Program{Stdout: []string{"before"}, Forever: true}),
		Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || time.Since(begin) > s.wait(10*time.Second) {
		t.Fatalf("got %+v after %v; want timed out soon after 500ms", res, time.Since(begin))
	}
	// The container is still usable.
	res, err = s.d.Exec(s.ctx(t), id, driver.ExecOptions{Command: s.Command(Program{ExitCode: 0})})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec after a timeout: %+v, %v", res, err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (s *suite) execStreams(t *testing.T) {
	id := s.start(t, forever)
	var out, errb lockedBuffer
	done := make(chan struct{})
	var res *driver.ExecResult
	var err error
	go func() {
		defer close(done)
		res, err = s.d.Exec(s.ctx(t), id, driver.ExecOptions{
			Command: s.Command(Program{Stdout: []string{"now"}, Stderr: []string{"oops"}, Sleep: 2 * time.Second, Later: []string{"later"}}),
			Stdout:  &out, Stderr: &errb,
		})
	}()
	// "now" arrives while the command is still sleeping.
	s.eventually(t, "streamed output arrives before the command ends", func() bool { return out.String() == "now\n" })
	select {
	case <-done:
		t.Fatal("the exec finished before its sleep; cannot tell streaming from buffering")
	default:
	}
	<-done
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v, %v", res, err)
	}
	if out.String() != "now\nlater\n" || errb.String() != "oops\n" {
		t.Fatalf("streamed stdout %q stderr %q", out.String(), errb.String())
	}
}

func (s *suite) execNotRunning(t *testing.T) {
	id := s.create(t, forever)
	_, err := s.d.Exec(s.ctx(t), id, driver.ExecOptions{Command: s.Command(Program{})})
	if !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("exec in a created container: %v; want ErrConflict", err)
	}
}

func (s *suite) listFilters(t *testing.T) {
	session := "list-" + s.newID()
	withSession := func(c *driver.ContainerConfig) { c.SessionID = session }
	a := s.start(t, forever, withSession, func(c *driver.ContainerConfig) { c.Labels = map[string]string{"role": "a", "team": "x"} })
	b := s.create(t, forever, withSession, func(c *driver.ContainerConfig) { c.Labels = map[string]string{"role": "b", "team": "x"} })
	s.create(t, forever, func(c *driver.ContainerConfig) { c.Labels = map[string]string{"role": "a", "team": "x"} })
	ids := func(f driver.Filter) []string {
		list, err := s.d.List(s.ctx(t), f)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range list {
			out = append(out, c.ID)
		}
		slices.Sort(out)
		return out
	}
	for name, tc := range map[string]struct {
		f    driver.Filter
		want []string
	}{
		"session":                {driver.Filter{SessionID: session}, []string{a, b}},
		"session and status":     {driver.Filter{SessionID: session, Status: driver.StatusRunning}, []string{a}},
		"session and labels":     {driver.Filter{SessionID: session, Labels: map[string]string{"team": "x", "role": "b"}}, []string{b}},
		"session and no match":   {driver.Filter{SessionID: session, Labels: map[string]string{"team": "y"}}, nil},
		"session, created state": {driver.Filter{SessionID: session, Status: driver.StatusCreated}, []string{b}},
	} {
		t.Run(name, func(t *testing.T) {
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if got := ids(tc.f); !slices.Equal(got, want) {
				t.Fatalf("got %v; want %v", got, want)
			}
		})
	}
}

func (s *suite) stats(t *testing.T) {
	id := s.start(t, forever)
	st, err := s.d.Stats(s.ctx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	if st.Pids < 1 || st.Time.IsZero() || st.CPUPercent < 0 {
		t.Fatalf("stats %+v; want at least one pid and a sample time", st)
	}
}

func (s *suite) driverHealth(t *testing.T) {
	s.start(t, forever)
	h, err := s.d.Health(s.ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.Status != "ok" || h.Version == "" || h.Running < 1 || h.Containers < h.Running {
		t.Fatalf("health %+v; want ok with a version and the running container counted", h)
	}
	settings := map[string]bool{}
	for _, e := range h.Enforcement {
		if e.How == "" {
			t.Errorf("setting %s: no mechanism or reason given", e.Setting)
		}
		settings[e.Setting] = true
	}
	for _, want := range driver.Settings {
		if !settings[want] {
			t.Errorf("health does not say whether %s is enforced", want)
		}
	}
}

func (s *suite) containerHealth(t *testing.T) {
	none := s.start(t, forever)
	if h, err := s.d.ContainerHealth(s.ctx(t), none); err != nil || h != driver.HealthNone {
		t.Fatalf("no check: %v, %v; want none", h, err)
	}
	check := func(code int) func(*driver.ContainerConfig) {
		return func(c *driver.ContainerConfig) {
			c.HealthCheck = &driver.HealthCheck{Command: s.Command(Program{ExitCode: code}), TimeoutMs: 5000}
		}
	}
	for code, want := range map[int]driver.HealthStatus{0: driver.HealthHealthy, 1: driver.HealthUnhealthy} {
		id := s.start(t, forever, check(code))
		s.eventually(t, fmt.Sprintf("health is %s", want), func() bool {
			h, err := s.d.ContainerHealth(s.ctx(t), id)
			if err != nil {
				t.Fatal(err)
			}
			return h == want
		})
	}
}

func (s *suite) volumes(t *testing.T) {
	ctx := s.ctx(t)
	name := "vol-" + s.newID()
	v, err := s.d.CreateVolume(ctx, name, map[string]string{"owner": "suite"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Name != name {
		t.Fatalf("volume %q; want %q", v.Name, name)
	}
	if _, err := s.d.CreateVolume(ctx, name, nil); !errors.Is(err, driver.ErrAlreadyExists) {
		t.Fatalf("second create: %v; want ErrAlreadyExists", err)
	}
	listed := func() bool {
		list, err := s.d.ListVolumes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(list, func(v *driver.Volume) bool { return v.Name == name && v.Labels["owner"] == "suite" })
	}
	if !listed() {
		t.Fatal("created volume not listed with its labels")
	}
	id := s.start(t, forever, func(c *driver.ContainerConfig) {
		c.Volumes = []driver.VolumeMount{{Type: driver.MountVolume, Source: name, Target: "/data"}}
	})
	if err := s.d.RemoveVolume(ctx, name); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("remove of a volume in use: %v; want ErrConflict", err)
	}
	if err := s.d.Remove(ctx, id, driver.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.d.RemoveVolume(ctx, name); err != nil {
		t.Fatalf("remove of a free volume: %v", err)
	}
	if listed() {
		t.Fatal("removed volume still listed")
	}
	if err := s.d.RemoveVolume(ctx, name); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("second remove: %v; want ErrNotFound", err)
	}
}

func (s *suite) networks(t *testing.T) {
	ctx := s.ctx(t)
	name := "net-" + s.newID()
	_, err := s.d.CreateNetwork(ctx, name, map[string]string{"owner": "suite"})
	if errors.Is(err, driver.ErrNotSupported) && os.Getenv("CI") == "" {
		t.Skipf("networks are not supported here (CI runs where they are): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	listed := func() bool {
		list, err := s.d.ListNetworks(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(list, func(n *driver.Network) bool { return n.Name == name && n.Labels["owner"] == "suite" })
	}
	if !listed() {
		t.Fatal("created network not listed with its labels")
	}
	id := s.create(t, forever, func(c *driver.ContainerConfig) { c.Network = name })
	if err := s.d.RemoveNetwork(ctx, name); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("remove of a network in use: %v; want ErrConflict", err)
	}
	if err := s.d.Remove(ctx, id, driver.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.d.RemoveNetwork(ctx, name); err != nil {
		t.Fatal(err)
	}
	if listed() {
		t.Fatal("removed network still listed")
	}
}

func (s *suite) pauseResume(t *testing.T) {
	p := s.d.(driver.Pauser)
	id := s.start(t, forever)
	if err := p.Pause(s.ctx(t), id); err != nil {
		t.Fatal(err)
	}
	if st := s.get(t, id).Status; st != driver.StatusPaused {
		t.Fatalf("status %v; want paused", st)
	}
	if err := p.Resume(s.ctx(t), id); err != nil {
		t.Fatal(err)
	}
	if st := s.get(t, id).Status; st != driver.StatusRunning {
		t.Fatalf("status %v; want running", st)
	}
}
