package fake

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// CreateVolume implements driver.Driver.
func (d *Driver) CreateVolume(ctx context.Context, name string, labels map[string]string) (*driver.Volume, error) {
	if err := d.before(ctx, "create-volume", name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.volumes[name] != nil {
		return nil, driver.Errorf("create-volume", name, driver.ErrAlreadyExists, "volume %q exists", name)
	}
	v := &driver.Volume{Name: name, Labels: labels, CreatedAt: time.Now()}
	d.volumes[name] = v
	out := *v
	return &out, nil
}

// RemoveVolume implements driver.Driver.
func (d *Driver) RemoveVolume(ctx context.Context, name string) error {
	if err := d.before(ctx, "remove-volume", name); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.volumes[name] == nil {
		return driver.Errorf("remove-volume", name, driver.ErrNotFound, "no volume %q", name)
	}
	if users := d.usersLocked(func(c *driver.ContainerConfig) bool {
		return slices.ContainsFunc(c.Volumes, func(v driver.VolumeMount) bool { return v.Type == driver.MountVolume && v.Source == name })
	}); users != "" {
		return driver.Errorf("remove-volume", name, driver.ErrConflict, "volume %q is used by %s", name, users)
	}
	delete(d.volumes, name)
	return nil
}

// ListVolumes implements driver.Driver.
func (d *Driver) ListVolumes(ctx context.Context) ([]*driver.Volume, error) {
	if err := d.before(ctx, "list-volumes", ""); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*driver.Volume
	for _, v := range d.volumes {
		c := *v
		out = append(out, &c)
	}
	return out, nil
}

// CreateNetwork implements driver.Driver.
func (d *Driver) CreateNetwork(ctx context.Context, name string, labels map[string]string) (*driver.Network, error) {
	if err := d.before(ctx, "create-network", name); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.networks[name] != nil {
		return nil, driver.Errorf("create-network", name, driver.ErrAlreadyExists, "network %q exists", name)
	}
	n := &driver.Network{Name: name, ID: "fake-net-" + name, Labels: labels}
	d.networks[name] = n
	out := *n
	return &out, nil
}

// RemoveNetwork implements driver.Driver.
func (d *Driver) RemoveNetwork(ctx context.Context, name string) error {
	if err := d.before(ctx, "remove-network", name); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.networks[name] == nil {
		return driver.Errorf("remove-network", name, driver.ErrNotFound, "no network %q", name)
	}
	if users := d.usersLocked(func(c *driver.ContainerConfig) bool { return c.Network == name }); users != "" {
		return driver.Errorf("remove-network", name, driver.ErrConflict, "network %q is used by %s", name, users)
	}
	delete(d.networks, name)
	return nil
}

// ListNetworks implements driver.Driver.
func (d *Driver) ListNetworks(ctx context.Context) ([]*driver.Network, error) {
	if err := d.before(ctx, "list-networks", ""); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*driver.Network
	for _, n := range d.networks {
		c := *n
		out = append(out, &c)
	}
	return out, nil
}

// usersLocked names the containers whose config matches; d.mu must be held.
func (d *Driver) usersLocked(uses func(*driver.ContainerConfig) bool) string {
	var ids []string
	for id, c := range d.containers {
		if uses(&c.c.Config) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return strings.Join(ids, ", ")
}
