package orchestrator

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
)

// Capabilities that let a process escape or take over its host; no
// request may add them.
var dangerousCaps = []string{"ALL", "SYS_ADMIN", "SYS_MODULE", "SYS_RAWIO", "SYS_PTRACE", "SYS_BOOT", "SYS_TIME",
	"NET_ADMIN", "DAC_READ_SEARCH", "MAC_ADMIN", "MAC_OVERRIDE", "BPF", "PERFMON", "SYSLOG", "LINUX_IMMUTABLE"}

// Host paths whose mounting hands over the host.
var sensitivePaths = []string{"/etc", "/proc", "/sys", "/dev", "/boot", "/root", "/var/run/docker.sock",
	"/run/docker.sock", "/var/lib/docker", "/run/containerd", "/var/run"}

// admit applies the admission policy: it refuses the escape vectors a
// request could ask for. The error, an *api.Error of kind permission,
// names the field.
func admit(spec driver.ContainerConfig, protected []string) error {
	for i, c := range spec.Security.CapAdd {
		if slices.Contains(dangerousCaps, strings.TrimPrefix(c, "CAP_")) {
			return &api.Error{Kind: api.KindPermission, Field: fmt.Sprintf("spec.security.capAdd[%d]", i),
				Message: fmt.Sprintf("capability %s lets a container take over its host; refused by policy", c)}
		}
	}
	for i, v := range spec.Volumes {
		if v.Type == driver.MountVolume {
			continue
		}
		src := path.Clean(v.Source)
		for _, p := range slices.Concat(sensitivePaths, protected) {
			if src == "/" || src == p || strings.HasPrefix(src, p+"/") {
				return &api.Error{Kind: api.KindPermission, Field: fmt.Sprintf("spec.volumes[%d].source", i),
					Message: fmt.Sprintf("mounting %s from the host is refused by policy", v.Source)}
			}
		}
	}
	if spec.Network == "host" {
		return &api.Error{Kind: api.KindPermission, Field: "spec.network", Message: "the host's network namespace is refused by policy"}
	}
	return nil
}
