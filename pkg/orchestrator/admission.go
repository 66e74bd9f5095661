package orchestrator

import (
	"fmt"
	"slices"
	"strings"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
)

// admit applies the admission policy: it refuses the escape vectors a
// request could ask for. The error, an *api.Error of kind permission,
// names the field.
func admit(spec driver.ContainerConfig, protected []string) error {
	for i, c := range spec.Security.CapAdd {
		if slices.Contains(driver.DangerousCapabilities, strings.TrimPrefix(c, "CAP_")) {
			return &api.Error{Kind: api.KindPermission, Field: fmt.Sprintf("spec.security.capAdd[%d]", i),
				Message: fmt.Sprintf("capability %s lets a container take over its host; refused by policy", c)}
		}
	}
	for i, v := range spec.Volumes {
		if v.Type == driver.MountVolume {
			continue
		}
		// The path as written; the worker checks it again as it resolves on
		// its host, symbolic links followed.
		if why := driver.DeniedHostPath(v.Source, protected); why != "" {
			return &api.Error{Kind: api.KindPermission, Field: fmt.Sprintf("spec.volumes[%d].source", i),
				Message: fmt.Sprintf("mounting %s from the host is refused by policy (%s)", v.Source, why)}
		}
	}
	if spec.Network == "host" {
		return &api.Error{Kind: api.KindPermission, Field: "spec.network", Message: "the host's network namespace is refused by policy"}
	}
	return nil
}
