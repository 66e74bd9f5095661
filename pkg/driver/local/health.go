package local

import (
	"context"
	"fmt"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.Reattacher = (*Driver)(nil)
	_ driver.Pauser     = (*Driver)(nil)
)

// Version of the local driver.
const Version = "1"

// Stats implements driver.Driver, from the container's cgroup: CPU is
// sampled over 100ms.
func (d *Driver) Stats(ctx context.Context, id string) (*driver.Stats, error) {
	s, err := d.load("stats", id)
	if err != nil {
		return nil, err
	}
	c := s.container()
	st := &driver.Stats{Time: time.Now(), MemoryLimitBytes: uint64(c.Config.Resources.MemoryMB) << 20}
	if c.Status != driver.StatusRunning && c.Status != driver.StatusPaused {
		return st, nil
	}
	cg := s.run.Cgroup
	if cg == nil {
		st.Pids = 1 // the process group's leader; without cgroups the rest is not counted
		return st, nil
	}
	cpu0, _, _ := cg.usage()
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(100 * time.Millisecond):
	}
	cpu1, mem, pids := cg.usage()
	st.CPUPercent = 100 * float64(cpu1-cpu0) / float64(time.Since(t0))
	st.MemoryBytes, st.Pids, st.Time = mem, pids, time.Now()
	return st, nil
}

// ContainerHealth implements driver.Driver by running the check as an exec.
func (d *Driver) ContainerHealth(ctx context.Context, id string) (driver.HealthStatus, error) {
	s, err := d.load("health", id)
	if err != nil {
		return "", err
	}
	c := s.container()
	check := c.Config.HealthCheck
	if check == nil {
		return driver.HealthNone, nil
	}
	if c.Status != driver.StatusRunning {
		return driver.HealthUnhealthy, nil
	}
	res, err := d.Exec(ctx, id, driver.ExecOptions{Command: check.Command, Timeout: check.Timeout()})
	if err != nil {
		return driver.HealthUnhealthy, nil
	}
	if res.ExitCode == 0 {
		return driver.HealthHealthy, nil
	}
	return driver.HealthUnhealthy, nil
}

// Health implements driver.Driver.
func (d *Driver) Health(ctx context.Context) (*driver.Health, error) {
	all, err := d.List(ctx, driver.Filter{})
	if err != nil {
		return nil, err
	}
	h := &driver.Health{Status: "ok", Uptime: time.Since(d.started), Containers: len(all), Enforcement: Enforcement(), MinCPU: MinCPU}
	for _, c := range all {
		if c.Status == driver.StatusRunning {
			h.Running++
		}
	}
	cg := cgroupVersion()
	h.Version = fmt.Sprintf("local %s (cgroup v%d, uid %d)", Version, cg, uidNow())
	if cg == 0 {
		h.Version = fmt.Sprintf("local %s (no cgroups, uid %d)", Version, uidNow())
	}
	return h, nil
}

func networkHow(missing string) string {
	const alone = "each container has a network namespace of its own with loopback only; "
	if missing != "" {
		return alone + "named networks are refused: " + missing
	}
	return alone + "on a named network, a veth to the network's bridge: containers of one network reach each other, " +
		"nothing from a bridge reaches the host's own addresses (nftables input drop), nothing outside starts a connection in, " +
		"and a port carries only its container's address"
}

func egressHow(missing string) string {
	if missing != "" {
		return "egress rules are refused: " + missing
	}
	return "no default route unless egress rules are given; then only the listed IPv4 prefixes and ports (TCP and UDP) are forwarded, " +
		"masqueraded, by nftables rules keyed by the container's address; host names arrive resolved and are listed in /etc/hosts; " +
		"containers with egress and no network are isolated from one another"
}

// Enforcement says, for every setting, whether the local driver enforces
// it on this machine as this user, and how or why not.
func Enforcement() []driver.Enforcement {
	root, cg, tools := isRoot(), cgroupVersion(), networkTools()
	cgroups := root && cg != 0
	via := fmt.Sprintf("cgroup v%d", cg)
	e := func(setting string, enforced bool, how string) driver.Enforcement {
		return driver.Enforcement{Setting: setting, Enforced: enforced, How: how}
	}
	var out []driver.Enforcement
	if cgroups {
		out = append(out,
			e("resources.cpu", true, via+" CPU quota"),
			e("resources.memoryMB", true, via+" memory limit, no swap; the OOM kill is reported"),
			e("resources.pids", true, via+" pids limit"))
	} else {
		out = append(out,
			e("resources.cpu", false, "needs cgroups as root; not available here"),
			e("resources.memoryMB", true, "approximated by RLIMIT_AS per process (no cgroups as this user)"),
			e("resources.pids", true, "approximated by RLIMIT_NPROC, counted per user, not per container"))
	}
	out = append(out, e("resources.diskMB", false, "no per-container quota on a shared host filesystem; RLIMIT_FSIZE caps each file at the limit"))
	if root {
		out = append(out,
			e("security.readOnlyRoot", true, "private mount namespace, root mounted read-only recursively; work dir, /tmp and volumes writable"),
			e("security.user", true, "setuid/setgid with no supplementary groups before exec"),
			e("security.capabilities", true, "bounding set reduced to capAdd (added capabilities for root users only)"),
			e("volumes", true, "bind mounts in the container's mount namespace, read-only where asked"),
			e("network", tools == "", networkHow(tools)),
			e("egress", tools == "", egressHow(tools)),
			e("ports", false, "containers are reached on their network's addresses; port mappings on the host are refused"))
	} else {
		out = append(out,
			e("security.readOnlyRoot", false, "mount namespaces need root; host permissions apply"),
			e("security.user", true, "containers run as the worker's own user; other users are refused"),
			e("security.capabilities", true, "a non-root process has none; capAdd is refused"),
			e("volumes", false, "mounting needs root; volumes are refused"),
			e("network", false, "network namespaces need root: containers share the host's network; networks are refused"),
			e("egress", false, "network namespaces need root: containers share the host's network; egress rules are refused"),
			e("ports", false, "local containers share the host's network; port mappings are refused"))
	}
	return append(out,
		e("security.noNewPrivileges", true, "prctl PR_SET_NO_NEW_PRIVS before exec"),
		e("restartPolicy", false, "the driver never restarts a container by itself; policies other than \"no\" are refused"),
		e("healthCheck", true, "the check runs as an exec in the container when health is asked"),
	)
}
