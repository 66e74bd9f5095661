package events

import (
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// The wire types of the request/reply subjects between the control plane
// and the workers: defined here, with the rest of the bus contract, not by
// one side of the wire.

// The control plane's request/reply door. A request is a CloudEvent
// (binary or structured) answered with its outcome event, accepted or
// rejected; a session request is answered with the event that carried it
// out: session.ready, exec.completed, session.extended, session.closed,
// or request.rejected. Queries are JSON: a ContainerQuery or a ListQuery,
// answered with a container, a list, or an Error.
const (
	SubjectRequest   = RPCRoot + ".request"
	SubjectSessions  = RPCRoot + ".sessions"
	SubjectContainer = RPCRoot + ".containers.get"
	SubjectList      = RPCRoot + ".containers.list"
	SubjectHosts     = RPCRoot + ".hosts.list"
)

// ContainerQuery asks for one container by id, unique prefix or name.
type ContainerQuery struct {
	ID string `json:"id"`
}

// ListQuery selects containers: running ones, or with All every one not
// removed; narrowed by session, status and labels.
type ListQuery struct {
	All     bool              `json:"all,omitempty"`
	Session string            `json:"session,omitempty"`
	Status  string            `json:"status,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// LogsSubject is where a host serves its containers' logs: output stays on
// the host until asked for.
func LogsSubject(hostID string) string { return RPCRoot + ".host." + hostID + ".logs" }

// SamplesRoot is where workers publish their containers' resource samples,
// one subject per host (SamplesSubject), at most once: a sample missed is
// replaced by the next. The subject names the host, as the bus's
// permissions vouch.
const SamplesRoot = "openagent.samples"

// SamplesSubject is where a host's samples are published.
func SamplesSubject(hostID string) string { return SamplesRoot + "." + hostID }

// SamplesHost is the host a samples subject names.
func SamplesHost(subject string) string {
	host, _ := strings.CutPrefix(subject, SamplesRoot+".")
	return host
}

// SamplesBatch is one message of a host's samples; a round of samples
// may take several.
type SamplesBatch struct {
	Samples []ContainerSample `json:"samples"`
}

// LogsRequest asks a host for a container's output. With Follow, entries
// are published one by one to Inbox, ending with a message that has the
// header EndHeader (carrying an error, if any); a message to Inbox+".stop"
// ends it early. Without Follow the reply is a LogsReply.
type LogsRequest struct {
	ContainerID string    `json:"containerId"`
	Tail        int       `json:"tail,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	Timestamps  bool      `json:"timestamps,omitempty"`
	Follow      bool      `json:"follow,omitempty"`
	Inbox       string    `json:"inbox,omitempty"`
}

// LogsReply is the answer to a LogsRequest without Follow.
type LogsReply struct {
	Entries []driver.LogEntry `json:"entries"`
	Error   *Error            `json:"error,omitempty"`
}

// EndHeader marks the last message of a followed log.
const EndHeader = "Openagent-End"

// Chunk is one piece of an exec's output, published while it is produced
// to the subject the exec command names (streamTo); not stored.
type Chunk struct {
	Stream string `json:"stream"` // stdout or stderr
	Data   string `json:"data"`
}
