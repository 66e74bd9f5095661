package orchestrator

import (
	"errors"
	"testing"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
)

// The admission policy refuses every escape vector a request can ask for,
// naming the field, and lets ordinary requests through.
func TestAdmit(t *testing.T) {
	vol := func(src string) func(*driver.ContainerConfig) {
		return func(c *driver.ContainerConfig) { c.Volumes = []driver.VolumeMount{{Source: src, Target: "/data"}} }
	}
	for _, tc := range []struct {
		name  string
		edit  func(*driver.ContainerConfig)
		field string // "" when admitted
	}{
		{"the defaults", func(*driver.ContainerConfig) {}, ""},
		{"a harmless capability", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"NET_BIND_SERVICE"} }, ""},
		{"SYS_ADMIN", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"CHOWN", "SYS_ADMIN"} }, "spec.security.capAdd[1]"},
		{"CAP_ prefixed", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"CAP_SYS_PTRACE"} }, "spec.security.capAdd[0]"},
		{"ALL", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"ALL"} }, "spec.security.capAdd[0]"},
		{"the host's root", vol("/"), "spec.volumes[0].source"},
		{"the docker socket", vol("/var/run/docker.sock"), "spec.volumes[0].source"},
		{"a path that cleans to /etc", vol("/tmp/../etc/shadow"), "spec.volumes[0].source"},
		{"/proc", vol("/proc/1/root"), "spec.volumes[0].source"},
		{"the protected data directory", vol("/srv/openagent/nats"), "spec.volumes[0].source"},
		{"a name that only starts like /etc", vol("/etcetera"), ""},
		{"an ordinary directory", vol("/srv/work"), ""},
		{"a named volume, whatever its name", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountVolume, Source: "etc", Target: "/data"}}
		}, ""},
		{"the host network", func(c *driver.ContainerConfig) { c.Network = "host" }, "spec.network"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := driver.DefaultConfig()
			spec.Image = "fake"
			tc.edit(&spec)
			err := admit(spec, []string{"/srv/openagent"})
			var got *api.Error
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("refused: %v; want admitted", err)
			case tc.field != "" && (!errors.As(err, &got) || got.Field != tc.field || got.Kind != api.KindPermission):
				t.Fatalf("got %#v; want permission refused naming %s", err, tc.field)
			}
		})
	}
}
