package events

import (
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// The data of every event type of the catalog, one Go type each, spelled
// as its schema in schemas/ says. A test decodes every golden fixture into
// its type with unknown fields refused, encodes it again and validates the
// result, so the two cannot drift apart. Payload returns the type of an
// event type.

// Requests.

// CreateRequestedData is the data of io.openagent.container.create.requested.
type CreateRequestedData struct {
	ContainerID string                 `json:"containerId,omitempty"` // derived from the request when empty
	Name        string                 `json:"name,omitempty"`
	Driver      string                 `json:"driver,omitempty"` // chosen by the image when empty
	HostID      string                 `json:"hostId,omitempty"`
	Constraints map[string]string      `json:"constraints,omitempty"`
	Start       bool                   `json:"start,omitempty"`
	Spec        driver.ContainerConfig `json:"spec"`
}

// ContainerRequestedData is the data of the start, stop and remove requests.
type ContainerRequestedData struct {
	ContainerID string `json:"containerId"`
	TimeoutMs   int64  `json:"timeoutMs,omitempty"` // stop
	Force       bool   `json:"force,omitempty"`     // stop, remove
	// Reason, of a remove the orchestrator decided itself, is what the
	// removed event says: a stale copy on a host that was lost.
	Reason string `json:"reason,omitempty"`
}

// ExecRequestedData is the data of io.openagent.container.exec.requested.
type ExecRequestedData struct {
	ContainerID string            `json:"containerId"`
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env,omitempty"`
	WorkingDir  string            `json:"workingDir,omitempty"`
	TimeoutMs   int64             `json:"timeoutMs,omitempty"`
	Stdin       string            `json:"stdin,omitempty"`
	StreamTo    string            `json:"streamTo,omitempty"`
	// StdinObject and StdoutObject name objects of the files store
	// (BucketFiles): the command's standard input is read from the one,
	// and its standard output written to the other, instead of travelling
	// in events.
	StdinObject  string `json:"stdinObject,omitempty"`
	StdoutObject string `json:"stdoutObject,omitempty"`
}

// ObjectRef is an object of the files store: its name, size and SHA-256
// (hex), as events record a file that crossed.
type ObjectRef struct {
	Name   string `json:"name"`
	Size   uint64 `json:"size"`
	SHA256 string `json:"sha256"`
}

// SessionCreateRequestedData is the data of io.openagent.session.create.requested.
type SessionCreateRequestedData struct {
	Languages     []string          `json:"languages,omitempty"`
	Image         string            `json:"image,omitempty"`
	Driver        string            `json:"driver,omitempty"`
	AgentType     string            `json:"agentType,omitempty"`
	CPU           float64           `json:"cpu,omitempty"`
	MemoryMB      int64             `json:"memoryMB,omitempty"`
	TimeoutMs     *int64            `json:"timeoutMs,omitempty"`
	IdleTimeoutMs *int64            `json:"idleTimeoutMs,omitempty"`
	Labels        map[string]string `json:"labels,omitempty"`
	// Egress is what the session's sandbox may reach; nothing when empty.
	Egress []driver.EgressRule `json:"egress,omitempty"`
}

// MaxExecOutput caps each of an exec's stdout and stderr, streamed and
// kept: what passes it is cut, and the result says Truncated.
const MaxExecOutput = 256 << 10

// MaxExecTimeout bounds the timeout of an exec, in a container or a
// session: a run that must take longer is a container of its own.
const MaxExecTimeout = time.Hour

// SessionExecRequestedData is the data of io.openagent.session.exec.requested.
type SessionExecRequestedData struct {
	SessionID  string            `json:"sessionId"`
	Language   string            `json:"language,omitempty"`
	Code       string            `json:"code"`
	TimeoutMs  int64             `json:"timeoutMs,omitempty"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	Stdin      string            `json:"stdin,omitempty"`
	StreamTo   string            `json:"streamTo,omitempty"`
}

// SessionIDRequestedData is the data of the session extend and close requests.
type SessionIDRequestedData struct {
	SessionID string `json:"sessionId"`
	TimeoutMs int64  `json:"timeoutMs,omitempty"` // extend
}

// Commands.

// CreateCommandData is the data of io.openagent.command.container.create.
type CreateCommandData struct {
	ContainerID string                 `json:"containerId"`
	HostID      string                 `json:"hostId"`
	Driver      string                 `json:"driver"`
	Start       bool                   `json:"start,omitempty"`
	Spec        driver.ContainerConfig `json:"spec"`
}

// ContainerCommandData is the data of the start, stop and remove commands.
type ContainerCommandData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId"`
	TimeoutMs   int64  `json:"timeoutMs,omitempty"` // stop
	Force       bool   `json:"force,omitempty"`     // stop, remove
	// Reason, of a remove the orchestrator decided itself, is what the
	// removed event says: a stale copy on a host that was lost.
	Reason string `json:"reason,omitempty"`
}

// ExecCommandData is the data of io.openagent.command.container.exec.
type ExecCommandData struct {
	ContainerID string            `json:"containerId"`
	HostID      string            `json:"hostId"`
	ExecID      string            `json:"execId"`
	Command     []string          `json:"command"`
	Env         map[string]string `json:"env,omitempty"`
	WorkingDir  string            `json:"workingDir,omitempty"`
	TimeoutMs   int64             `json:"timeoutMs,omitempty"`
	Stdin       string            `json:"stdin,omitempty"`
	StreamTo    string            `json:"streamTo,omitempty"`
	// See ExecRequestedData.
	StdinObject  string `json:"stdinObject,omitempty"`
	StdoutObject string `json:"stdoutObject,omitempty"`
}

// Outcomes and state.

// AcceptedData is the data of io.openagent.request.accepted.
type AcceptedData struct {
	RequestID   string `json:"requestId"`
	RequestType string `json:"requestType"`
	ContainerID string `json:"containerId,omitempty"`
	ExecID      string `json:"execId,omitempty"`
}

// RejectedData is the data of io.openagent.request.rejected.
type RejectedData struct {
	RequestID   string `json:"requestId,omitempty"`
	RequestType string `json:"requestType,omitempty"`
	Error       Error  `json:"error"`
}

// PlacedData is the data of io.openagent.container.placed: everything needed
// to rebuild the container from the log, and the request that placed it.
type PlacedData struct {
	ContainerID   string                 `json:"containerId"`
	HostID        string                 `json:"hostId"`
	Driver        string                 `json:"driver"`
	Name          string                 `json:"name,omitempty"`
	Spec          driver.ContainerConfig `json:"spec"`
	RequestSource string                 `json:"requestSource,omitempty"`
	RequestDigest string                 `json:"requestDigest,omitempty"`
	// What the request asked of placement and of a host's loss, so that a
	// replacement is placed as the original was.
	Constraints map[string]string `json:"constraints,omitempty"`
	Placement   *Placement        `json:"placement,omitempty"`
	Reschedule  *ReschedulePolicy `json:"reschedule,omitempty"`
	Start       bool              `json:"start,omitempty"`
	// Replaces is the container lost with its host that this one
	// replaces; Attempt counts the replacements of the original.
	Replaces string `json:"replaces,omitempty"`
	Attempt  int    `json:"attempt,omitempty"`
}

// Placement says where a container may go, beyond Constraints' labels.
type Placement struct {
	// Strategy chooses among fit hosts: binpack (the default: the host
	// left fullest) or spread (the one left emptiest).
	Strategy string `json:"strategy,omitempty"`
	// Expressions are conditions on the host's labels, with operators.
	Expressions []Expression `json:"expressions,omitempty"`
	// AntiAffinity is a label key: no host runs two containers with the
	// same value of it (a session group, an app's replicas).
	AntiAffinity string `json:"antiAffinity,omitempty"`
	// Capabilities the host must offer: "pause", "gpu".
	Capabilities []string `json:"capabilities,omitempty"`
}

// Expression is a condition on a host's label: Op is =, !=, in, notin or
// exists.
type Expression struct {
	Key    string   `json:"key"`
	Op     string   `json:"op"`
	Values []string `json:"values,omitempty"`
}

// ReschedulePolicy says what becomes of a container whose host is lost.
type ReschedulePolicy struct {
	// Policy: never (it stays lost), on-failure (replaced if it was
	// running: the loss ended its run) or always (replaced whatever it was
	// doing: pending, created or running).
	Policy string `json:"policy,omitempty"`
	// LostAfterMs waits this long after the loss before replacing it, for
	// the host to come back (like Nomad's disconnect.lost_after).
	LostAfterMs int64 `json:"lostAfterMs,omitempty"`
}

// Reschedule policies.
const (
	RescheduleNever     = "never"
	RescheduleOnFailure = "on-failure"
	RescheduleAlways    = "always"
)

// EffectivePolicy is the reschedule policy that applies: the one given,
// else what the restart policy implies (no restart: never; on-failure:
// on-failure; always: always).
func (r *ReschedulePolicy) EffectivePolicy(restart driver.RestartPolicy) string {
	if r != nil && r.Policy != "" {
		return r.Policy
	}
	switch restart {
	case driver.RestartAlways:
		return RescheduleAlways
	case driver.RestartOnFailure:
		return RescheduleOnFailure
	}
	return RescheduleNever
}

// CreatedData is the data of io.openagent.container.created.
type CreatedData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId"`
	Driver      string `json:"driver"`
	RuntimeID   string `json:"runtimeId,omitempty"`
	SessionID   string `json:"sessionId,omitempty"`
	Image       string `json:"image,omitempty"`
}

// StartedData is the data of io.openagent.container.started.
type StartedData struct {
	ContainerID string    `json:"containerId"`
	HostID      string    `json:"hostId"`
	StartedAt   time.Time `json:"startedAt"`
	// Restarts counts the restarts in a row by the container's restart
	// policy: 0 for a start asked for, n for the worker's nth restart.
	Restarts int `json:"restarts,omitempty"`
}

// ExitedData is the data of io.openagent.container.exited.
type ExitedData struct {
	ContainerID string    `json:"containerId"`
	HostID      string    `json:"hostId"`
	ExitCode    int       `json:"exitCode"`
	OOMKilled   bool      `json:"oomKilled"`
	Reason      string    `json:"reason,omitempty"`
	FinishedAt  time.Time `json:"finishedAt,omitzero"`
}

// StoppedData is the data of io.openagent.container.stopped.
type StoppedData struct {
	ContainerID string    `json:"containerId"`
	HostID      string    `json:"hostId"`
	ExitCode    int       `json:"exitCode"`
	FinishedAt  time.Time `json:"finishedAt,omitzero"`
}

// RemovedData is the data of io.openagent.container.removed.
type RemovedData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId"`
	Reason      string `json:"reason,omitempty"`
}

// FailedData is the data of io.openagent.container.failed.
type FailedData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId,omitempty"`
	Operation   string `json:"operation"` // place, create, start, stop, remove, exec
	Error       Error  `json:"error"`
	ExecID      string `json:"execId,omitempty"`
}

// LostData is the data of io.openagent.container.lost.
type LostData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId"`
	Reason      string `json:"reason"`
}

// CommandRefusedData is the data of io.openagent.container.command.refused.
type CommandRefusedData struct {
	ContainerID string `json:"containerId"`
	HostID      string `json:"hostId"`
	CommandID   string `json:"commandId"`
	CommandType string `json:"commandType"`
	Generation  uint64 `json:"generation"`
	Current     uint64 `json:"current"`
	Reason      string `json:"reason"`
}

// ExecCompletedData is the data of io.openagent.exec.completed.
type ExecCompletedData struct {
	ContainerID string  `json:"containerId"`
	HostID      string  `json:"hostId,omitempty"`
	ExecID      string  `json:"execId"`
	ExitCode    int     `json:"exitCode"`
	Stdout      string  `json:"stdout"`
	Stderr      string  `json:"stderr"`
	Truncated   bool    `json:"truncated,omitempty"`
	TimedOut    bool    `json:"timedOut,omitempty"`
	DurationMs  float64 `json:"durationMs"`
	// StdoutObject is what the command wrote to the object it was given
	// for its standard output.
	StdoutObject *ObjectRef `json:"stdoutObject,omitempty"`
}

// Resources of a host: what it offers or has allocated.
type Resources struct {
	CPU      float64 `json:"cpu,omitempty"`
	MemoryMB int64   `json:"memoryMB,omitempty"`
	DiskMB   int64   `json:"diskMB,omitempty"`
	Pids     int64   `json:"pids,omitempty"`
	GPUs     int64   `json:"gpus,omitempty"`
}

// DriverInfo is a driver a host offers.
type DriverInfo struct {
	Name    string  `json:"name"`
	Version string  `json:"version,omitempty"`
	MinCPU  float64 `json:"minCpu,omitempty"`
	// Enforcement is what the driver says it enforces on the host, setting
	// by setting (the network and egress among them), and how.
	Enforcement []driver.Enforcement `json:"enforcement,omitempty"`
	// Breaker is the state of the worker's circuit breaker around the
	// driver: closed, open (failing at once) or half-open (on trial).
	Breaker string `json:"breaker,omitempty"`
	// Errors counts the driver's failed calls since the worker started,
	// by kind (unavailable, timeout, invalid, …).
	Errors map[string]uint64 `json:"errors,omitempty"`
}

// HostRecord is what a worker keeps of its host in the hosts bucket,
// refreshed on every heartbeat; the orchestrator places on what it says.
type HostRecord struct {
	ID       string            `json:"id"`
	Labels   map[string]string `json:"labels,omitempty"`
	Drivers  []DriverInfo      `json:"drivers"`
	Capacity Resources         `json:"capacity"`
	// Reserved is capacity the host keeps for itself: never placed on.
	Reserved Resources `json:"reserved,omitzero"`
	// Capabilities the host offers beyond running containers: "pause"
	// (a driver that can pause), "gpu" (GPUs in its capacity).
	Capabilities []string  `json:"capabilities,omitempty"`
	LastSeen     time.Time `json:"lastSeen"`
	StartedAt    time.Time `json:"startedAt"`
}

// ContainerSample is one sample of a running container's resource use.
type ContainerSample struct {
	ContainerID      string    `json:"containerId"`
	CPU              float64   `json:"cpu"` // cores in use
	MemoryBytes      uint64    `json:"memoryBytes"`
	MemoryLimitBytes uint64    `json:"memoryLimitBytes,omitempty"`
	Pids             uint64    `json:"pids,omitempty"`
	At               time.Time `json:"at"`
}

// HostRegisteredData is the data of io.openagent.host.registered.
type HostRegisteredData struct {
	HostID    string            `json:"hostId"`
	Labels    map[string]string `json:"labels,omitempty"`
	Drivers   []DriverInfo      `json:"drivers"`
	Capacity  Resources         `json:"capacity"`
	StartedAt time.Time         `json:"startedAt,omitzero"`
}

// HostHeartbeatData is the data of io.openagent.host.heartbeat.
type HostHeartbeatData struct {
	HostID     string     `json:"hostId"`
	Containers int        `json:"containers,omitempty"`
	Allocated  *Resources `json:"allocated,omitempty"`
}

// PolicyViolatedData is the data of io.openagent.request.policy.violated.
type PolicyViolatedData struct {
	RequestID   string `json:"requestId"`
	RequestType string `json:"requestType"`
	Policy      string `json:"policy"`
	Field       string `json:"field,omitempty"`
	Message     string `json:"message"`
	Enforced    bool   `json:"enforced"`
}

// HostEventRefusedData is the data of io.openagent.host.event.refused.
type HostEventRefusedData struct {
	HostID    string `json:"hostId"`
	EventID   string `json:"eventId,omitempty"`
	EventType string `json:"eventType,omitempty"`
	Reason    string `json:"reason"`
}

// AlertData is the data of io.openagent.alert.firing and
// io.openagent.alert.resolved.
type AlertData struct {
	// Alert names the alert: rule/on/subject, the same in its firing and
	// its resolution.
	Alert    string `json:"alert"`
	Rule     string `json:"rule"`
	Name     string `json:"name,omitempty"`
	Severity string `json:"severity"`
	// On is what the rule watches, container or host; Subject is its id.
	On      string `json:"on"`
	Subject string `json:"subject"`
	HostID  string `json:"hostId,omitempty"` // the container's host
	Expr    string `json:"expr"`
	Summary string `json:"summary,omitempty"`
	// Since is when the expression first held; ForMs how long it had to.
	Since time.Time `json:"since"`
	ForMs int64     `json:"forMs,omitempty"`
	// Values are the figures the expression read, as they were.
	Values map[string]float64 `json:"values,omitempty"`
	// Webhooks are the webhooks the rule sends this to.
	Webhooks []string `json:"webhooks,omitempty"`
	// Reason says why a resolved alert resolved.
	Reason string `json:"reason,omitempty"`
}

// AuditCheckpointData is the data of io.openagent.audit.checkpoint: the
// chain's link after the event at Seq, signed by Key.
type AuditCheckpointData struct {
	Seq       uint64 `json:"seq"`
	Link      string `json:"link"`      // hex SHA-256
	Key       string `json:"key"`       // "ed25519:" and the public key in hex
	Signature string `json:"signature"` // base64 ed25519 over the sequence and the link
}

// HostDrainRequestedData is the data of io.openagent.host.drain.requested.
type HostDrainRequestedData struct {
	HostID string `json:"hostId"`
	Drain  bool   `json:"drain"` // false ends a drain
}

// HostDrainingData is the data of io.openagent.host.draining.
type HostDrainingData struct {
	HostID   string `json:"hostId"`
	Draining bool   `json:"draining"`
	// Moving are the containers to be replaced elsewhere and then removed
	// from the host; Staying, those whose reschedule policy keeps them
	// where they are (never), for the operator to stop or wait for.
	Moving  []string `json:"moving,omitempty"`
	Staying []string `json:"staying,omitempty"`
}

// HostQuarantinedData is the data of io.openagent.host.quarantined.
type HostQuarantinedData struct {
	HostID    string    `json:"hostId"`
	Until     time.Time `json:"until"`
	Failures  int       `json:"failures"`  // creates failed in a row
	LastError string    `json:"lastError"` // the last one's error
}

// HealthData is the data of io.openagent.container.health.
type HealthData struct {
	ContainerID string    `json:"containerId"`
	HostID      string    `json:"hostId"`
	Probe       string    `json:"probe"`  // startup, liveness or readiness
	Status      string    `json:"status"` // started, ready, unready or unhealthy
	Message     string    `json:"message,omitempty"`
	Failures    int       `json:"failures,omitempty"` // in a row, when it failed
	StartedAt   time.Time `json:"startedAt"`          // the run it is about
}

// Probe verdicts of a container.health event.
const (
	HealthStarted   = "started"
	HealthReady     = "ready"
	HealthUnready   = "unready"
	HealthUnhealthy = "unhealthy"
)

// HostLostData is the data of io.openagent.host.lost.
type HostLostData struct {
	HostID     string    `json:"hostId"`
	LastSeen   time.Time `json:"lastSeen"`
	Reason     string    `json:"reason"`
	Containers []string  `json:"containers"` // what it held, lost with it
}

// HostReturnedData is the data of io.openagent.host.returned.
type HostReturnedData struct {
	HostID   string    `json:"hostId"`
	LostAt   time.Time `json:"lostAt"`
	LastSeen time.Time `json:"lastSeen"` // the heartbeat that brought it back
}

// RescheduledData is the data of io.openagent.container.rescheduled.
type RescheduledData struct {
	ContainerID   string `json:"containerId"`   // the lost container
	ReplacementID string `json:"replacementId"` // the one placed in its stead
	FromHost      string `json:"fromHost"`
	Reason        string `json:"reason"`
	Attempt       int    `json:"attempt"` // 1 for the first replacement of the original
}

// LeaderElectedData is the data of io.openagent.leader.elected.
type LeaderElectedData struct {
	Holder  string    `json:"holder"`
	Token   uint64    `json:"token"`
	Address string    `json:"address,omitempty"` // where its HTTP API answers
	Since   time.Time `json:"since"`
}

// StreamDriftedData is the data of io.openagent.stream.drifted.
type StreamDriftedData struct {
	Stream   string   `json:"stream"`
	Problems []string `json:"problems"`
}

// HostReconciledData is the data of io.openagent.host.reconciled.
type HostReconciledData struct {
	HostID     string    `json:"hostId"`
	StartedAt  time.Time `json:"startedAt"`
	Containers []string  `json:"containers"`
}

// Sessions.

// SessionRef is what every session event says of the session.
type SessionRef struct {
	SessionID   string `json:"sessionId"`
	ContainerID string `json:"containerId,omitempty"`
	HostID      string `json:"hostId,omitempty"`
}

// SessionRequestedData is the data of io.openagent.session.requested.
type SessionRequestedData struct {
	SessionRef
	Languages     []string  `json:"languages,omitempty"`
	Image         string    `json:"image,omitempty"`
	Driver        string    `json:"driver,omitempty"`
	AgentType     string    `json:"agentType,omitempty"`
	ExpiresAt     time.Time `json:"expiresAt,omitzero"`
	IdleTimeoutMs int64     `json:"idleTimeoutMs,omitempty"`
	RequestedBy   string    `json:"requestedBy,omitempty"`
}

// SessionReadyData is the data of io.openagent.session.ready.
type SessionReadyData struct {
	SessionRef
	ReadyMs   float64   `json:"readyMs,omitempty"`
	Warm      bool      `json:"warm,omitempty"`
	ExpiresAt time.Time `json:"expiresAt,omitzero"`
}

// SessionExpiringData is the data of io.openagent.session.expiring.
type SessionExpiringData struct {
	SessionRef
	ExpiresAt time.Time `json:"expiresAt"`
	Timer     string    `json:"timer"` // ttl or idle
}

// SessionExpiredData is the data of io.openagent.session.expired.
type SessionExpiredData struct {
	SessionRef
	Timer  string `json:"timer"` // ttl or idle
	SetBy  string `json:"setBy,omitempty"`
	Reason string `json:"reason"`
}

// SessionExtendedData is the data of io.openagent.session.extended.
type SessionExtendedData struct {
	SessionRef
	ExpiresAt time.Time `json:"expiresAt"`
	SetBy     string    `json:"setBy,omitempty"`
}

// SessionClosedData is the data of io.openagent.session.closed.
type SessionClosedData struct {
	SessionRef
	ClosedBy string `json:"closedBy,omitempty"`
	Reason   string `json:"reason,omitempty"`
}

// SessionFailedData is the data of io.openagent.session.failed.
type SessionFailedData struct {
	SessionRef
	Error Error `json:"error"`
}

// FileCopiedData is the data of io.openagent.session.file.copied.
type FileCopiedData struct {
	SessionRef
	Path      string `json:"path"`
	Direction string `json:"direction"` // "in" or "out" of the workspace
	Size      uint64 `json:"size"`
	SHA256    string `json:"sha256"`
	By        string `json:"by,omitempty"`
}

// CodeExecutedData is the data of io.openagent.session.code.executed: the
// audit of one code run. Code and output are kept only when asked for.
type CodeExecutedData struct {
	SessionRef
	ExecID      string  `json:"execId,omitempty"`
	Language    string  `json:"language"`
	CodeSHA256  string  `json:"codeSha256"`
	CodeBytes   int     `json:"codeBytes"`
	ExitCode    int     `json:"exitCode"`
	DurationMs  float64 `json:"durationMs,omitempty"`
	TimedOut    bool    `json:"timedOut,omitempty"`
	Truncated   bool    `json:"truncated,omitempty"`
	StdoutBytes int     `json:"stdoutBytes,omitempty"`
	StderrBytes int     `json:"stderrBytes,omitempty"`
	By          string  `json:"by,omitempty"`
	Code        string  `json:"code,omitempty"`
	Stdout      string  `json:"stdout,omitempty"`
	Stderr      string  `json:"stderr,omitempty"`
}

// Payload returns a new value of the Go type of an event type's data, nil
// for a type not in the catalog.
func Payload(eventType string) any {
	switch eventType {
	case ContainerCreateRequested:
		return new(CreateRequestedData)
	case ContainerStartRequested, ContainerStopRequested, ContainerRemoveRequested:
		return new(ContainerRequestedData)
	case ContainerExecRequested:
		return new(ExecRequestedData)
	case SessionCreateRequested:
		return new(SessionCreateRequestedData)
	case SessionExecRequested:
		return new(SessionExecRequestedData)
	case SessionExtendRequested, SessionCloseRequested:
		return new(SessionIDRequestedData)
	case CommandCreate:
		return new(CreateCommandData)
	case CommandStart, CommandStop, CommandRemove:
		return new(ContainerCommandData)
	case CommandExec:
		return new(ExecCommandData)
	case RequestAccepted:
		return new(AcceptedData)
	case RequestRejected:
		return new(RejectedData)
	case ContainerPlaced:
		return new(PlacedData)
	case ContainerCreated:
		return new(CreatedData)
	case ContainerStarted:
		return new(StartedData)
	case ContainerExited:
		return new(ExitedData)
	case ContainerStopped:
		return new(StoppedData)
	case ContainerRemoved:
		return new(RemovedData)
	case ContainerFailed:
		return new(FailedData)
	case ContainerLost:
		return new(LostData)
	case ContainerCommandRefused:
		return new(CommandRefusedData)
	case ExecCompleted:
		return new(ExecCompletedData)
	case HostRegistered:
		return new(HostRegisteredData)
	case HostHeartbeat:
		return new(HostHeartbeatData)
	case HostReconciled:
		return new(HostReconciledData)
	case StreamDrifted:
		return new(StreamDriftedData)
	case HostEventRefused:
		return new(HostEventRefusedData)
	case HostQuarantined:
		return new(HostQuarantinedData)
	case HostDrainRequested:
		return new(HostDrainRequestedData)
	case AuditCheckpoint:
		return new(AuditCheckpointData)
	case AlertFiring, AlertResolved:
		return new(AlertData)
	case HostDraining:
		return new(HostDrainingData)
	case HostLost:
		return new(HostLostData)
	case ContainerHealth:
		return new(HealthData)
	case HostReturned:
		return new(HostReturnedData)
	case ContainerRescheduled:
		return new(RescheduledData)
	case LeaderElected:
		return new(LeaderElectedData)
	case RequestPolicyViolated:
		return new(PolicyViolatedData)
	case SessionRequested:
		return new(SessionRequestedData)
	case SessionReady:
		return new(SessionReadyData)
	case SessionExpiring:
		return new(SessionExpiringData)
	case SessionExpired:
		return new(SessionExpiredData)
	case SessionExtended:
		return new(SessionExtendedData)
	case SessionClosed:
		return new(SessionClosedData)
	case SessionFailed:
		return new(SessionFailedData)
	case SessionCodeExecuted:
		return new(CodeExecutedData)
	case SessionFileCopied:
		return new(FileCopiedData)
	}
	return nil
}
