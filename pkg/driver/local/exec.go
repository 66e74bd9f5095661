package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Exec implements driver.Driver: the command runs through the init stage,
// so it is confined like the main process (same cgroup, mounts, user and
// privileges) in the same working directory and environment.
func (d *Driver) Exec(ctx context.Context, id string, opts driver.ExecOptions) (*driver.ExecResult, error) {
	if len(opts.Command) == 0 {
		return nil, driver.Errorf("exec", id, driver.ErrInvalid, "command: must not be empty")
	}
	s, err := d.load("exec", id)
	if err != nil {
		return nil, err
	}
	if st := s.container().Status; st != driver.StatusRunning {
		return nil, driver.Errorf("exec", id, driver.ErrConflict, "container is %s, not running", st)
	}
	spec := &execSpec{Command: opts.Command, Env: opts.Env, WorkingDir: opts.WorkingDir}
	if s.run.Cgroup != nil {
		// A group of the exec's own: its timeout ends everything it
		// started, in a session of its own or not; what it leaves running
		// when it ends by itself stays, as in any container.
		g, err := s.run.Cgroup.sub("exec-" + rand.Text()[:12])
		if err != nil {
			return nil, driver.Errorf("exec", id, driver.ErrUnavailable, "exec cgroup: %v", err)
		}
		defer g.removeIfEmpty()
		spec.Cgroup = g
	}
	cmd, status, err := initCommand(s.dir, s.run.Run, spec)
	if err != nil {
		return nil, driver.Errorf("exec", id, driver.ErrUnavailable, "%v", err)
	}
	defer status.Close()
	var stdout, stderr bytes.Buffer
	cmd.Stdin = opts.Stdin
	cmd.Stdout, cmd.Stderr = io.Writer(&stdout), io.Writer(&stderr)
	if opts.Stdout != nil {
		cmd.Stdout = opts.Stdout
	}
	if opts.Stderr != nil {
		cmd.Stderr = opts.Stderr
	}
	// Output pipes held open by a child that outlives the command must not
	// hold up the result.
	cmd.WaitDelay = time.Second
	begin := time.Now()
	if err := startInContainer(cmd, s.run.Pid); err != nil {
		cmd.ExtraFiles[0].Close()
		return nil, driver.Errorf("exec", id, driver.ErrUnavailable, "%v", err)
	}
	cmd.ExtraFiles[0].Close()
	pgid := cmd.Process.Pid
	killTree := func() {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		if spec.Cgroup != nil {
			spec.Cgroup.killAll()
		}
	}

	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	timedOut := false
	var waitErr error
	select {
	case waitErr = <-done:
	case <-timeout:
		timedOut = true
		killTree()
		waitErr = <-done
	case <-ctx.Done():
		killTree()
		<-done
		return nil, ctx.Err()
	}
	if msg, _ := io.ReadAll(status); len(msg) > 0 {
		kind := driver.ErrUnavailable
		if strings.HasPrefix(string(msg), "command") || strings.HasPrefix(string(msg), "working dir") {
			kind = driver.ErrInvalid
		}
		return nil, driver.Errorf("exec", id, kind, "%s", msg)
	}
	res := &driver.ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(begin)}
	var ee *exec.ExitError
	switch {
	case timedOut:
		res.TimedOut, res.ExitCode = true, -1
	case errors.As(waitErr, &ee):
		ws := ee.Sys().(syscall.WaitStatus)
		res.ExitCode = ws.ExitStatus()
		if ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		}
	case waitErr != nil && !errors.Is(waitErr, exec.ErrWaitDelay):
		return nil, driver.Errorf("exec", id, driver.ErrUnavailable, "%v", waitErr)
	}
	return res, nil
}

// startInContainer starts an exec's init stage in the PID namespace of the
// container whose init is pid, when it has one (as root): the exec sees
// the container's processes and no others, and ends with the container.
// The namespace is set for the children of one thread, which forks the
// process and is then let go of with its goroutine, never reused.
func startInContainer(cmd *exec.Cmd, pid int) error {
	if os.Geteuid() != 0 {
		return cmd.Start()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // and never unlocked: the thread ends here
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("the container's PID namespace: %w", err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWPID)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("join the container's PID namespace: %w", err)
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}
