package driver

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// ContainerConfig is what a container is made from. Start from
// DefaultConfig (decoding JSON does), then change what differs: the zero
// value of a limit is not "the default" but an invalid request.
type ContainerConfig struct {
	SessionID string            `json:"sessionId,omitempty"`
	Image     string            `json:"image"`
	Command   []string          `json:"command,omitempty"`
	Env       map[string]string `json:"env,omitempty"`
	// Secrets are environment variables whose values are secret: they reach
	// the driver and the process, and nothing else writes them down (the
	// control plane's events, records and views keep the names only; see
	// Redacted).
	Secrets   map[string]string `json:"secrets,omitempty"`
	Labels    map[string]string `json:"labels,omitempty"`
	Resources Resources         `json:"resources"`
	Volumes   []VolumeMount     `json:"volumes,omitempty"`
	Network   string            `json:"network,omitempty"`
	// Egress lists what the container may reach beyond its network; it
	// reaches nothing outside unless a rule lets it (see EgressRule).
	Egress        []EgressRule  `json:"egress,omitempty"`
	Security      Security      `json:"security"`
	Ports         []PortMapping `json:"ports,omitempty"`
	WorkingDir    string        `json:"workingDir,omitempty"`
	RestartPolicy RestartPolicy `json:"restartPolicy,omitempty"`
	HealthCheck   *HealthCheck  `json:"healthCheck,omitempty"`
	// Probes are run by the host's worker while the container runs.
	Probes *Probes `json:"probes,omitempty"`
}

// Resources are the limits of one container.
type Resources struct {
	CPU      float64 `json:"cpu"`            // cores, fractions allowed
	MemoryMB int64   `json:"memoryMB"`       // hard limit, no swap
	DiskMB   int64   `json:"diskMB"`         // writable layer
	Pids     int64   `json:"pids"`           // processes and threads
	GPUs     int64   `json:"gpus,omitempty"` // devices; a driver without them refuses any
}

// VolumeMount mounts a host path (bind) or a named volume into the container.
type VolumeMount struct {
	Type     MountType `json:"type,omitempty"` // bind when empty
	Source   string    `json:"source"`
	Target   string    `json:"target"` // absolute path inside the container
	ReadOnly bool      `json:"readOnly,omitempty"`
}

// MountType is bind or volume.
type MountType string

// Mount types.
const (
	MountBind   MountType = "bind"
	MountVolume MountType = "volume"
)

// Security settings of a container. DefaultConfig makes them strict.
type Security struct {
	ReadOnlyRoot    bool     `json:"readOnlyRoot"`
	NoNewPrivileges bool     `json:"noNewPrivileges"`
	User            string   `json:"user,omitempty"` // uid[:gid] or a name
	CapAdd          []string `json:"capAdd,omitempty"`
	CapDrop         []string `json:"capDrop,omitempty"`
}

// EgressRule lets a container reach an address or a prefix, on the listed
// ports (TCP and UDP) or on every port when none are listed. Host names are
// resolved by the control plane's policy before a driver sees a rule: To is
// then the resolved address and Host the name it came from, for the record.
type EgressRule struct {
	To    string `json:"to"`
	Ports []int  `json:"ports,omitempty"`
	Host  string `json:"host,omitempty"`
}

// Prefix returns the rule's destination as a prefix: an address is a
// prefix of its whole length.
func (r EgressRule) Prefix() (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(r.To); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(r.To)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR prefix", r.To)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// PortMapping publishes a container port on the host.
type PortMapping struct {
	ContainerPort int    `json:"containerPort"`
	HostPort      int    `json:"hostPort,omitempty"` // 0: any free port
	HostIP        string `json:"hostIP,omitempty"`
	Protocol      string `json:"protocol,omitempty"` // tcp when empty
}

// RestartPolicy says whether the runtime restarts a container that exited.
type RestartPolicy string

// Restart policies; the empty policy is RestartNo.
const (
	RestartNo        RestartPolicy = "no"
	RestartOnFailure RestartPolicy = "on-failure"
	RestartAlways    RestartPolicy = "always"
)

// HealthCheck runs a command inside the container; exit 0 means healthy.
type HealthCheck struct {
	Command    []string `json:"command"`
	IntervalMs int64    `json:"intervalMs,omitempty"`
	TimeoutMs  int64    `json:"timeoutMs,omitempty"`
	Retries    int      `json:"retries,omitempty"`
}

// Defaults from the original specification: small and locked down.
const (
	DefaultCPU      = 0.5
	DefaultMemoryMB = 512
	DefaultDiskMB   = 1024
	DefaultPids     = 100
	// DefaultUser is nobody: a uid that owns nothing on the host.
	DefaultUser = "65534:65534"
)

// DefaultConfig returns the secure defaults: cpu 0.5, memory 512 MB, disk
// 1024 MB, pids 100, read-only root, no new privileges, a non-root user and
// every capability dropped.
func DefaultConfig() ContainerConfig {
	return ContainerConfig{
		Resources: Resources{CPU: DefaultCPU, MemoryMB: DefaultMemoryMB, DiskMB: DefaultDiskMB, Pids: DefaultPids},
		Security: Security{
			ReadOnlyRoot:    true,
			NoNewPrivileges: true,
			User:            DefaultUser,
			CapDrop:         []string{"ALL"},
		},
		RestartPolicy: RestartNo,
	}
}

// UnmarshalJSON decodes onto DefaultConfig: a field the JSON leaves out
// keeps its default, and a field it sets to 0 is 0 (and invalid).
func (c *ContainerConfig) UnmarshalJSON(b []byte) error {
	type plain ContainerConfig
	p := plain(DefaultConfig())
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*c = ContainerConfig(p)
	return nil
}

// ConfigError names the field of a ContainerConfig that is wrong. It
// matches ErrInvalid.
type ConfigError struct {
	Field   string
	Message string
}

func (e *ConfigError) Error() string { return "driver: invalid config: " + e.Field + ": " + e.Message }

// Is reports whether target is ErrInvalid.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalid }

var (
	envKey   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	labelKey = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?$`)
	capName  = regexp.MustCompile(`^(ALL|[A-Z][A-Z_]*)$`)
)

// Validate checks a config and names the first field that is wrong.
func (c *ContainerConfig) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &ConfigError{Field: field, Message: fmt.Sprintf(format, args...)}
	}
	if strings.TrimSpace(c.SessionID) == "" {
		return bad("sessionId", "must not be empty")
	}
	if strings.TrimSpace(c.Image) == "" {
		return bad("image", "must not be empty")
	}
	r := c.Resources
	switch {
	case r.CPU <= 0:
		return bad("resources.cpu", "must be > 0 cores, got %g", r.CPU)
	case r.MemoryMB <= 0:
		return bad("resources.memoryMB", "must be > 0, got %d", r.MemoryMB)
	case r.DiskMB <= 0:
		return bad("resources.diskMB", "must be > 0, got %d", r.DiskMB)
	case r.Pids <= 0:
		return bad("resources.pids", "must be > 0, got %d", r.Pids)
	case r.GPUs < 0:
		return bad("resources.gpus", "must not be negative, got %d", r.GPUs)
	}
	for k := range c.Secrets {
		if !envKey.MatchString(k) {
			return bad("secrets."+k, "not a valid variable name (letters, digits and _, not starting with a digit)")
		}
		if _, both := c.Env[k]; both {
			return bad("secrets."+k, "is in env too; name a variable once")
		}
	}
	for k := range c.Env {
		if !envKey.MatchString(k) {
			return bad("env."+k, "not a valid variable name (letters, digits and _, not starting with a digit)")
		}
	}
	for k, v := range c.Labels {
		if !labelKey.MatchString(k) {
			return bad("labels."+k, "not a valid label key")
		}
		if len(v) > 4096 {
			return bad("labels."+k, "value longer than 4096 bytes")
		}
	}
	for i, v := range c.Volumes {
		f := fmt.Sprintf("volumes[%d]", i)
		switch v.Type {
		case "", MountBind:
			if !path.IsAbs(v.Source) {
				return bad(f+".source", "a bind mount's source must be an absolute host path, got %q", v.Source)
			}
		case MountVolume:
			if v.Source == "" || strings.Contains(v.Source, "/") {
				return bad(f+".source", "a volume's source must be a volume name, got %q", v.Source)
			}
		default:
			return bad(f+".type", "must be bind or volume, got %q", v.Type)
		}
		if !path.IsAbs(v.Target) {
			return bad(f+".target", "must be an absolute path, got %q", v.Target)
		}
		if path.Clean(v.Target) == "/" {
			return bad(f+".target", "must not be the root")
		}
	}
	if c.WorkingDir != "" && !path.IsAbs(c.WorkingDir) {
		return bad("workingDir", "must be an absolute path, got %q", c.WorkingDir)
	}
	for i, p := range c.Ports {
		f := fmt.Sprintf("ports[%d]", i)
		if p.ContainerPort < 1 || p.ContainerPort > 65535 {
			return bad(f+".containerPort", "must be 1-65535, got %d", p.ContainerPort)
		}
		if p.HostPort < 0 || p.HostPort > 65535 {
			return bad(f+".hostPort", "must be 0-65535, got %d", p.HostPort)
		}
		if p.Protocol != "" && p.Protocol != "tcp" && p.Protocol != "udp" {
			return bad(f+".protocol", "must be tcp or udp, got %q", p.Protocol)
		}
	}
	for i, r := range c.Egress {
		f := fmt.Sprintf("egress[%d]", i)
		if _, err := r.Prefix(); err != nil {
			return bad(f+".to", "%v (host names are resolved by the policy before a driver sees a rule)", err)
		}
		for j, p := range r.Ports {
			if p < 1 || p > 65535 {
				return bad(fmt.Sprintf("%s.ports[%d]", f, j), "must be 1-65535, got %d", p)
			}
		}
	}
	for i, cp := range slices.Concat(c.Security.CapAdd, c.Security.CapDrop) {
		if !capName.MatchString(cp) {
			return bad(fmt.Sprintf("security.capabilities[%d]", i), "%q is not a capability name like NET_BIND_SERVICE", cp)
		}
	}
	switch c.RestartPolicy {
	case "", RestartNo, RestartOnFailure, RestartAlways:
	default:
		return bad("restartPolicy", "must be no, on-failure or always, got %q", c.RestartPolicy)
	}
	if c.Probes != nil {
		if err := c.Probes.Validate(); err != nil {
			return err
		}
	}
	if h := c.HealthCheck; h != nil {
		if len(h.Command) == 0 {
			return bad("healthCheck.command", "must not be empty")
		}
		if h.IntervalMs < 0 || h.TimeoutMs < 0 || h.Retries < 0 {
			return bad("healthCheck", "interval, timeout and retries must not be negative")
		}
	}
	return nil
}

// Interval returns the health check's interval, 30s when unset.
func (h *HealthCheck) Interval() time.Duration {
	if h.IntervalMs == 0 {
		return 30 * time.Second
	}
	return time.Duration(h.IntervalMs) * time.Millisecond
}

// Timeout returns the health check's timeout, 10s when unset.
func (h *HealthCheck) Timeout() time.Duration {
	if h.TimeoutMs == 0 {
		return 10 * time.Second
	}
	return time.Duration(h.TimeoutMs) * time.Millisecond
}

// RedactedSecret stands for a secret's value wherever the control plane
// writes a config down.
const RedactedSecret = "(secret)"

// Redacted returns the config with its secrets' values replaced by
// RedactedSecret: what events, records and views hold.
func (c ContainerConfig) Redacted() ContainerConfig {
	if len(c.Secrets) == 0 {
		return c
	}
	out := make(map[string]string, len(c.Secrets))
	for k := range c.Secrets {
		out[k] = RedactedSecret
	}
	c.Secrets = out
	return c
}

// WithSecrets returns the config a runtime gets: the secrets merged into
// the environment.
func (c ContainerConfig) WithSecrets() ContainerConfig {
	if len(c.Secrets) == 0 {
		return c
	}
	env := make(map[string]string, len(c.Env)+len(c.Secrets))
	for k, v := range c.Env {
		env[k] = v
	}
	for k, v := range c.Secrets {
		env[k] = v
	}
	c.Env, c.Secrets = env, nil
	return c
}
