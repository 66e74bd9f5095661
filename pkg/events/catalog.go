package events

import (
	"strings"

	"github.com/openagent/orchestrator/schemas"
)

// Prefix starts every event type of the catalog.
const Prefix = "io.openagent."

// Requests: what services ask for. They arrive on the requests stream, by
// request/reply or over HTTP.
const (
	ContainerCreateRequested = Prefix + "container.create.requested"
	ContainerStartRequested  = Prefix + "container.start.requested"
	ContainerStopRequested   = Prefix + "container.stop.requested"
	ContainerRemoveRequested = Prefix + "container.remove.requested"
	ContainerExecRequested   = Prefix + "container.exec.requested"
)

// HostDrainRequested: an operator asks for a host to be drained (or no
// longer): placement passes it by, and its containers move elsewhere.
const HostDrainRequested = Prefix + "host.drain.requested"

// Commands: what the orchestrator tells one host to do.
const (
	CommandCreate = Prefix + "command.container.create"
	CommandStart  = Prefix + "command.container.start"
	CommandStop   = Prefix + "command.container.stop"
	CommandRemove = Prefix + "command.container.remove"
	CommandExec   = Prefix + "command.container.exec"
)

// State events: what happened to a container or a host.
const (
	ContainerCreated = Prefix + "container.created"
	ContainerStarted = Prefix + "container.started"
	ContainerExited  = Prefix + "container.exited"
	ContainerStopped = Prefix + "container.stopped"
	ContainerRemoved = Prefix + "container.removed"
	ExecCompleted    = Prefix + "exec.completed"
	HostRegistered   = Prefix + "host.registered"
	HostHeartbeat    = Prefix + "host.heartbeat"
)

// Outcomes of requests: accepted and placed on the way, rejected or failed at
// the end of a path that did not succeed.
const (
	RequestAccepted = Prefix + "request.accepted"
	RequestRejected = Prefix + "request.rejected"
	ContainerPlaced = Prefix + "container.placed"
	ContainerFailed = Prefix + "container.failed"
	// ContainerCommandRefused: a worker refused a command older than what
	// it has carried out for the container (see ExtGeneration).
	ContainerCommandRefused = Prefix + "container.command.refused"
	// ContainerLost: a container its host cannot find or adopt; it holds
	// nothing any more.
	ContainerLost = Prefix + "container.lost"
	// HostReconciled: a worker that started found these containers on its
	// host; what the orchestrator knows there besides them is lost.
	HostReconciled = Prefix + "host.reconciled"
)

// StreamDrifted: a stream's settings are not those the orchestrator
// provisioned (someone changed them, or they make events losable); its
// CloudEvents subject names the stream.
const StreamDrifted = Prefix + "stream.drifted"

// AuditCheckpoint: the leader signed the audit chain up to a sequence of
// the events stream (see package audit).
const AuditCheckpoint = Prefix + "audit.checkpoint"

// AlertFiring: an alert rule's expression held for a container or a host
// for the rule's for-duration; AlertResolved: it no longer holds (or what
// it was about is gone). The CloudEvents subject names the rule; webhooks
// are delivered from these events (see package telemetry).
const (
	AlertFiring   = Prefix + "alert.firing"
	AlertResolved = Prefix + "alert.resolved"
)

// RequestPolicyViolated: a request broke an admission policy; enforced
// says whether it was refused for it (or the policies only report, in
// dry-run mode).
const RequestPolicyViolated = Prefix + "request.policy.violated"

// HostEventRefused: an event a worker sent was not taken into the events
// stream (not valid, not a worker's to send, or about another host or a
// container not on its host); its hostid names the sender.
const HostEventRefused = Prefix + "host.event.refused"

// HostQuarantined: a host's creates kept failing; placement passes it by
// until the time given.
const HostQuarantined = Prefix + "host.quarantined"

// HostDraining: a host drains (or stopped draining): placement passes it
// by, and each container its reschedule policy lets move is replaced
// elsewhere, once, then stopped and removed on it; its data lists them.
const HostDraining = Prefix + "host.draining"

// ContainerHealth: a worker's probe of a container changed its verdict:
// started (the startup probe passed), ready or unready (readiness),
// unhealthy (liveness, or startup, failed: the run is killed).
const ContainerHealth = Prefix + "container.health"

// Liveness and leadership, decided by the orchestrator.
const (
	// HostLost: a host was not heard from for its time to live and the
	// grace after it; its containers are lost and, by their policy,
	// rescheduled elsewhere.
	HostLost = Prefix + "host.lost"
	// HostReturned: a host declared lost reports again; what it still
	// runs of containers replaced meanwhile it stops.
	HostReturned = Prefix + "host.returned"
	// ContainerRescheduled: a container lost with its host is replaced by
	// another on a fit host, once; its data names both.
	ContainerRescheduled = Prefix + "container.rescheduled"
	// LeaderElected: an orchestrator took the control plane's lease; what
	// earlier leaders write after it is refused (see Fence). Its CloudEvents
	// subject names the election.
	LeaderElected = Prefix + "leader.elected"
)

// Session events: the life of an agent's sandbox and the audit of the code
// run in it.
const (
	SessionRequested    = Prefix + "session.requested"
	SessionReady        = Prefix + "session.ready"
	SessionExpiring     = Prefix + "session.expiring"
	SessionExpired      = Prefix + "session.expired"
	SessionExtended     = Prefix + "session.extended"
	SessionClosed       = Prefix + "session.closed"
	SessionFailed       = Prefix + "session.failed"
	SessionCodeExecuted = Prefix + "session.code.executed"
	// SessionFileCopied: a file went into or out of a session's workspace;
	// its path, size and SHA-256 (checked at both ends) are on record.
	SessionFileCopied = Prefix + "session.file.copied"
)

// Session requests, served by request/reply on openagent.rpc.sessions; the
// reply is the outcome event (session.ready, exec.completed,
// session.extended, session.closed, or request.rejected).
const (
	SessionCreateRequested = Prefix + "session.create.requested"
	SessionExecRequested   = Prefix + "session.exec.requested"
	SessionExtendRequested = Prefix + "session.extend.requested"
	SessionCloseRequested  = Prefix + "session.close.requested"
)

// Kind tells which stream an event type travels on.
type Kind int

// Kinds of event type. The zero value means the type is not in the catalog.
const (
	KindUnknown Kind = iota
	KindRequest
	KindCommand
	KindState
)

var catalog = map[string]Kind{
	ContainerCreateRequested: KindRequest,
	ContainerStartRequested:  KindRequest,
	ContainerStopRequested:   KindRequest,
	ContainerRemoveRequested: KindRequest,
	ContainerExecRequested:   KindRequest,
	HostDrainRequested:       KindRequest,

	CommandCreate: KindCommand,
	CommandStart:  KindCommand,
	CommandStop:   KindCommand,
	CommandRemove: KindCommand,
	CommandExec:   KindCommand,

	ContainerCreated: KindState,
	ContainerStarted: KindState,
	ContainerExited:  KindState,
	ContainerStopped: KindState,
	ContainerRemoved: KindState,
	ExecCompleted:    KindState,
	HostRegistered:   KindState,
	HostHeartbeat:    KindState,
	RequestAccepted:  KindState,
	RequestRejected:  KindState,
	ContainerPlaced:  KindState,
	ContainerFailed:  KindState,

	ContainerCommandRefused: KindState,
	ContainerLost:           KindState,
	HostReconciled:          KindState,
	StreamDrifted:           KindState,
	HostEventRefused:        KindState,
	HostQuarantined:         KindState,
	HostDraining:            KindState,
	HostLost:                KindState,
	ContainerHealth:         KindState,
	HostReturned:            KindState,
	ContainerRescheduled:    KindState,
	LeaderElected:           KindState,
	RequestPolicyViolated:   KindState,
	AuditCheckpoint:         KindState,
	AlertFiring:             KindState,
	AlertResolved:           KindState,

	SessionRequested:    KindState,
	SessionReady:        KindState,
	SessionExpiring:     KindState,
	SessionExpired:      KindState,
	SessionExtended:     KindState,
	SessionClosed:       KindState,
	SessionFailed:       KindState,
	SessionCodeExecuted: KindState,
	SessionFileCopied:   KindState,

	SessionCreateRequested: KindRequest,
	SessionExecRequested:   KindRequest,
	SessionExtendRequested: KindRequest,
	SessionCloseRequested:  KindRequest,
}

// Types returns every event type of the catalog, in no particular order.
func Types() []string {
	out := make([]string, 0, len(catalog))
	for t := range catalog {
		out = append(out, t)
	}
	return out
}

// KindOf returns the kind of an event type, KindUnknown if it is not in the
// catalog.
func KindOf(eventType string) Kind { return catalog[eventType] }

// Name is an event type without the catalog prefix; it names the schema file
// and ends the event's subject.
func Name(eventType string) string { return strings.TrimPrefix(eventType, Prefix) }

// DataSchema returns the URI of the JSON Schema for an event type's data.
func DataSchema(eventType string) string { return schemas.BaseURI + Name(eventType) + ".json" }
