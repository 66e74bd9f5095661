package driver

import (
	"context"
	"fmt"
	"time"
)

// Probes are a container's startup, liveness and readiness probes, run by
// its host's worker (not the runtime) while it runs: startup until it
// passes (the others wait for it; failing it kills the run), liveness
// after (failing kills the run, which its restart policy may start again),
// readiness after (whether the container takes work, shown by the API).
type Probes struct {
	Startup   *Probe `json:"startup,omitempty"`
	Liveness  *Probe `json:"liveness,omitempty"`
	Readiness *Probe `json:"readiness,omitempty"`
}

// Probe is one check: a command run in the container (exit 0 passes), an
// HTTP GET of a port and path on its address (2xx and 3xx pass) or a TCP
// connection to a port; exactly one of the three.
type Probe struct {
	Exec []string  `json:"exec,omitempty"`
	HTTP *HTTPGet  `json:"http,omitempty"`
	TCP  *TCPCheck `json:"tcp,omitempty"`
	// IntervalMs between checks (10s when unset), TimeoutMs for one (1s),
	// FailureThreshold failures in a row that fail the probe (3),
	// InitialDelayMs before the first.
	IntervalMs       int64 `json:"intervalMs,omitempty"`
	TimeoutMs        int64 `json:"timeoutMs,omitempty"`
	FailureThreshold int   `json:"failureThreshold,omitempty"`
	InitialDelayMs   int64 `json:"initialDelayMs,omitempty"`
}

// HTTPGet is an HTTP probe's request.
type HTTPGet struct {
	Port int    `json:"port"`
	Path string `json:"path,omitempty"`
}

// TCPCheck is a TCP probe's port.
type TCPCheck struct {
	Port int `json:"port"`
}

// Interval, Timeout, Threshold and Delay are the probe's settings with
// their defaults.
func (p *Probe) Interval() time.Duration { return msOr(p.IntervalMs, 10*time.Second) }
func (p *Probe) Timeout() time.Duration  { return msOr(p.TimeoutMs, time.Second) }
func (p *Probe) Delay() time.Duration    { return msOr(p.InitialDelayMs, 0) }
func (p *Probe) Threshold() int {
	if p.FailureThreshold <= 0 {
		return 3
	}
	return p.FailureThreshold
}

func msOr(ms int64, def time.Duration) time.Duration {
	if ms <= 0 {
		return def
	}
	return time.Duration(ms) * time.Millisecond
}

func (p *Probe) validate(field string) error {
	kinds := 0
	if len(p.Exec) > 0 {
		kinds++
	}
	for _, port := range []*int{portOf(p.HTTP), portOfTCP(p.TCP)} {
		if port == nil {
			continue
		}
		kinds++
		if *port < 1 || *port > 65535 {
			return &ConfigError{Field: field + ".port", Message: fmt.Sprintf("must be a port from 1 to 65535, got %d", *port)}
		}
	}
	if kinds != 1 {
		return &ConfigError{Field: field, Message: "needs exactly one of exec, http and tcp"}
	}
	if p.IntervalMs < 0 || p.TimeoutMs < 0 || p.FailureThreshold < 0 || p.InitialDelayMs < 0 {
		return &ConfigError{Field: field, Message: "interval, timeout, threshold and delay must not be negative"}
	}
	if p.IntervalMs > 0 && p.IntervalMs < 100 {
		return &ConfigError{Field: field + ".intervalMs", Message: fmt.Sprintf("at least 100, got %d", p.IntervalMs)}
	}
	return nil
}

func portOf(h *HTTPGet) *int {
	if h == nil {
		return nil
	}
	return &h.Port
}

func portOfTCP(t *TCPCheck) *int {
	if t == nil {
		return nil
	}
	return &t.Port
}

// Validate checks each probe.
func (ps *Probes) Validate() error {
	for name, p := range map[string]*Probe{"startup": ps.Startup, "liveness": ps.Liveness, "readiness": ps.Readiness} {
		if p != nil {
			if err := p.validate("probes." + name); err != nil {
				return err
			}
		}
	}
	return nil
}

// Addresser is a driver that says at what address the host reaches a
// container's network, for the worker's http and tcp probes. A driver
// without it, or a container it cannot reach, takes exec probes only.
type Addresser interface {
	Address(ctx context.Context, id string) (string, error)
}
