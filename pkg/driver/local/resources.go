package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// A volume is a directory, root/volumes/NAME/data, with its labels beside
// it. A network is only a record: local containers share the host's
// network, which Health says.

func volumeData(root, name string) string { return filepath.Join(root, "volumes", name, "data") }

func (d *Driver) networkFile(name string) string {
	return filepath.Join(d.root, "networks", name+".json")
}

type record struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
}

// CreateVolume implements driver.Driver.
func (d *Driver) CreateVolume(ctx context.Context, name string, labels map[string]string) (*driver.Volume, error) {
	if !validName.MatchString(name) {
		return nil, driver.Errorf("create-volume", name, driver.ErrInvalid, "name must be letters, digits, '.', '_' or '-'")
	}
	dir := filepath.Join(d.root, "volumes", name)
	if err := os.Mkdir(dir, 0o711); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, driver.Errorf("create-volume", name, driver.ErrAlreadyExists, "volume %q exists", name)
		}
		return nil, driver.Errorf("create-volume", name, driver.ErrUnavailable, "%v", err)
	}
	rec := record{Name: name, Labels: labels, CreatedAt: time.Now().UTC()}
	data := volumeData(d.root, name)
	// Containers of any user share a volume, as on Docker; the sticky bit
	// keeps them from deleting each other's files.
	if err := os.Mkdir(data, 0o777); err != nil {
		return nil, driver.Errorf("create-volume", name, driver.ErrUnavailable, "%v", err)
	}
	if err := os.Chmod(data, 0o1777); err != nil {
		return nil, driver.Errorf("create-volume", name, driver.ErrUnavailable, "%v", err)
	}
	if err := writeJSON(filepath.Join(dir, "volume.json"), rec); err != nil {
		return nil, driver.Errorf("create-volume", name, driver.ErrUnavailable, "%v", err)
	}
	return &driver.Volume{Name: name, Labels: labels, Path: data, CreatedAt: rec.CreatedAt}, nil
}

// RemoveVolume implements driver.Driver.
func (d *Driver) RemoveVolume(ctx context.Context, name string) error {
	dir := filepath.Join(d.root, "volumes", name)
	if _, err := os.Stat(dir); !validName.MatchString(name) || err != nil {
		return driver.Errorf("remove-volume", name, driver.ErrNotFound, "no volume %q", name)
	}
	users, err := d.users(ctx, func(c *driver.ContainerConfig) bool {
		return slices.ContainsFunc(c.Volumes, func(v driver.VolumeMount) bool { return v.Type == driver.MountVolume && v.Source == name })
	})
	if err != nil {
		return err
	}
	if users != "" {
		return driver.Errorf("remove-volume", name, driver.ErrConflict, "volume %q is used by %s", name, users)
	}
	if err := os.RemoveAll(dir); err != nil {
		return driver.Errorf("remove-volume", name, driver.ErrUnavailable, "%v", err)
	}
	return nil
}

// ListVolumes implements driver.Driver.
func (d *Driver) ListVolumes(ctx context.Context) ([]*driver.Volume, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "volumes"))
	if err != nil {
		return nil, driver.Errorf("list-volumes", "", driver.ErrUnavailable, "%v", err)
	}
	var out []*driver.Volume
	for _, e := range entries {
		var rec record
		if readJSON(filepath.Join(d.root, "volumes", e.Name(), "volume.json"), &rec) == nil {
			out = append(out, &driver.Volume{Name: rec.Name, Labels: rec.Labels, Path: volumeData(d.root, rec.Name), CreatedAt: rec.CreatedAt})
		}
	}
	return out, nil
}

// CreateNetwork implements driver.Driver.
func (d *Driver) CreateNetwork(ctx context.Context, name string, labels map[string]string) (*driver.Network, error) {
	if !validName.MatchString(name) || strings.HasPrefix(name, "_") || name == NetworkNone {
		return nil, driver.Errorf("create-network", name, driver.ErrInvalid, "name must be letters, digits, '.', '_' or '-', not starting with '_', and not none (the default: loopback only)")
	}
	if missing := networkTools(); missing != "" {
		return nil, driver.Errorf("create-network", name, driver.ErrNotSupported, "%s", missing)
	}
	f, err := os.OpenFile(d.networkFile(name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, driver.Errorf("create-network", name, driver.ErrAlreadyExists, "network %q exists", name)
		}
		return nil, driver.Errorf("create-network", name, driver.ErrUnavailable, "%v", err)
	}
	f.Close()
	rec := netRecord{record: record{Name: name, Labels: labels, CreatedAt: time.Now().UTC()}}
	d.netMu.Lock()
	err = d.makeNetwork(&rec)
	d.netMu.Unlock()
	if err == nil {
		err = writeJSON(d.networkFile(name), rec)
	}
	if err != nil {
		_ = os.Remove(d.networkFile(name))
		return nil, driver.Errorf("create-network", name, driver.ErrUnavailable, "%v", err)
	}
	return &driver.Network{Name: name, ID: rec.Bridge, Labels: labels}, nil
}

// RemoveNetwork implements driver.Driver.
func (d *Driver) RemoveNetwork(ctx context.Context, name string) error {
	if _, err := os.Stat(d.networkFile(name)); !validName.MatchString(name) || err != nil {
		return driver.Errorf("remove-network", name, driver.ErrNotFound, "no network %q", name)
	}
	users, err := d.users(ctx, func(c *driver.ContainerConfig) bool { return c.Network == name })
	if err != nil {
		return err
	}
	if users != "" {
		return driver.Errorf("remove-network", name, driver.ErrConflict, "network %q is used by %s", name, users)
	}
	var rec netRecord
	if err := readJSON(d.networkFile(name), &rec); err != nil {
		return driver.Errorf("remove-network", name, driver.ErrUnavailable, "%v", err)
	}
	if err := os.Remove(d.networkFile(name)); err != nil {
		return driver.Errorf("remove-network", name, driver.ErrUnavailable, "%v", err)
	}
	if err := d.dropBridge(&rec); err != nil {
		return driver.Errorf("remove-network", name, driver.ErrUnavailable, "bridge %s: %v", rec.Bridge, err)
	}
	return nil
}

// ListNetworks implements driver.Driver.
func (d *Driver) ListNetworks(ctx context.Context) ([]*driver.Network, error) {
	entries, err := os.ReadDir(filepath.Join(d.root, "networks"))
	if err != nil {
		return nil, driver.Errorf("list-networks", "", driver.ErrUnavailable, "%v", err)
	}
	var out []*driver.Network
	for _, e := range entries {
		var rec netRecord
		if strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), "_") && readJSON(filepath.Join(d.root, "networks", e.Name()), &rec) == nil {
			out = append(out, &driver.Network{Name: rec.Name, ID: rec.Bridge, Labels: rec.Labels})
		}
	}
	return out, nil
}

// users names the containers whose config matches.
func (d *Driver) users(ctx context.Context, uses func(*driver.ContainerConfig) bool) (string, error) {
	all, err := d.List(ctx, driver.Filter{})
	if err != nil {
		return "", err
	}
	var ids []string
	for _, c := range all {
		if uses(&c.Config) {
			ids = append(ids, c.ID)
		}
	}
	return strings.Join(ids, ", "), nil
}
