// Package driver is the contract every container runtime implements:
// docker, local processes and the fake used in tests live beneath it and
// import it, never each other.
//
// # Lifecycle
//
// A container is made by Create, runs its main process from Start until the
// process exits by itself (exited) or is stopped (stopped), can be started
// again from either, and is gone after Remove:
//
//	         Create          Start
//	(none) ─────────▶ created ─────▶ running ──(process exits)──▶ exited
//	                                  │  ▲                          │
//	                             Stop │  └──────── Start ───────────┤
//	                                  ▼                             │
//	                               stopped ────── Remove ───────────┴──▶ (none)
//
// Start on a running container and Stop on one that is not running are
// no-ops. Remove of a running container fails with ErrConflict unless
// forced. Every operation on an id the driver does not know fails with
// ErrNotFound naming the id.
//
// # Ids
//
// The caller chooses the container id (the orchestrator does, so that a
// retried create finds what the first attempt made). Create with an id that
// exists fails with ErrAlreadyExists.
//
// # Errors
//
// Every error matches one of the sentinels (ErrNotFound, ErrConflict,
// ErrInvalid, ErrResourceLimit, ErrTimeout, ErrPermission, ErrUnavailable,
// ErrNotSupported) with errors.Is; most are an *Error carrying the
// operation, the container id and whether a retry may succeed.
package driver

import (
	"context"
	"io"
	"iter"
	"time"
)

// Driver runs containers on one host. Implementations are safe for
// concurrent use. Every method takes a context: a deadline or cancellation
// ends a blocked call with the context's error.
type Driver interface {
	// Name is the driver's name as placement knows it: "docker", "local", "fake".
	Name() string

	// Create makes a container from cfg without starting it. Errors:
	// ErrInvalid (cfg), ErrAlreadyExists (id), ErrNotSupported (a setting
	// this driver cannot honour), ErrResourceLimit.
	Create(ctx context.Context, id string, cfg ContainerConfig) (*Container, error)
	// Start runs the main process. A running container is left alone.
	Start(ctx context.Context, id string) error
	// Stop sends SIGTERM and, once opts.Timeout has passed, SIGKILL (at once
	// when opts.Force). A container that is not running is left alone.
	Stop(ctx context.Context, id string, opts StopOptions) error
	// Remove deletes a container. A running one is refused with ErrConflict
	// unless opts.Force, which kills it first.
	Remove(ctx context.Context, id string, opts RemoveOptions) error
	// Get returns a container's current state.
	Get(ctx context.Context, id string) (*Container, error)
	// List returns the containers that match every set field of f.
	List(ctx context.Context, f Filter) ([]*Container, error)

	// Logs returns the container's output. Without Follow the sequence ends
	// at the end of what was written; with Follow it goes on until the
	// container stops running or ctx ends (the last pair then carries ctx's
	// error).
	Logs(ctx context.Context, id string, opts LogOptions) (iter.Seq2[LogEntry, error], error)
	// Exec runs a command inside a running container (ErrConflict if it is
	// not running). A command that outlives opts.Timeout is killed with its
	// children and reported with TimedOut; that is a result, not an error.
	Exec(ctx context.Context, id string, opts ExecOptions) (*ExecResult, error)
	// Wait blocks until the container is not running, then returns how its
	// main process ended. On a created container it waits for a start and
	// an end.
	Wait(ctx context.Context, id string) (*ExitStatus, error)
	// Stats samples a running container's resource use.
	Stats(ctx context.Context, id string) (*Stats, error)

	// Health reports the driver's own state: whether it can run
	// containers, its version, and which settings it really enforces.
	Health(ctx context.Context) (*Health, error)
	// ContainerHealth runs the container's health check, if it has one.
	ContainerHealth(ctx context.Context, id string) (HealthStatus, error)

	CreateVolume(ctx context.Context, name string, labels map[string]string) (*Volume, error)
	// RemoveVolume fails with ErrConflict while a container uses the volume.
	RemoveVolume(ctx context.Context, name string) error
	ListVolumes(ctx context.Context) ([]*Volume, error)
	CreateNetwork(ctx context.Context, name string, labels map[string]string) (*Network, error)
	// RemoveNetwork fails with ErrConflict while a container uses the network.
	RemoveNetwork(ctx context.Context, name string) error
	ListNetworks(ctx context.Context) ([]*Network, error)
}

// Reattacher is a driver that can find the containers it started before
// the worker restarted, without restarting them. Containers that exited
// meanwhile are returned as exited.
type Reattacher interface {
	Reattach(ctx context.Context) ([]*Container, error)
}

// LostFinder is a driver that can find the traces of containers whose
// state it lost (its state directory wiped, say) and that it therefore
// cannot adopt: processes still running, runtime objects without their
// record. It stops what it finds and reports each, so that nothing runs
// that nobody can see or stop.
type LostFinder interface {
	Lost(ctx context.Context) ([]LostContainer, error)
}

// LostContainer is a container a driver could not adopt, and why.
type LostContainer struct {
	ID     string
	Reason string
}

// Pauser is a driver that can freeze and thaw a container's processes.
type Pauser interface {
	Pause(ctx context.Context, id string) error
	Resume(ctx context.Context, id string) error
}

// Status is where a container is in its lifecycle; see the package comment.
// The zero value means unknown.
type Status int

// Container statuses.
const (
	StatusUnknown Status = iota
	StatusCreated
	StatusRunning
	StatusPaused
	StatusStopped // stopped on request
	StatusExited  // its main process ended by itself
)

var statusNames = [...]string{"unknown", "created", "running", "paused", "stopped", "exited"}

func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// MarshalText writes the status's name.
func (s Status) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a status's name; an unknown name is StatusUnknown.
func (s *Status) UnmarshalText(b []byte) error {
	*s = ParseStatus(string(b))
	return nil
}

// ParseStatus returns the status of a name, StatusUnknown if none.
func ParseStatus(name string) Status {
	for i, n := range statusNames {
		if n == name {
			return Status(i)
		}
	}
	return StatusUnknown
}

// Container is a container's identity, configuration and current state.
type Container struct {
	ID         string            `json:"id"`
	RuntimeID  string            `json:"runtimeId,omitempty"` // the runtime's own id (docker id, pid)
	Driver     string            `json:"driver"`
	SessionID  string            `json:"sessionId,omitempty"`
	Image      string            `json:"image"`
	Labels     map[string]string `json:"labels,omitempty"`
	Status     Status            `json:"status"`
	Config     ContainerConfig   `json:"config"`
	CreatedAt  time.Time         `json:"createdAt"`
	StartedAt  time.Time         `json:"startedAt,omitzero"`
	FinishedAt time.Time         `json:"finishedAt,omitzero"`
	ExitCode   int               `json:"exitCode"`
	OOMKilled  bool              `json:"oomKilled,omitempty"`
}

// Filter selects containers; set fields are combined with AND.
type Filter struct {
	SessionID string
	Status    Status            // StatusUnknown: any
	Labels    map[string]string // every pair must be present
}

// Match reports whether c matches every set field of f.
func (f Filter) Match(c *Container) bool {
	if f.SessionID != "" && c.SessionID != f.SessionID {
		return false
	}
	if f.Status != StatusUnknown && c.Status != f.Status {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := c.Labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// StopOptions says how to stop.
type StopOptions struct {
	Timeout time.Duration // grace period after SIGTERM; 0 means DefaultStopTimeout
	Force   bool          // SIGKILL at once
}

// DefaultStopTimeout is the grace period of a stop that sets none.
const DefaultStopTimeout = 10 * time.Second

// GracePeriod returns the timeout to wait after SIGTERM.
func (o StopOptions) GracePeriod() time.Duration {
	switch {
	case o.Force:
		return 0
	case o.Timeout <= 0:
		return DefaultStopTimeout
	}
	return o.Timeout
}

// RemoveOptions says how to remove.
type RemoveOptions struct {
	Force bool // kill a running container first
}

// Stream tells stdout from stderr.
type Stream string

// Streams.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// LogOptions selects output.
type LogOptions struct {
	Tail       int       // the last Tail lines only; 0: all
	Since      time.Time // lines written at or after Since only
	Timestamps bool      // set LogEntry.Time (entries always carry it where known)
	Follow     bool
}

// LogEntry is one line of output, without its newline.
type LogEntry struct {
	Stream Stream    `json:"stream"`
	Time   time.Time `json:"time,omitzero"`
	Line   string    `json:"line"`
}

// ExecOptions describe a command run inside a container.
type ExecOptions struct {
	Command    []string
	Env        map[string]string
	WorkingDir string
	Timeout    time.Duration // 0: no timeout beyond ctx
	Stdin      io.Reader     // nil: no input
	// Stdout and Stderr, when set, receive output as it is produced (the
	// streaming form); the result's Stdout and Stderr are then empty.
	Stdout, Stderr io.Writer
}

// ExecResult is how an exec ended.
type ExecResult struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
	Duration time.Duration
	TimedOut bool // killed when the timeout passed; ExitCode is then -1
}

// ExitStatus is how a container's main process ended.
type ExitStatus struct {
	ExitCode   int
	OOMKilled  bool
	Reason     string // "exited", "stopped", "oom-killed", "killed"
	FinishedAt time.Time
}

// Stats is one sample of a container's resource use.
type Stats struct {
	CPUPercent       float64 // of one core; 150 means one and a half cores
	MemoryBytes      uint64
	MemoryLimitBytes uint64
	Pids             uint64
	Time             time.Time
}

// HealthStatus is a container's health as its check reports it.
type HealthStatus string

// Health statuses.
const (
	HealthNone      HealthStatus = "none" // no check configured
	HealthStarting  HealthStatus = "starting"
	HealthHealthy   HealthStatus = "healthy"
	HealthUnhealthy HealthStatus = "unhealthy"
)

// Health is a driver's report on itself.
type Health struct {
	Status     string        `json:"status"` // "ok", "degraded", "down"
	Version    string        `json:"version"`
	Uptime     time.Duration `json:"uptime"`
	Running    int           `json:"running"`
	Containers int           `json:"containers"`
	// Enforcement lists, for every setting of ContainerConfig, whether this
	// driver on this machine really enforces it, and how or why not.
	Enforcement []Enforcement `json:"enforcement"`
	// MinCPU is the smallest cpu limit the driver can set, when it has one;
	// the orchestrator refuses less at request time.
	MinCPU  float64 `json:"minCpu,omitempty"`
	Message string  `json:"message,omitempty"`
}

// Enforcement is whether one setting really holds.
type Enforcement struct {
	Setting  string `json:"setting"` // "resources.memoryMB", "security.user", ...
	Enforced bool   `json:"enforced"`
	How      string `json:"how"` // the mechanism, or why it is not enforced
}

// Volume is a named volume.
type Volume struct {
	Name      string            `json:"name"`
	Labels    map[string]string `json:"labels,omitempty"`
	Path      string            `json:"path,omitempty"`
	CreatedAt time.Time         `json:"createdAt"`
}

// Network is a named network.
type Network struct {
	Name   string            `json:"name"`
	ID     string            `json:"id,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
}

// Settings names every setting of ContainerConfig whose enforcement a
// driver reports in Health.
var Settings = []string{
	"resources.cpu", "resources.memoryMB", "resources.diskMB", "resources.pids",
	"security.readOnlyRoot", "security.noNewPrivileges", "security.user", "security.capabilities",
	"volumes", "network", "egress", "ports", "restartPolicy", "healthCheck",
}
