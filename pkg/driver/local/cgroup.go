package local

import (
	"bufio"
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

const cgroupRoot = "/sys/fs/cgroup"

// cgroup is one container's control group: per controller directories on
// cgroup v1, one directory on v2. It is written to run.json so that a
// restarted worker finds it again.
type cgroup struct {
	V2    bool              `json:"v2,omitempty"`
	Paths map[string]string `json:"paths"` // controller ("" on v2) → directory
}

// cgroupVersion reports which cgroup hierarchy this machine offers the
// controllers on: 2, 1, or 0 when neither can be used.
func cgroupVersion() int {
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err == nil {
		return 2
	}
	for _, c := range []string{"memory", "pids", "cpu"} {
		if _, err := os.Stat(filepath.Join(cgroupRoot, c)); err != nil {
			return 0
		}
	}
	return 1
}

// ownCgroups maps each v1 controller to this process's path in it.
func ownCgroups() (map[string]string, error) {
	f, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
		if parts[1] == "" {
			out[""] = parts[2]
		}
	}
	return out, sc.Err()
}

// v1 controllers a container uses; cpuacct gives CPU usage for stats.
var v1Controllers = []string{"memory", "pids", "cpu", "cpuacct", "freezer"}

// newCgroup creates the container's control group under the creating
// process's own (v1) or under openagent/ at the root (v2, whose
// no-internal-processes rule keeps it out of the worker's own group), and
// writes the limits.
func newCgroup(id string, r driver.Resources) (*cgroup, error) {
	switch cgroupVersion() {
	case 1:
		own, err := ownCgroups()
		if err != nil {
			return nil, err
		}
		cg := &cgroup{Paths: map[string]string{}}
		for _, c := range v1Controllers {
			base := filepath.Join(cgroupRoot, c)
			if _, err := os.Stat(base); err != nil {
				if c == "cpuacct" || c == "freezer" {
					continue // optional: stats and pause fall back
				}
				return nil, fmt.Errorf("cgroup v1 controller %s: %w", c, err)
			}
			dir := filepath.Join(base, own[c], "openagent", id)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return nil, err
			}
			cg.Paths[c] = dir
		}
		return cg, cg.limit(r)
	case 2:
		parent := filepath.Join(cgroupRoot, "openagent")
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, err
		}
		for _, p := range []string{cgroupRoot, parent} {
			if err := os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory +pids +cpu"), 0); err != nil {
				return nil, fmt.Errorf("enable controllers in %s: %w", p, err)
			}
		}
		dir := filepath.Join(parent, id)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cg := &cgroup{V2: true, Paths: map[string]string{"": dir}}
		return cg, cg.limit(r)
	}
	return nil, errors.New("no usable cgroup hierarchy")
}

func (cg *cgroup) write(ctrl, file, value string) error {
	dir, ok := cg.Paths[ctrl]
	if !ok {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0); err != nil {
		return fmt.Errorf("cgroup %s: %w", file, err)
	}
	return nil
}

func (cg *cgroup) limit(r driver.Resources) error {
	mem := strconv.FormatInt(r.MemoryMB<<20, 10)
	const period = 100000
	quota := strconv.FormatInt(int64(r.CPU*period), 10)
	pids := strconv.FormatInt(r.Pids, 10)
	if cg.V2 {
		for file, v := range map[string]string{"memory.max": mem, "memory.swap.max": "0", "cpu.max": quota + " " + strconv.Itoa(period), "pids.max": pids} {
			if err := cg.write("", file, v); err != nil && file != "memory.swap.max" {
				return err
			}
		}
		return nil
	}
	if err := cg.write("memory", "memory.limit_in_bytes", mem); err != nil {
		return err
	}
	// No swap: the memory+swap limit equals the memory limit, where the
	// kernel accounts swap at all.
	if _, err := os.Stat(filepath.Join(cg.Paths["memory"], "memory.memsw.limit_in_bytes")); err == nil {
		if err := cg.write("memory", "memory.memsw.limit_in_bytes", mem); err != nil {
			return err
		}
	}
	if err := cg.write("cpu", "cpu.cfs_period_us", strconv.Itoa(period)); err != nil {
		return err
	}
	if err := cg.write("cpu", "cpu.cfs_quota_us", quota); err != nil {
		return err
	}
	return cg.write("pids", "pids.max", pids)
}

// join moves a process into every controller of the group.
func (cg *cgroup) join(pid int) error {
	for c := range cg.Paths {
		if err := cg.write(c, "cgroup.procs", strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// returnPath opens, for each v1 controller of the group, the
// cgroup.procs of the calling process's own group: writing a pid there
// later, once the root has changed, moves that process back out.
func (cg *cgroup) returnPath() ([]*os.File, error) {
	own, err := ownCgroups()
	if err != nil {
		return nil, err
	}
	var out []*os.File
	for c := range cg.Paths {
		f, err := os.OpenFile(filepath.Join(cgroupRoot, c, own[c], "cgroup.procs"), os.O_WRONLY, 0)
		if err != nil {
			for _, f := range out {
				f.Close()
			}
			return nil, err
		}
		out = append(out, f)
	}
	return out, nil
}

func (cg *cgroup) read(ctrl, file string) string {
	b, err := os.ReadFile(filepath.Join(cg.Paths[ctrl], file))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// field reads "key value" lines of a flat-keyed file.
func (cg *cgroup) field(ctrl, file, key string) (uint64, bool) {
	for _, line := range strings.Split(cg.read(ctrl, file), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// oomKills returns how often the kernel OOM-killed a process of the group.
func (cg *cgroup) oomKills() uint64 {
	if cg.V2 {
		n, _ := cg.field("", "memory.events", "oom_kill")
		return n
	}
	n, _ := cg.field("memory", "memory.oom_control", "oom_kill")
	return n
}

// procs lists the processes in the group.
// procs lists the processes of the group and of the groups below it
// (an exec's, see sub).
func (cg *cgroup) procs() []int {
	ctrl := "pids"
	if cg.V2 {
		ctrl = ""
	}
	var out []int
	_ = filepath.WalkDir(cg.Paths[ctrl], func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				out = append(out, pid)
			}
		}
		return nil
	})
	return out
}

// sub makes a group below this one, in every controller: an exec's, so
// that its timeout can end everything it started (processes in a session
// of their own too), still within the container's limits, which hold for
// the groups below.
func (cg *cgroup) sub(name string) (*cgroup, error) {
	out := &cgroup{V2: cg.V2, Paths: map[string]string{}}
	for c, dir := range cg.Paths {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, err
		}
		out.Paths[c] = d
	}
	return out, nil
}

// removeIfEmpty removes a group below the container's once nothing is in
// it; processes an exec left running (a server it started) keep theirs
// until the container ends.
func (cg *cgroup) removeIfEmpty() {
	for _, dir := range cg.Paths {
		_ = os.Remove(dir)
	}
}

// killAll SIGKILLs every process of the group, including ones that left
// the process group.
func (cg *cgroup) killAll() {
	if cg.V2 {
		if cg.write("", "cgroup.kill", "1") == nil {
			return
		}
	}
	for _, pid := range cg.procs() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// usage returns cumulative CPU time, memory in use and the number of pids.
func (cg *cgroup) usage() (cpu time.Duration, mem, pids uint64) {
	parse := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	if cg.V2 {
		us, _ := cg.field("", "cpu.stat", "usage_usec")
		return time.Duration(us) * time.Microsecond, parse(cg.read("", "memory.current")), parse(cg.read("", "pids.current"))
	}
	return time.Duration(parse(cg.read("cpuacct", "cpuacct.usage"))), parse(cg.read("memory", "memory.usage_in_bytes")), parse(cg.read("pids", "pids.current"))
}

// freeze freezes or thaws every process of the group. It reports false when
// the machine has no freezer for it.
func (cg *cgroup) freeze(frozen bool) (bool, error) {
	if cg.V2 {
		v := "0"
		if frozen {
			v = "1"
		}
		return true, cg.write("", "cgroup.freeze", v)
	}
	if _, ok := cg.Paths["freezer"]; !ok {
		return false, nil
	}
	v := "THAWED"
	if frozen {
		v = "FROZEN"
	}
	return true, cg.write("freezer", "freezer.state", v)
}

// destroy removes the group's directories once its processes are gone.
func (cg *cgroup) destroy() {
	for _, dir := range cg.Paths {
		// The groups below first: a group with children cannot go.
		if subs, err := os.ReadDir(dir); err == nil {
			for _, e := range subs {
				if e.IsDir() {
					_ = os.Remove(filepath.Join(dir, e.Name()))
				}
			}
		}
		for range 50 {
			if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}
