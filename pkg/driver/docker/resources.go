package docker

import (
	"context"
	"time"

	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/api/types/volume"
	"github.com/docker/docker/errdefs"

	"github.com/openagent/orchestrator/pkg/driver"
)

func (d *Driver) scoped(labels map[string]string) map[string]string {
	out := map[string]string{LabelScope: d.cfg.Scope}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

func unscoped(labels map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range labels {
		if k != LabelScope {
			out[k] = v
		}
	}
	return out
}

// CreateVolume implements driver.Driver.
func (d *Driver) CreateVolume(ctx context.Context, name string, labels map[string]string) (*driver.Volume, error) {
	if _, err := d.cli.VolumeInspect(ctx, name); err == nil {
		return nil, driver.Errorf("create-volume", name, driver.ErrAlreadyExists, "volume %q exists", name)
	}
	v, err := d.cli.VolumeCreate(ctx, volume.CreateOptions{Name: name, Labels: d.scoped(labels)})
	if err != nil {
		return nil, kind("create-volume", name, err)
	}
	created, _ := time.Parse(time.RFC3339, v.CreatedAt)
	return &driver.Volume{Name: v.Name, Labels: unscoped(v.Labels), Path: v.Mountpoint, CreatedAt: created}, nil
}

// RemoveVolume implements driver.Driver; the engine refuses a volume in
// use with a conflict.
func (d *Driver) RemoveVolume(ctx context.Context, name string) error {
	v, err := d.cli.VolumeInspect(ctx, name)
	if errdefs.IsNotFound(err) || err == nil && v.Labels[LabelScope] != d.cfg.Scope {
		return driver.Errorf("remove-volume", name, driver.ErrNotFound, "no volume %q", name)
	}
	return kind("remove-volume", name, d.cli.VolumeRemove(ctx, name, false))
}

// ListVolumes implements driver.Driver.
func (d *Driver) ListVolumes(ctx context.Context) ([]*driver.Volume, error) {
	res, err := d.cli.VolumeList(ctx, volume.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelScope+"="+d.cfg.Scope))})
	if err != nil {
		return nil, kind("list-volumes", "", err)
	}
	var out []*driver.Volume
	for _, v := range res.Volumes {
		created, _ := time.Parse(time.RFC3339, v.CreatedAt)
		out = append(out, &driver.Volume{Name: v.Name, Labels: unscoped(v.Labels), Path: v.Mountpoint, CreatedAt: created})
	}
	return out, nil
}

// CreateNetwork implements driver.Driver.
func (d *Driver) CreateNetwork(ctx context.Context, name string, labels map[string]string) (*driver.Network, error) {
	if _, err := d.cli.NetworkInspect(ctx, name, network.InspectOptions{}); err == nil {
		return nil, driver.Errorf("create-network", name, driver.ErrAlreadyExists, "network %q exists", name)
	}
	res, err := d.cli.NetworkCreate(ctx, name, network.CreateOptions{Labels: d.scoped(labels)})
	if err != nil {
		return nil, kind("create-network", name, err)
	}
	return &driver.Network{Name: name, ID: res.ID, Labels: labels}, nil
}

// RemoveNetwork implements driver.Driver. The engine removes a network
// that a stopped container names; that container could not start again,
// so any container of this driver naming it counts as using it.
func (d *Driver) RemoveNetwork(ctx context.Context, name string) error {
	n, err := d.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if errdefs.IsNotFound(err) || err == nil && n.Labels[LabelScope] != d.cfg.Scope {
		return driver.Errorf("remove-network", name, driver.ErrNotFound, "no network %q", name)
	}
	all, err := d.List(ctx, driver.Filter{})
	if err != nil {
		return err
	}
	for _, c := range all {
		if c.Config.Network == name {
			return driver.Errorf("remove-network", name, driver.ErrConflict, "network %q is used by %s", name, c.ID)
		}
	}
	return kind("remove-network", name, d.cli.NetworkRemove(ctx, name))
}

// ListNetworks implements driver.Driver.
func (d *Driver) ListNetworks(ctx context.Context) ([]*driver.Network, error) {
	ns, err := d.cli.NetworkList(ctx, network.ListOptions{Filters: filters.NewArgs(filters.Arg("label", LabelScope+"="+d.cfg.Scope))})
	if err != nil {
		return nil, kind("list-networks", "", err)
	}
	var out []*driver.Network
	for _, n := range ns {
		out = append(out, &driver.Network{Name: n.Name, ID: n.ID, Labels: unscoped(n.Labels)})
	}
	return out, nil
}
