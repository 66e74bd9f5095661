package docker

import (
	"context"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

var (
	_ driver.Driver     = (*Driver)(nil)
	_ driver.Reattacher = (*Driver)(nil)
	_ driver.Pauser     = (*Driver)(nil)
)

// Health implements driver.Driver.
func (d *Driver) Health(ctx context.Context) (*driver.Health, error) {
	if _, err := d.cli.Ping(ctx); err != nil {
		return &driver.Health{Status: "down", Message: err.Error(), Enforcement: d.Enforcement()}, nil
	}
	v, err := d.cli.ServerVersion(ctx)
	if err != nil {
		return nil, kind("health", "", err)
	}
	all, err := d.list(ctx)
	if err != nil {
		return nil, err
	}
	h := &driver.Health{Status: "ok", Version: "docker " + v.Version + " (API " + v.APIVersion + ")", Uptime: time.Since(d.started),
		Containers: len(all), Enforcement: d.Enforcement()}
	for _, c := range all {
		if c.State == "running" {
			h.Running++
		}
	}
	return h, nil
}

// Enforcement says what the engine enforces of each setting here.
func (d *Driver) Enforcement() []driver.Enforcement {
	e := func(s, how string) driver.Enforcement {
		return driver.Enforcement{Setting: s, Enforced: true, How: how}
	}
	disk := driver.Enforcement{Setting: "resources.diskMB", How: "storage driver " + d.storage + " cannot cap a container's writable layer (storage-opt size needs overlay2 on xfs with pquota, btrfs, zfs or devicemapper)"}
	if d.diskQuota {
		disk = e("resources.diskMB", "storage-opt size on "+d.storage)
	}
	return []driver.Enforcement{
		e("resources.cpu", "NanoCPUs (CFS quota)"),
		e("resources.memoryMB", "Memory with MemorySwap equal: no swap; the OOM kill is reported"),
		disk,
		e("resources.pids", "PidsLimit"),
		e("security.readOnlyRoot", "ReadonlyRootfs, with a 64 MB tmpfs on /tmp"),
		e("security.noNewPrivileges", "security-opt no-new-privileges"),
		e("security.user", "the container's user"),
		e("security.capabilities", "CapDrop and CapAdd"),
		e("volumes", "bind and volume mounts, read-only where asked"),
		e("network", "the container's network mode: none unless a network is asked for (or ports, which take the engine's bridge); the engine's networks reach the host's addresses, and the driver adds no filter"),
		{Setting: "egress", How: "no per-container egress filter: egress rules are refused"},
		e("ports", "port bindings"),
		e("restartPolicy", "the engine's restart policy"),
		e("healthCheck", "HEALTHCHECK"),
	}
}
