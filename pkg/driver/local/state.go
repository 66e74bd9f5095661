package local

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// A container's directory holds everything about it, so that a restarted
// worker knows what the last one knew:
//
//	meta.json   identity and config, written by Create
//	run.json    the current run: shim and process ids, cgroup; by the shim
//	exit.json   how the current run ended; by the shim
//	stop        the run that Stop was asked to end
//	paused      present while the container is paused
//	log.jsonl   timestamped output of every run; by the shim
//	work/       the working directory, owned by the container's user
//	tmp/        mounted on /tmp inside the container
const (
	metaFile   = "meta.json"
	runFile    = "run.json"
	exitFile   = "exit.json"
	stopFile   = "stop"
	pausedFile = "paused"
	logFile    = "log.jsonl"
	workDir    = "work"
	tmpDir     = "tmp"
)

type meta struct {
	Container driver.Container `json:"container"`
	// MadeDirs are mount targets Create made on the host, removed with the
	// container.
	MadeDirs []string `json:"madeDirs,omitempty"`
	UID      int      `json:"uid"`
	GID      int      `json:"gid"`
}

type runState struct {
	Run       int       `json:"run"`
	ShimPid   int       `json:"shimPid"`
	ShimStart uint64    `json:"shimStart"`
	Pid       int       `json:"pid"`
	PidStart  uint64    `json:"pidStart"`
	StartedAt time.Time `json:"startedAt"`
	Cgroup    *cgroup   `json:"cgroup,omitempty"`
}

type exitState struct {
	Run        int       `json:"run"`
	ExitCode   int       `json:"exitCode"`
	OOMKilled  bool      `json:"oomKilled,omitempty"`
	Stopped    bool      `json:"stopped,omitempty"`
	Reason     string    `json:"reason"`
	FinishedAt time.Time `json:"finishedAt"`
}

// writeJSON writes v to path atomically: readers see the old or the new
// file, never half of one.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// procStart returns a process's start time in clock ticks since boot, which
// tells a live process from a later one that reused its pid; 0 if there is
// no such process.
func procStart(pid int) uint64 {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state is field 3 of stat, starttime 22.
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	n, _ := strconv.ParseUint(f[19], 10, 64)
	return n
}

func alive(pid int, start uint64) bool { return start != 0 && procStart(pid) == start }

// snapshot is a container as its directory describes it.
type snapshot struct {
	meta meta
	run  *runState  // nil: never started
	exit *exitState // nil: the current run has not ended
	dir  string
}

func loadSnapshot(dir string) (*snapshot, error) {
	s := &snapshot{dir: dir}
	if err := readJSON(filepath.Join(dir, metaFile), &s.meta); err != nil {
		return nil, err
	}
	var r runState
	if err := readJSON(filepath.Join(dir, runFile), &r); err == nil {
		s.run = &r
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var e exitState
	if err := readJSON(filepath.Join(dir, exitFile), &e); err == nil && s.run != nil && e.Run == s.run.Run {
		s.exit = &e
	}
	return s, nil
}

// running reports whether the current run has not ended: its process is
// alive, or its shim is (starting it, or recording its end).
func (s *snapshot) running() bool {
	return s.run != nil && s.exit == nil && (alive(s.run.Pid, s.run.PidStart) || alive(s.run.ShimPid, s.run.ShimStart))
}

func (s *snapshot) container() *driver.Container {
	c := s.meta.Container
	c.Status = driver.StatusCreated
	if s.run != nil {
		c.StartedAt = s.run.StartedAt
		c.RuntimeID = strconv.Itoa(s.run.Pid)
		switch {
		case s.exit != nil:
			c.Status = driver.StatusExited
			if s.exit.Stopped {
				c.Status = driver.StatusStopped
			}
			c.ExitCode, c.OOMKilled, c.FinishedAt = s.exit.ExitCode, s.exit.OOMKilled, s.exit.FinishedAt
		case s.running():
			c.Status = driver.StatusRunning
			if _, err := os.Stat(filepath.Join(s.dir, pausedFile)); err == nil {
				c.Status = driver.StatusPaused
			}
		default:
			// The process and its shim are gone without a word: the machine
			// rebooted or someone killed them.
			c.Status, c.ExitCode = driver.StatusExited, -1
		}
	}
	return &c
}

// stopRequested reports whether Stop asked the given run to end.
func stopRequested(dir string, run int) bool {
	b, err := os.ReadFile(filepath.Join(dir, stopFile))
	return err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(run)
}

func markStop(dir string, run int) error {
	return os.WriteFile(filepath.Join(dir, stopFile), []byte(strconv.Itoa(run)), 0o644)
}

// signalRun sends sig to the run's process group.
func signalRun(r *runState, sig syscall.Signal) error {
	if r.Pid <= 0 || !alive(r.Pid, r.PidStart) {
		return nil
	}
	if err := syscall.Kill(-r.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %v: %w", sig, err)
	}
	return nil
}

func uidNow() int { return syscall.Getuid() }
