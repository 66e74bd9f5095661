package driver

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// DangerousCapabilities are the capabilities that let a process escape or
// take over its host: no request may add them.
var DangerousCapabilities = []string{"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_BOOT", "SYS_TIME",
	"NET_ADMIN", "DAC_READ_SEARCH", "MAC_ADMIN", "MAC_OVERRIDE", "BPF", "PERFMON", "SYSLOG", "LINUX_IMMUTABLE"}

// SensitivePaths are host paths whose mounting hands over the host: no
// container may mount them or anything under them, nor the root itself.
var SensitivePaths = []string{"/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var/run/docker.sock",
	"/run/docker.sock", "/var/lib/docker", "/run/containerd", "/var/run", "/run"}

// DeniedHostPath says why a host path may not be mounted: it is the root,
// or a sensitive path or one of protected (such as a data directory), or
// under one; "" when it may. p is taken as it reads, cleaned: resolve it
// on its host first (ResolveHostPath) to see through symbolic links.
func DeniedHostPath(p string, protected []string) string {
	clean := path.Clean("/" + p)
	if clean == "/" {
		return "the host's root"
	}
	for _, d := range slices.Concat(SensitivePaths, protected) {
		if d == "" {
			continue
		}
		d = path.Clean(d)
		if clean == d || strings.HasPrefix(clean, d+"/") {
			return d
		}
	}
	return ""
}

// ResolveHostPath is the path a bind mount of p reaches on this host:
// absolute, every symbolic link followed (also through /proc/*/root and
// /proc/*/cwd, which are links), "..", "//" and a trailing slash gone. A
// path that does not exist resolves as far as it does.
func ResolveHostPath(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("host path %q is not absolute", p)
	}
	p = filepath.Clean(p)
	resolved, err := filepath.EvalSymlinks(p)
	if err == nil {
		return resolved, nil
	}
	// Resolve the part that exists and keep the rest as written: a
	// runtime that creates the rest creates it under what exists.
	dir, rest := filepath.Dir(p), filepath.Base(p)
	if dir == p {
		return p, nil
	}
	parent, err := ResolveHostPath(dir)
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, rest), nil
}
