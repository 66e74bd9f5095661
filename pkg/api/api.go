// Package api holds the resources of the HTTP API as they travel as JSON:
// what the orchestrator serves and the client package decodes. The OpenAPI
// document (openapi.json) describes the same.
package api

import (
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// Status of a container as the orchestrator tracks it.
//
//	pending ─▶ created ─▶ running ─▶ exited | stopped ─▶ removed
//	   │          │          ▲           │
//	   └──────────┴─▶ failed └─ start ───┘
//
// lost: the container's host stopped reporting.
type Status string

// Statuses.
const (
	StatusPending Status = "pending" // accepted and placed, not yet created on its host
	StatusCreated Status = "created"
	StatusRunning Status = "running"
	StatusExited  Status = "exited"  // ended by itself
	StatusStopped Status = "stopped" // ended on request
	StatusFailed  Status = "failed"  // could not be placed or created
	StatusLost    Status = "lost"    // its host stopped reporting
	StatusRemoved Status = "removed"
)

// Active reports whether a container in this status holds resources on
// its host.
func (s Status) Active() bool {
	return s == StatusPending || s == StatusCreated || s == StatusRunning
}

// Container is a container as the API shows it.
type Container struct {
	ID         string            `json:"id"`
	Name       string            `json:"name,omitempty"`
	SessionID  string            `json:"sessionId,omitempty"`
	Image      string            `json:"image"`
	Command    []string          `json:"command,omitempty"`
	Driver     string            `json:"driver"`
	Host       string            `json:"host"`
	Status     Status            `json:"status"`
	ExitCode   int               `json:"exitCode"`
	OOMKilled  bool              `json:"oomKilled,omitempty"`
	CreatedAt  time.Time         `json:"createdAt"`
	StartedAt  time.Time         `json:"startedAt,omitzero"`
	FinishedAt time.Time         `json:"finishedAt,omitzero"`
	Labels     map[string]string `json:"labels,omitempty"`
	Resources  Resources         `json:"resources"`
	Security   Security          `json:"security"`
	// Network is the container's network, none when empty; Egress what it
	// may reach beyond it, names resolved at admission.
	Network   string              `json:"network,omitempty"`
	Egress    []driver.EgressRule `json:"egress,omitempty"`
	Error     *Error              `json:"error,omitempty"` // why it failed, or why the last operation did
	RequestID string              `json:"requestId,omitempty"`
	// Replaces is the container, lost with its host, that this one was
	// placed in stead of; ReplacedBy the one placed in stead of this one.
	Replaces   string `json:"replaces,omitempty"`
	ReplacedBy string `json:"replacedBy,omitempty"`
	// Restarts counts the times its host's worker restarted it by its
	// restart policy.
	Restarts int `json:"restarts,omitempty"`
	// Ready says a running container takes work: its readiness probe
	// passes, or it has none. Health is its probes' last verdict on the
	// run: started, ready, unready or unhealthy; empty without probes.
	Ready  bool   `json:"ready"`
	Health string `json:"health,omitempty"`
}

// Resources of a container: cpu in cores, memory and disk in MB.
type Resources struct {
	CPU    float64 `json:"cpu"`
	Memory int64   `json:"memory"`
	Disk   int64   `json:"disk"`
	Pids   int64   `json:"pids"`
	GPUs   int64   `json:"gpus,omitempty"`
}

// Security settings of a container.
type Security struct {
	ReadOnly        bool         `json:"readOnly"`
	NoNewPrivileges bool         `json:"noNewPrivileges"`
	User            string       `json:"user"`
	Capabilities    Capabilities `json:"capabilities"`
}

// Capabilities dropped and added.
type Capabilities struct {
	Drop []string `json:"drop"`
	Add  []string `json:"add"`
}

// FromSpec fills the resource and security views of a config.
func FromSpec(c *Container, spec driver.ContainerConfig) {
	c.Image, c.Command, c.SessionID, c.Labels = spec.Image, spec.Command, spec.SessionID, spec.Labels
	r := spec.Resources
	c.Resources = Resources{CPU: r.CPU, Memory: r.MemoryMB, Disk: r.DiskMB, Pids: r.Pids}
	s := spec.Security
	c.Security = Security{ReadOnly: s.ReadOnlyRoot, NoNewPrivileges: s.NoNewPrivileges, User: s.User,
		Capabilities: Capabilities{Drop: nonNil(s.CapDrop), Add: nonNil(s.CapAdd)}}
	c.Network, c.Egress = spec.Network, spec.Egress
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// CreateRequest is the body of POST /v1/containers: the data of an
// io.openagent.container.create.requested event.
type CreateRequest struct {
	ContainerID string            `json:"containerId,omitempty"`
	Name        string            `json:"name,omitempty"`
	Driver      string            `json:"driver,omitempty"`
	HostID      string            `json:"hostId,omitempty"`
	Constraints map[string]string `json:"constraints,omitempty"`
	// Placement says more of where the container may go.
	Placement *Placement `json:"placement,omitempty"`
	// Reschedule says what becomes of the container when its host is
	// lost; by default what its restart policy implies.
	Reschedule *ReschedulePolicy      `json:"reschedule,omitempty"`
	Start      bool                   `json:"start,omitempty"`
	Spec       driver.ContainerConfig `json:"spec"`
}

// ReschedulePolicy says what becomes of a container whose host is lost.
type ReschedulePolicy = events.ReschedulePolicy

// Reschedule policies.
const (
	RescheduleNever     = events.RescheduleNever
	RescheduleOnFailure = events.RescheduleOnFailure
	RescheduleAlways    = events.RescheduleAlways
)

// Placement says where a container may go, beyond Constraints' labels.
type Placement = events.Placement

// Expression is a condition on a host's label: Op is =, !=, in, notin or
// exists.
type Expression = events.Expression

// StopRequest is the body of POST /v1/containers/{id}/stop.
type StopRequest struct {
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
	Force     bool  `json:"force,omitempty"`
}

// ExecRequest is the body of POST /v1/containers/{id}/exec.
type ExecRequest struct {
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	TimeoutMs  int64             `json:"timeoutMs,omitempty"`
	Stdin      string            `json:"stdin,omitempty"`
}

// ExecResult is how an exec ended.
type ExecResult struct {
	ExecID     string  `json:"execId"`
	ExitCode   int     `json:"exitCode"`
	Stdout     string  `json:"stdout"`
	Stderr     string  `json:"stderr"`
	Truncated  bool    `json:"truncated,omitempty"`
	TimedOut   bool    `json:"timedOut,omitempty"`
	DurationMs float64 `json:"durationMs"`
	// StdoutObject is the files-store object the output went to, when the
	// exec was asked to write it there.
	StdoutObject *events.ObjectRef `json:"stdoutObject,omitempty"`
}

// Host is a registered host.
type Host struct {
	ID        string            `json:"id"`
	Labels    map[string]string `json:"labels,omitempty"`
	Drivers   []DriverInfo      `json:"drivers"`
	Capacity  Resources         `json:"capacity"`
	Reserved  Resources         `json:"reserved,omitzero"` // kept for the host itself
	Allocated Resources         `json:"allocated"`
	// Capabilities the host offers beyond running containers.
	Capabilities []string  `json:"capabilities,omitempty"`
	Containers   int       `json:"containers"`
	LastSeen     time.Time `json:"lastSeen"`
	StartedAt    time.Time `json:"startedAt,omitzero"`
	Live         bool      `json:"live"`
	// QuarantinedUntil is set while placement passes the host by, its
	// creates having kept failing.
	QuarantinedUntil time.Time `json:"quarantinedUntil,omitzero"`
	// LostAt is set while the host is declared lost: not heard from for
	// its liveness and the grace after.
	LostAt time.Time `json:"lostAt,omitzero"`
	// DrainingSince is set while an operator drains the host: placement
	// passes it by and its containers move elsewhere.
	DrainingSince time.Time `json:"drainingSince,omitzero"`
}

// DrainRequest is the body of POST /v1/hosts/{id}/drain.
type DrainRequest struct {
	// Drain false ends a drain; absent, it is true.
	Drain *bool `json:"drain,omitempty"`
}

// DriverInfo names a driver and its version.
type DriverInfo = events.DriverInfo

// Accepted is the answer to a request that was accepted: its outcome
// follows as events.
type Accepted = events.AcceptedData

// SessionStatus is where a session is in its life.
//
//	requested ─▶ ready ─▶ expired (a timer fired) | closed (on request)
//	    └──────▶ failed
type SessionStatus string

// Session statuses.
const (
	SessionRequested SessionStatus = "requested"
	SessionReady     SessionStatus = "ready"
	SessionExpired   SessionStatus = "expired"
	SessionClosed    SessionStatus = "closed"
	SessionFailed    SessionStatus = "failed"
)

// Session is an agent's sandbox: a container plus its timers.
type Session struct {
	ID             string            `json:"id"`
	Status         SessionStatus     `json:"status"`
	ContainerID    string            `json:"containerId,omitempty"`
	Host           string            `json:"host,omitempty"`
	Driver         string            `json:"driver"`
	Image          string            `json:"image"`
	Languages      []string          `json:"languages"`
	AgentType      string            `json:"agentType,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	CreatedAt      time.Time         `json:"createdAt"`
	ReadyAt        time.Time         `json:"readyAt,omitzero"`
	ExpiresAt      time.Time         `json:"expiresAt"`
	TimeoutMs      int64             `json:"timeoutMs"`
	IdleTimeoutMs  int64             `json:"idleTimeoutMs"` // 0: no idle timeout
	LastActivityAt time.Time         `json:"lastActivityAt"`
	SetBy          string            `json:"setBy,omitempty"` // who set the current timer
	Owner          string            `json:"owner,omitempty"` // who created it: only they and admins may use it
	EndedAt        time.Time         `json:"endedAt,omitzero"`
	Reason         string            `json:"reason,omitempty"` // why it ended
	Error          *Error            `json:"error,omitempty"`
}

// SessionRequest is the body of POST /v1/sessions. Fields left out take
// the defaults documented in docs/SESSIONS.md; a timeout of 0 is refused
// (a session must end), an idle timeout of 0 turns idle expiry off.
type SessionRequest = events.SessionCreateRequestedData

// RunCodeRequest is the body of POST /v1/sessions/{id}/exec.
type RunCodeRequest struct {
	Language   string            `json:"language,omitempty"` // the session's first language when empty
	Code       string            `json:"code"`
	TimeoutMs  int64             `json:"timeoutMs,omitempty"` // 0: 30s
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	Stdin      string            `json:"stdin,omitempty"`
}

// ExtendRequest is the body of POST /v1/sessions/{id}/extend: the session
// then expires TimeoutMs from now.
type ExtendRequest struct {
	TimeoutMs int64 `json:"timeoutMs"`
}

// Pool keeps sandboxes of one profile created and started, so that a
// session of that profile is ready at once.
type Pool struct {
	Driver   string  `json:"driver"`
	Image    string  `json:"image"`
	CPU      float64 `json:"cpu,omitempty"`
	MemoryMB int64   `json:"memoryMB,omitempty"`
	// Egress is what the pool's sandboxes may reach (part of the profile:
	// a session takes a warm sandbox only with the same rules).
	Egress []driver.EgressRule `json:"egress,omitempty"`
	// Size is the least the pool keeps warm; Max the most it grows to when
	// sessions take sandboxes faster than it refills (2 × Size when 0).
	Size int `json:"size"`
	Max  int `json:"max,omitempty"`
	// Read only: the current target between Size and Max, and how many
	// sandboxes are warm and being made.
	Target   int `json:"target"`
	Warm     int `json:"warm"`
	Creating int `json:"creating"`
}

// Principal is who makes a call: a name, and the role that says what it
// may do (see events.Role).
type Principal struct {
	Name string      `json:"name"`
	Role events.Role `json:"role"`
}

// Admin reports whether the principal may act on what others own.
func (p Principal) Admin() bool { return p.Role == events.RoleAdmin }

// Alerts is what GET /v1/alerts answers: the alert rules, the webhooks,
// the alerts pending and firing, and the webhook deliveries.
type Alerts struct {
	Rules    []AlertRule    `json:"rules"`
	Webhooks []AlertWebhook `json:"webhooks"`
	// Pending are the alerts whose rule holds for less than its for, as
	// the leader evaluates them (empty from a follower); Firing are those
	// the events stream says fire.
	Pending []events.AlertData `json:"pending"`
	Firing  []events.AlertData `json:"firing"`
	// Deliveries are the latest webhook deliveries, newest first.
	Deliveries []Delivery `json:"deliveries"`
	// Errors are the rules' last evaluation errors, by rule id.
	Errors map[string]string `json:"errors,omitempty"`
}

// AlertRule is an alert rule as the API shows it.
type AlertRule struct {
	ID       string   `json:"id"`
	Name     string   `json:"name,omitempty"`
	On       string   `json:"on"`
	Expr     string   `json:"expr"`
	For      string   `json:"for"` // "30s"
	Severity string   `json:"severity"`
	Summary  string   `json:"summary,omitempty"`
	Actions  []string `json:"actions"` // log, event, webhook:NAME
}

// AlertWebhook is a webhook as the API shows it: never its secret.
type AlertWebhook struct {
	Name    string `json:"name"`
	URL     string `json:"url"`
	Breaker string `json:"breaker"` // its circuit breaker: closed, open or half-open
}

// Delivery is one alert event's delivery to one webhook, with every
// attempt made.
type Delivery struct {
	ID        string `json:"id"`
	Webhook   string `json:"webhook"`
	EventID   string `json:"eventId"`
	EventType string `json:"eventType"`
	Alert     string `json:"alert"`
	Severity  string `json:"severity"`
	// State is delivered, retrying, refused (a 4xx: not tried again) or
	// abandoned (its deliveries used up).
	State     string            `json:"state"`
	Attempts  []DeliveryAttempt `json:"attempts"`
	CreatedAt time.Time         `json:"createdAt"`
	UpdatedAt time.Time         `json:"updatedAt"`
}

// Delivery states.
const (
	DeliveryDelivered = "delivered"
	DeliveryRetrying  = "retrying"
	DeliveryRefused   = "refused"
	DeliveryAbandoned = "abandoned"
)

// DeliveryAttempt is one try of a delivery.
type DeliveryAttempt struct {
	At         time.Time `json:"at"`
	Status     int       `json:"status,omitempty"` // the HTTP status; 0 when no answer came
	Error      string    `json:"error,omitempty"`
	DurationMs int64     `json:"durationMs"`
}
