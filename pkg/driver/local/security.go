package local

import (
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
}

// setupMounts gives the process, in its own mount namespace, a private
// /tmp, its volumes, and a read-only view of everything else when the
// config asks for a read-only root. The work directory stays writable.
func setupMounts(dir string, m *meta) error {
	cfg := m.Container.Config
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	work := filepath.Join(dir, workDir)
	binds := []bindMount{{src: work, dst: work}}
	for _, v := range cfg.Volumes {
		src := v.Source
		if v.Type == driver.MountVolume {
			src = volumeData(filepath.Dir(filepath.Dir(dir)), v.Source)
		}
		binds = append(binds, bindMount{src: src, dst: filepath.Clean(v.Target), readOnly: v.ReadOnly})
	}
	// Mounting the private tmp over /tmp hides whatever lies below /tmp,
	// this container's own directory included when the driver keeps its
	// state there; such targets are mounted inside the private tmp instead.
	tmp := filepath.Join(dir, tmpDir)
	for _, b := range binds {
		target := b.dst
		if rel, ok := strings.CutPrefix(b.dst, "/tmp/"); ok {
			target = filepath.Join(tmp, rel)
		}
		if err := os.MkdirAll(target, 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", b.dst, err)
		}
		if err := unix.Mount(b.src, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", b.src, b.dst, err)
		}
	}
	if err := unix.Mount(tmp, "/tmp", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("private /tmp: %w", err)
	}
	setattr := func(path string, readOnly bool) error {
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
	if cfg.Security.ReadOnlyRoot {
		if err := setattr("/", true); err != nil {
			return err
		}
		if err := setattr("/tmp", false); err != nil {
			return err
		}
	}
	for _, b := range binds {
		if err := setattr(b.dst, b.readOnly); err != nil {
			return err
		}
	}
	return nil
}
