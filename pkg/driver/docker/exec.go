package docker

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/openagent/orchestrator/pkg/driver"
)

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

// Exec implements driver.Driver. The engine has no way to kill an exec, so
// a timeout kills its process tree from the host (the worker runs beside
// the engine, as root).
func (d *Driver) Exec(ctx context.Context, id string, opts driver.ExecOptions) (*driver.ExecResult, error) {
	if len(opts.Command) == 0 {
		return nil, driver.Errorf("exec", id, driver.ErrInvalid, "command: must not be empty")
	}
	in, err := d.inspect(ctx, "exec", id)
	if err != nil {
		return nil, err
	}
	if !in.State.Running || in.State.Paused {
		return nil, driver.Errorf("exec", id, driver.ErrConflict, "container is %s, not running", in.State.Status)
	}
	env := make([]string, 0, len(opts.Env))
	for k, v := range opts.Env {
		env = append(env, k+"="+v)
	}
	created, err := d.cli.ContainerExecCreate(ctx, name(id), container.ExecOptions{
		Cmd: opts.Command, Env: env, WorkingDir: opts.WorkingDir,
		AttachStdout: true, AttachStderr: true, AttachStdin: opts.Stdin != nil,
	})
	if err != nil {
		return nil, kind("exec", id, err)
	}
	begin := time.Now()
	att, err := d.cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, kind("exec", id, err)
	}
	defer att.Close()
	if opts.Stdin != nil {
		go func() {
			_, _ = io.Copy(att.Conn, opts.Stdin)
			_ = att.CloseWrite()
		}()
	}
	var stdout, stderr bytes.Buffer
	outW, errW := io.Writer(&stdout), io.Writer(&stderr)
	if opts.Stdout != nil {
		outW = opts.Stdout
	}
	if opts.Stderr != nil {
		errW = opts.Stderr
	}
	copied := make(chan error, 1)
	go func() {
		_, err := stdcopy.StdCopy(outW, errW, att.Reader)
		copied <- err
	}()
	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	timedOut := false
	select {
	case <-copied:
	case <-timeout:
		timedOut = true
		d.killExec(context.WithoutCancel(ctx), created.ID)
		select {
		case <-copied:
		case <-time.After(5 * time.Second):
			att.Close()
		}
	case <-ctx.Done():
		d.killExec(context.WithoutCancel(ctx), created.ID)
		return nil, ctx.Err()
	}
	res := &driver.ExecResult{Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Duration: time.Since(begin)}
	if timedOut {
		res.TimedOut, res.ExitCode = true, -1
		return res, nil
	}
	// The exit code is set a moment after the output ends.
	for range 100 {
		ei, err := d.cli.ContainerExecInspect(ctx, created.ID)
		if err != nil {
			return nil, kind("exec", id, err)
		}
		if !ei.Running {
			res.ExitCode = ei.ExitCode
			return res, nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil, driver.Errorf("exec", id, driver.ErrTimeout, "exit code not reported")
}

// killExec kills an exec's process and every descendant, from the host.
func (d *Driver) killExec(ctx context.Context, execID string) {
	ei, err := d.cli.ContainerExecInspect(ctx, execID)
	if err != nil || ei.Pid <= 0 {
		return
	}
	for _, pid := range descendants(ei.Pid) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// descendants returns pid and all its descendants, read from /proc.
func descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
