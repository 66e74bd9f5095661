package events

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Subject roots. See the package comment for the whole scheme.
const (
	RequestsRoot = "openagent.requests"
	CommandsRoot = "openagent.commands"
	EventsRoot   = "openagent.events"
	// RPCRoot is where request/reply requests are served; nothing is stored.
	RPCRoot = "openagent.rpc"
	// IngestRoot is where workers publish their events, one subtree per
	// host: the orchestrator checks each and moves it to the events stream.
	IngestRoot = "openagent.ingest"
)

// IngestSubject is where a worker of host publishes an event whose place in
// the events stream is subject: the host's subtree of the ingest stream.
func IngestSubject(host, subject string) string {
	return IngestRoot + "." + host + "." + strings.TrimPrefix(subject, EventsRoot+".")
}

// IngestHost is the host whose subtree an ingest subject is in: who sent
// it, as the server's permissions vouch.
func IngestHost(subject string) string {
	rest, ok := strings.CutPrefix(subject, IngestRoot+".")
	if !ok {
		return ""
	}
	host, _, _ := strings.Cut(rest, ".")
	return host
}

// Subject returns the subject an event is published on, from its type and
// routing attributes: a command needs its hostid; a container's state event
// its containerid; a host's its hostid.
func Subject(e Event) (string, error) {
	name := Name(e.Type())
	switch KindOf(e.Type()) {
	case KindRequest:
		return RequestsRoot + "." + name, nil
	case KindCommand:
		host := Ext(e, ExtHostID)
		if !ValidToken(host) {
			return "", &ValidationError{Type: e.Type(), Field: ExtHostID, Rule: "subject-token", Message: fmt.Sprintf("a command needs a host id usable in a subject, got %q", host)}
		}
		return CommandsRoot + "." + host + "." + name, nil
	case KindState:
		entity, _, _ := strings.Cut(name, ".")
		var id, attr string
		switch entity {
		case "container", "exec":
			entity, attr = "container", ExtContainerID
		case "host":
			attr = ExtHostID
		case "session":
			attr = ExtSessionID
		case "request":
			id = RequestToken(CorrelationID(e))
		case "audit":
			id = "chain"
		case "stream", "leader", "alert":
			if id = e.Subject(); !ValidToken(id) {
				return "", &ValidationError{Type: e.Type(), Field: "subject", Rule: "subject-token", Message: fmt.Sprintf("%s needs the stream's, election's or rule's name as its subject, got %q", e.Type(), id)}
			}
		}
		if attr != "" {
			id = Ext(e, attr)
			if !ValidToken(id) {
				return "", &ValidationError{Type: e.Type(), Field: attr, Rule: "subject-token", Message: fmt.Sprintf("%s needs %s usable in a subject, got %q", e.Type(), attr, id)}
			}
		}
		return EventsRoot + "." + entity + "." + id + "." + name, nil
	}
	return "", &ValidationError{Type: e.Type(), Field: "type", Rule: "catalog", Message: fmt.Sprintf("unknown event type %q", e.Type())}
}

// CommandFilter is the subject filter of one host's commands.
func CommandFilter(hostID string) string { return CommandsRoot + "." + hostID + ".>" }

// ContainerFilter is the subject filter of one container's state events.
func ContainerFilter(containerID string) string {
	return EventsRoot + ".container." + containerID + ".>"
}

// AlertFilter is the subject filter of the alerts' events.
const AlertFilter = EventsRoot + ".alert.>"

// RequestFilter is the subject filter of the outcome events of one request.
func RequestFilter(requestID string) string {
	return EventsRoot + ".request." + RequestToken(requestID) + ".>"
}

// ValidToken reports whether s can stand as one token of a subject: not
// empty, at most 128 bytes, and only letters, digits, '-' and '_'.
func ValidToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// RequestToken maps a request id, which a service chooses freely, to a
// subject token: the id itself when it is a valid token, else a hash of it.
func RequestToken(id string) string {
	if ValidToken(id) {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "h" + hex.EncodeToString(sum[:12])
}
