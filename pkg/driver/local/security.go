package local

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/openagent/orchestrator/pkg/driver"
)

// capabilities by name, as in capabilities(7) without the CAP_ prefix.
var capabilities = map[string]int{
	"CHOWN": unix.CAP_CHOWN, "DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"FOWNER": unix.CAP_FOWNER, "FSETID": unix.CAP_FSETID, "KILL": unix.CAP_KILL, "SETGID": unix.CAP_SETGID,
	"SETUID": unix.CAP_SETUID, "SETPCAP": unix.CAP_SETPCAP, "LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW, "IPC_LOCK": unix.CAP_IPC_LOCK,
	"IPC_OWNER": unix.CAP_IPC_OWNER, "SYS_MODULE": unix.CAP_SYS_MODULE, "SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"SYS_CHROOT": unix.CAP_SYS_CHROOT, "SYS_PTRACE": unix.CAP_SYS_PTRACE, "SYS_PACCT": unix.CAP_SYS_PACCT,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "SYS_BOOT": unix.CAP_SYS_BOOT, "SYS_NICE": unix.CAP_SYS_NICE,
	"SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "SYS_TIME": unix.CAP_SYS_TIME, "SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"MKNOD": unix.CAP_MKNOD, "LEASE": unix.CAP_LEASE, "AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "SETFCAP": unix.CAP_SETFCAP, "MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"MAC_ADMIN": unix.CAP_MAC_ADMIN, "SYSLOG": unix.CAP_SYSLOG, "WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "AUDIT_READ": unix.CAP_AUDIT_READ, "PERFMON": unix.CAP_PERFMON,
	"BPF": unix.CAP_BPF, "CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// keptCapabilities returns the capabilities left in the bounding set: all
// of them minus CapDrop (ALL drops every one), plus CapAdd.
func keptCapabilities(s driver.Security) (map[int]bool, error) {
	kept := map[int]bool{}
	if !slices.Contains(s.CapDrop, "ALL") {
		for _, c := range capabilities {
			kept[c] = true
		}
		for _, name := range s.CapDrop {
			c, ok := capabilities[strings.TrimPrefix(name, "CAP_")]
			if !ok {
				return nil, fmt.Errorf("security.capDrop: unknown capability %q", name)
			}
			delete(kept, c)
		}
	}
	for _, name := range s.CapAdd {
		c, ok := capabilities[strings.TrimPrefix(name, "CAP_")]
		if !ok {
			return nil, fmt.Errorf("security.capAdd: unknown capability %q", name)
		}
		kept[c] = true
	}
	return kept, nil
}

// resolveUser turns "uid[:gid]" or a user name into ids.
func resolveUser(spec string) (uid, gid int, err error) {
	name, group, hasGroup := strings.Cut(spec, ":")
	if uid, err = strconv.Atoi(name); err != nil {
		u, lerr := user.Lookup(name)
		if lerr != nil {
			return 0, 0, fmt.Errorf("security.user: %w", lerr)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
	} else {
		gid = uid
	}
	if hasGroup {
		if gid, err = strconv.Atoi(group); err != nil {
			g, lerr := user.LookupGroup(group)
			if lerr != nil {
				return 0, 0, fmt.Errorf("security.user: %w", lerr)
			}
			gid, _ = strconv.Atoi(g.Gid)
		}
	}
	if uid < 0 || gid < 0 {
		return 0, 0, fmt.Errorf("security.user: negative id in %q", spec)
	}
	return uid, gid, nil
}

// dropPrivileges applies no_new_privs, the capability bounding set and the
// user, on the calling (locked) thread, just before exec.
func dropPrivileges(s driver.Security, uid, gid int, root bool) error {
	if s.NoNewPrivileges {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	if !root {
		return nil // nothing to drop: checked at create
	}
	kept, err := keptCapabilities(s)
	if err != nil {
		return err
	}
	last := lastCapability()
	for c := 0; c <= last; c++ {
		if kept[c] {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	if uid != 0 || gid != 0 {
		if err := syscall.Setgroups(nil); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("setgid %d: %w", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("setuid %d: %w", uid, err)
		}
	}
	return nil
}

func lastCapability() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return unix.CAP_LAST_CAP
	}
	return n
}

type bindMount struct {
	src, dst string
	readOnly bool
	hostPath bool // a host path the worker resolved: mounted only as resolved
}

// hostDirs are what programs need of the host, shown read-only in a
// container's root; a directory the host has as a symbolic link (a merged
// /usr) is the same link there.
var hostDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// hostEtc are the files of the host's /etc a program may need, shown
// read-only; the users and groups are the container's own.
var hostEtc = []string{"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "nsswitch.conf", "mime.types"}

// devices are the host devices a container has.
var devices = []string{"null", "zero", "full", "random", "urandom", "tty"}

// setupMounts gives the process, in its own mount namespace, a root of
// its own: a tmpfs holding read-only views of what programs need of the
// host (hostDirs, a minimal /etc without the host's users, a few devices,
// /proc), a private /tmp, its work directory and its volumes; nothing else
// of the host (home directories, /root, /srv, /var, data directories,
// other containers) is there. The root is read-only when the config asks;
// the work directory, /tmp and writable volumes stay writable.
func setupMounts(dir string, m *meta) error {
	cfg := m.Container.Config
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("root tmpfs: %w", err)
	}
	in := func(p string) string { return filepath.Join(root, p) }
	bind := func(src, dst string, readOnly bool, file bool) error {
		if file {
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		} else if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", dst, err)
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, dst, err)
		}
		if readOnly {
			return setattr(dst, true)
		}
		return nil
	}
	for _, d := range hostDirs {
		fi, err := os.Lstat(d)
		switch {
		case err != nil:
			continue
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(d)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, in(d)); err != nil {
				return err
			}
		default:
			if err := bind(d, in(d), true, false); err != nil {
				return err
			}
		}
	}
	// A minimal /etc: the container's users, loopback, the dynamic
	// linker's cache.
	if err := os.MkdirAll(in("/etc"), 0o755); err != nil {
		return err
	}
	user := fmt.Sprintf("sandbox:x:%d:%d:sandbox:%s:/bin/sh\n", m.UID, m.GID, filepath.Join(dir, workDir))
	files := map[string]string{
		"passwd":      "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"group":       "root:x:0:\nnogroup:x:65534:\n",
		"hosts":       "127.0.0.1 localhost\n::1 localhost\n" + egressHosts(cfg.Egress),
		"resolv.conf": "",
		"hostname":    "sandbox\n",
	}
	if m.UID != 0 && m.UID != 65534 {
		files["passwd"] += user
		files["group"] += fmt.Sprintf("sandbox:x:%d:\n", m.GID)
	}
	for name, body := range files {
		if err := os.WriteFile(in("/etc/"+name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	for _, name := range hostEtc {
		src := "/etc/" + name
		fi, err := os.Stat(src)
		if err != nil {
			continue
		}
		if err := bind(src, in("/etc/"+name), true, !fi.IsDir()); err != nil {
			return err
		}
	}
	// /dev: a few devices, shared memory, the descriptors.
	if err := unix.Mount("tmpfs", in("/dev"), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		if err := os.MkdirAll(in("/dev"), 0o755); err != nil {
			return err
		}
		if err := unix.Mount("tmpfs", in("/dev"), "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
			return fmt.Errorf("/dev: %w", err)
		}
	}
	for _, d := range devices {
		if err := bind("/dev/"+d, in("/dev/"+d), false, true); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(in("/dev/shm"), 0o1777); err != nil {
		return err
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, in("/dev/"+name)); err != nil {
			return err
		}
	}
	// A procfs of its own that shows only the processes of the
	// container's user: the host's other processes (the control plane's,
	// with their command lines) are not listed.
	if err := os.MkdirAll(in("/proc"), 0o555); err != nil {
		return err
	}
	if err := unix.Mount("proc", in("/proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible"); err != nil {
		return fmt.Errorf("/proc: %w", err)
	}
	// The private /tmp, the work directory at its own path, the volumes.
	if err := bind(filepath.Join(dir, tmpDir), in("/tmp"), false, false); err != nil {
		return err
	}
	work := filepath.Join(dir, workDir)
	binds := []bindMount{{src: work, dst: work}}
	for _, v := range cfg.Volumes {
		src := v.Source
		if v.Type == driver.MountVolume {
			src = volumeData(filepath.Dir(filepath.Dir(dir)), v.Source)
		}
		binds = append(binds, bindMount{src: src, dst: filepath.Clean(v.Target), readOnly: v.ReadOnly, hostPath: v.Type != driver.MountVolume})
	}
	for _, b := range binds {
		if !b.hostPath {
			fi, err := os.Stat(b.src)
			if err != nil {
				return fmt.Errorf("volume %s: %w", b.src, err)
			}
			if err := bind(b.src, in(b.dst), false, !fi.IsDir()); err != nil {
				return err
			}
			continue
		}
		// The source is opened without following a symbolic link anywhere
		// on its path, and the mount is made from that descriptor: the
		// path the worker resolved and checked is the one mounted, even if
		// a component was swapped for a link since.
		fd, err := unix.Openat2(unix.AT_FDCWD, b.src, &unix.OpenHow{
			Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
		if errors.Is(err, unix.ELOOP) {
			return fmt.Errorf("volume %s: a symbolic link is on its path (the source changed since it was resolved and checked)", b.src)
		}
		if err != nil {
			return fmt.Errorf("volume %s: %w", b.src, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return fmt.Errorf("volume %s: %w", b.src, err)
		}
		err = bind(fmt.Sprintf("/proc/self/fd/%d", fd), in(b.dst), false, st.Mode&unix.S_IFMT != unix.S_IFDIR)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("volume %s: %w", b.src, err)
		}
	}
	if err := pivot(root); err != nil {
		return err
	}
	if cfg.Security.ReadOnlyRoot {
		if err := setattr("/", true); err != nil {
			return err
		}
	}
	// Read-only where asked, writable where not, whatever the root is.
	if err := setattr("/tmp", false); err != nil {
		return err
	}
	for _, b := range binds {
		if err := setattr(b.dst, b.readOnly); err != nil {
			return err
		}
	}
	for _, d := range hostDirs {
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			if err := setattr(d, true); err != nil {
				return err
			}
		}
	}
	return nil
}

// egressHosts are the lines of /etc/hosts that name what the policy
// resolved: a program inside finds the address it may reach by the name it
// was allowed by, with no resolver to ask.
func egressHosts(rules []driver.EgressRule) string {
	var b strings.Builder
	for _, r := range rules {
		if r.Host != "" {
			if p, err := r.Prefix(); err == nil && p.IsSingleIP() {
				fmt.Fprintf(&b, "%s %s\n", p.Addr(), r.Host)
			}
		}
	}
	return b.String()
}

// pivot makes root the root of this mount namespace and lets go of the
// host's.
func pivot(root string) error {
	old := filepath.Join(root, ".host")
	if err := os.MkdirAll(old, 0o700); err != nil {
		return err
	}
	if err := unix.PivotRoot(root, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.host", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("let go of the host's root: %w", err)
	}
	return os.Remove("/.host")
}

// setattr makes a mount, and the mounts below it, read-only or writable.
func setattr(path string, readOnly bool) error {
	attr := &unix.MountAttr{}
	if readOnly {
		attr.Attr_set = unix.MOUNT_ATTR_RDONLY
	} else {
		attr.Attr_clr = unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(-1, path, unix.AT_RECURSIVE, attr); err != nil {
		return fmt.Errorf("set read-only=%v on %s: %w", readOnly, path, err)
	}
	return nil
}
