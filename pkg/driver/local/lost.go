package local

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Lost implements driver.LostFinder. A shim carries its container's
// directory in its environment and leads a session of its own that holds
// the container's processes. A shim of this driver whose directory is gone
// runs a container nobody can see, stop or read the output of: its whole
// session is killed and the container reported lost.
func (d *Driver) Lost(ctx context.Context) ([]driver.LostContainer, error) {
	prefix := []byte(envDir + "=" + filepath.Join(d.root, "containers") + string(filepath.Separator))
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, driver.Errorf("lost", "", driver.ErrUnavailable, "%v", err)
	}
	shims := map[int]string{} // session leader pid → container id
	sessions := map[int][]int{}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		sid, ok := sessionOf(pid)
		if !ok {
			continue
		}
		sessions[sid] = append(sessions[sid], pid)
		if sid != pid {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(env, []byte{0}) {
			if id, ok := bytes.CutPrefix(kv, prefix); ok && validName.Match(id) {
				shims[pid] = string(id)
			}
		}
	}
	var lost []driver.LostContainer
	for pid, id := range shims {
		if _, err := os.Stat(filepath.Join(d.dir(id), metaFile)); !errors.Is(err, os.ErrNotExist) {
			continue // known, or being created
		}
		for _, p := range sessions[pid] {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		lost = append(lost, driver.LostContainer{ID: id, Reason: "its state directory " + d.dir(id) +
			" is gone, so its output and exit could not be followed; its processes were killed"})
	}
	return lost, nil
}

// sessionOf reads a process's session id from /proc/PID/stat.
func sessionOf(pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	// pid (comm) state ppid pgrp session ...; comm may hold spaces and ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 4 {
		return 0, false
	}
	sid, err := strconv.Atoi(f[3])
	return sid, err == nil
}
