package local

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/openagent/orchestrator/pkg/driver"
)

// The local driver runs every container under a shim: a copy of the
// program that uses the driver, re-executed in a stage named by the
// environment. The shim outlives the worker, so a container keeps running
// (and its output keeps being logged) while the worker restarts:
//
//	worker ──▶ launch ──▶ shim (new session; records run and exit; logs output)
//	                        └──▶ init (joins the cgroup, mounts, drops privileges) ══exec══▶ command
//
// launch exits at once, so the shim is nobody's child but init's and no
// worker has to reap it. Exec runs a command through the same init stage.
const (
	envStage = "OPENAGENT_LOCAL_STAGE"
	envDir   = "OPENAGENT_LOCAL_DIR"
	envRun   = "OPENAGENT_LOCAL_RUN"
	envExec  = "OPENAGENT_LOCAL_EXEC"
)

// MaybeRunShim runs the local driver's stage this process was started for
// and exits; in any other process it returns at once. Every program that
// uses the local driver calls it first thing in main (tests: in TestMain).
func MaybeRunShim() {
	switch os.Getenv(envStage) {
	case "":
		return
	case "launch":
		os.Exit(launch())
	case "shim":
		os.Exit(runShim())
	case "init":
		initStage()
	}
	os.Exit(2)
}

// selfCommand returns a command re-executing this program in a stage.
func selfCommand(stage string, env ...string) *exec.Cmd {
	cmd := exec.Command("/proc/self/exe")
	cmd.Env = append([]string{envStage + "=" + stage}, env...)
	return cmd
}

func launch() int {
	cmd := selfCommand("shim", envDir+"="+os.Getenv(envDir), envRun+"="+os.Getenv(envRun))
	cmd.ExtraFiles = []*os.File{os.NewFile(3, "ready")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(cmd.ExtraFiles[0], "error: start shim: %v", err)
		return 1
	}
	return 0
}

func runShim() int {
	dir := os.Getenv(envDir)
	run, _ := strconv.Atoi(os.Getenv(envRun))
	ready := os.NewFile(3, "ready")
	fail := func(err error) int {
		fmt.Fprintf(ready, "error: %v", err)
		ready.Close()
		return 1
	}
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		return fail(err)
	}
	c := m.Container
	rs := runState{Run: run, ShimPid: os.Getpid(), ShimStart: procStart(os.Getpid()), StartedAt: time.Now().UTC()}
	if os.Geteuid() == 0 && cgroupVersion() != 0 {
		cg, err := newCgroup(c.ID, c.Config.Resources)
		if err != nil {
			return fail(fmt.Errorf("cgroup: %w", err))
		}
		rs.Cgroup = cg
	}
	if err := writeJSON(filepath.Join(dir, runFile), rs); err != nil {
		return fail(err)
	}
	logw, err := os.OpenFile(filepath.Join(dir, logFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fail(err)
	}
	defer logw.Close()

	cmd, status, err := initCommand(dir, run, nil)
	if err != nil {
		return fail(err)
	}
	// On fd 4 the init of a PID namespace says how the command ended when
	// a signal ended it: the init itself cannot die of a signal it sends
	// itself, so it exits 128+N and says "signal N".
	exitR, exitW, err := os.Pipe()
	if err != nil {
		return fail(err)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, exitW)
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	cmd.Stdout, cmd.Stderr = outW, errW
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	outW.Close()
	errW.Close()
	cmd.ExtraFiles[0].Close()
	exitW.Close()
	if msg, _ := io.ReadAll(status); len(msg) > 0 {
		_ = cmd.Wait()
		if rs.Cgroup != nil {
			rs.Cgroup.destroy()
		}
		// The command never ran: the container stays created.
		_ = os.Remove(filepath.Join(dir, runFile))
		return fail(errors.New(string(msg)))
	}
	rs.Pid, rs.PidStart = cmd.Process.Pid, procStart(cmd.Process.Pid)
	if err := writeJSON(filepath.Join(dir, runFile), rs); err != nil {
		return fail(err)
	}
	ready.WriteString("ok")
	ready.Close()

	var mu sync.Mutex
	var copiers sync.WaitGroup
	for _, p := range []struct {
		r *os.File
		s driver.Stream
	}{{outR, driver.Stdout}, {errR, driver.Stderr}} {
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			copyLines(p.r, func(line string) {
				b, _ := json.Marshal(driver.LogEntry{Stream: p.s, Time: time.Now().UTC(), Line: line})
				mu.Lock()
				logw.Write(append(b, '\n'))
				mu.Unlock()
			})
		}()
	}

	signalled := make(chan int, 1)
	go func() {
		var n int
		if b, _ := io.ReadAll(exitR); len(b) > 0 {
			fmt.Sscanf(string(b), "signal %d", &n)
		}
		signalled <- n
	}()
	waitErr := cmd.Wait()
	// The main process ended: end the rest of the container with it, as a
	// container runtime does when a container's init exits.
	_ = syscall.Kill(-rs.Pid, syscall.SIGKILL)
	if rs.Cgroup != nil {
		rs.Cgroup.killAll()
	}
	drained := make(chan struct{})
	go func() { copiers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(2 * time.Second):
		outR.Close()
		errR.Close()
		<-drained
	}

	ex := exitState{Run: run, FinishedAt: time.Now().UTC(), Reason: "exited"}
	var ee *exec.ExitError
	if errors.As(waitErr, &ee) {
		ws := ee.Sys().(syscall.WaitStatus)
		ex.ExitCode = ws.ExitStatus()
		if ws.Signaled() {
			ex.ExitCode, ex.Reason = 128+int(ws.Signal()), "killed"
		}
	} else if waitErr != nil {
		ex.ExitCode, ex.Reason = -1, waitErr.Error()
	}
	if n := <-signalled; n > 0 {
		ex.ExitCode, ex.Reason = 128+n, "killed"
	}
	if rs.Cgroup != nil && rs.Cgroup.oomKills() > 0 {
		ex.OOMKilled, ex.Reason = true, "oom-killed"
	}
	if stopRequested(dir, run) {
		ex.Stopped, ex.Reason = true, "stopped"
	}
	_ = os.Remove(filepath.Join(dir, pausedFile))
	if err := writeJSON(filepath.Join(dir, exitFile), ex); err != nil {
		return 1
	}
	if rs.Cgroup != nil {
		rs.Cgroup.destroy()
	}
	return 0
}

// copyLines calls emit with every line read from r, without its newline;
// a line longer than 64 KiB is split.
func copyLines(r io.Reader, emit func(string)) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			emit(strings.TrimSuffix(string(line), "\n"))
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// execSpec is a command Exec runs in a container.
type execSpec struct {
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	// Cgroup is the exec's own group below the container's, which its
	// timeout empties.
	Cgroup *cgroup `json:"cgroup,omitempty"`
}

// initCommand prepares the init stage for the main process (spec nil) or
// an exec. The returned reader yields the init stage's error, or EOF once
// the command was executed.
func initCommand(dir string, run int, spec *execSpec) (*exec.Cmd, *os.File, error) {
	env := []string{envDir + "=" + dir, envRun + "=" + strconv.Itoa(run)}
	if spec != nil {
		b, err := json.Marshal(spec)
		if err != nil {
			return nil, nil, err
		}
		env = append(env, envExec+"="+string(b))
	}
	cmd := selfCommand("init", env...)
	statusR, statusW, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	cmd.ExtraFiles = []*os.File{statusW}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if os.Geteuid() == 0 {
		// A mount namespace of its own: read-only root, volumes and a
		// private /tmp, invisible to the host.
		cmd.SysProcAttr.Cloneflags = syscall.CLONE_NEWNS
		if spec == nil {
			// The main process's init is the first of a PID namespace of
			// its own: a container sees only its own processes (its /proc
			// is mounted inside), and when its init ends, the kernel ends
			// every process in it. Execs are started inside it (Exec).
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWPID
		}
		if spec == nil && netnsOf(dir) == "" {
			// And for the main process a network namespace of its own, with
			// loopback only: nothing on the host's addresses (the control
			// plane's ports among them) or beyond is reachable. Execs join
			// it (initStage), so the container's processes share loopback.
			// A container on a network joins the namespace attach made.
			cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
		}
	}
	return cmd, statusR, nil
}

// initStage sets up the process and executes the command in its place. On
// failure it reports on fd 3 and exits 127.
func initStage() {
	// Thread attributes (no_new_privs, the capability bounding set) must be
	// set on the thread that executes the command.
	runtime.LockOSThread()
	status := os.NewFile(3, "status")
	syscall.CloseOnExec(3)
	if os.Getpid() == 1 {
		syscall.CloseOnExec(4) // nsInit's
	}
	fail := func(format string, args ...any) {
		fmt.Fprintf(status, format, args...)
		os.Exit(127)
	}
	dir := os.Getenv(envDir)
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		fail("read config: %v", err)
	}
	cfg := m.Container.Config
	spec := execSpec{Command: cfg.Command, Env: cfg.Env, WorkingDir: cfg.WorkingDir}
	var execGroup *cgroup
	if s := os.Getenv(envExec); s != "" {
		var ex execSpec
		if err := json.Unmarshal([]byte(s), &ex); err != nil {
			fail("exec spec: %v", err)
		}
		env := map[string]string{}
		for k, v := range cfg.Env {
			env[k] = v
		}
		for k, v := range ex.Env {
			env[k] = v
		}
		spec = execSpec{Command: ex.Command, Env: env, WorkingDir: ex.WorkingDir}
		execGroup = ex.Cgroup
		if spec.WorkingDir == "" {
			spec.WorkingDir = cfg.WorkingDir
		}
	}
	if len(spec.Command) == 0 {
		fail("no command to run")
	}
	root := os.Geteuid() == 0
	var rs runState
	// The namespace's init stays out of the container's cgroup (its
	// threads and memory are not the container's to pay for) and its
	// command is born into it: on v2 by clone's CLONE_INTO_CGROUP, on v1 by
	// forking it from inside and leaving at once.
	in := nsInit{cgroupFD: -1}
	if err := readJSON(filepath.Join(dir, runFile), &rs); err == nil && rs.Cgroup != nil {
		if execGroup != nil {
			rs.Cgroup = execGroup
		}
		if os.Getpid() == 1 && rs.Cgroup.V2 {
			fd, err := unix.Open(rs.Cgroup.Paths[""], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				fail("open cgroup: %v", err)
			}
			in.cgroupFD = fd
		} else {
			if os.Getpid() == 1 {
				if in.leave, err = rs.Cgroup.returnPath(); err != nil {
					fail("cgroup: %v", err)
				}
			}
			if err := rs.Cgroup.join(os.Getpid()); err != nil {
				fail("join cgroup: %v", err)
			}
		}
	}
	if err := setRlimits(cfg.Resources, root); err != nil {
		fail("rlimits: %v", err)
	}
	if root {
		if err := joinNetwork(os.Getenv(envExec) != "", rs.Pid, netnsOf(dir)); err != nil {
			fail("network: %v", err)
		}
		if err := setupMounts(dir, &m); err != nil {
			fail("mounts: %v", err)
		}
	}
	work := spec.WorkingDir
	if work == "" {
		work = filepath.Join(dir, workDir)
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=" + filepath.Join(dir, workDir),
		"TMPDIR=/tmp",
		"OPENAGENT_CONTAINER_ID=" + m.Container.ID,
		"OPENAGENT_SESSION_ID=" + m.Container.SessionID,
	}
	for k, v := range spec.Env {
		env = append(env, k+"="+v)
		if k == "PATH" {
			os.Setenv("PATH", v)
		}
	}
	if os.Getenv("PATH") == "" {
		os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	}
	path, err := exec.LookPath(spec.Command[0])
	if err != nil {
		fail("command %q: %v", spec.Command[0], err)
	}
	if err := dropPrivileges(cfg.Security, m.UID, m.GID, root); err != nil {
		fail("%v", err)
	}
	if err := os.Chdir(work); err != nil {
		fail("working dir: %v", err)
	}
	if os.Getpid() == 1 {
		os.Exit(in.run(status, path, spec.Command, env))
	}
	err = syscall.Exec(path, spec.Command, env)
	fail("exec %s: %v", path, err)
}

// nsInit is the first process of a container's PID namespace, as
// tini is for a docker container: it starts the command as its child (on
// this locked thread, which holds the container's no_new_privs and
// capability bounding set), passes on the signals it gets, reaps every
// orphan of the namespace, and exits as the command did. A signal that
// ended the command is reported on fd 4. On cgroup v2 the command is born
// into the container's cgroup (cgroupFD) and the init is not in it.
type nsInit struct {
	cgroupFD int        // v2: the container's cgroup, for the command's clone
	leave    []*os.File // v1: the init's own groups, to go back to
}

func (in nsInit) run(status *os.File, path string, argv, env []string) int {
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	cmd := exec.Command(path)
	cmd.Args, cmd.Env = argv, env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if in.cgroupFD >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: in.cgroupFD}
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(status, "exec %s: %v", path, err)
		return 127
	}
	for _, f := range in.leave {
		_, _ = f.WriteString("0") // "0" is the writer
		f.Close()
	}
	status.Close() // executed: the shim reads EOF
	main := cmd.Process.Pid
	for sig := range sigs {
		switch sig {
		case syscall.SIGCHLD:
		case syscall.SIGURG: // the Go runtime's own preemption signal
			continue
		default:
			_ = syscall.Kill(main, sig.(syscall.Signal))
			continue
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			if pid != main {
				continue // an orphan, reaped
			}
			if ws.Signaled() {
				fmt.Fprintf(os.NewFile(4, "exit"), "signal %d", int(ws.Signal()))
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
	return 127
}

// joinNetwork sets up the container's network: the main process of a
// container on a network joins the namespace attach made; otherwise, in a
// namespace of its own, it brings its loopback up; an exec joins the main
// process's namespace. The thread is locked: a namespace joined is the
// thread's, which then executes the command.
func joinNetwork(isExec bool, mainPid int, netns string) error {
	if !isExec && netns != "" {
		return joinNamespace(netns)
	}
	if isExec {
		if mainPid <= 0 {
			return errors.New("the container's main process is not known")
		}
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/net", mainPid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("the main process's network namespace: %w", err)
		}
		defer unix.Close(fd)
		return unix.Setns(fd, unix.CLONE_NEWNET)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

func setRlimits(r driver.Resources, root bool) error {
	set := func(res int, v uint64) error {
		return unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v})
	}
	// A single file can never exceed the disk limit; the total is not
	// bounded (see Health).
	if err := set(unix.RLIMIT_FSIZE, uint64(r.DiskMB)<<20); err != nil {
		return err
	}
	if err := set(unix.RLIMIT_CORE, 0); err != nil {
		return err
	}
	if !root || cgroupVersion() == 0 {
		// Without cgroups, rlimits stand in: address space for memory and
		// processes of the user for pids, both approximations (see Health).
		if err := set(unix.RLIMIT_AS, uint64(r.MemoryMB)<<20); err != nil {
			return err
		}
		if err := set(unix.RLIMIT_NPROC, uint64(r.Pids)); err != nil {
			return err
		}
	}
	return nil
}
