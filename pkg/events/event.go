package events

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/google/uuid"
)

// Event is a CloudEvent, the SDK's model.
type Event = event.Event

// Extension attributes the system sets. Names are lowercase alphanumeric, as
// CloudEvents requires.
const (
	// ExtCorrelationID is the id of the request that started a chain of events.
	ExtCorrelationID = "correlationid"
	// ExtCausationID is the id of the event that directly caused this one.
	ExtCausationID = "causationid"
	// ExtTraceParent and ExtTraceState carry W3C trace context.
	ExtTraceParent = "traceparent"
	ExtTraceState  = "tracestate"
	// Routing attributes: the host, container and session an event is about.
	ExtHostID      = "hostid"
	ExtContainerID = "containerid"
	ExtSessionID   = "sessionid"
	// ExtGeneration fences commands: the generation of the container's
	// desired state a command carries out, and on a state event the
	// generation of what caused it. A worker refuses a command older than
	// what it has carried out. Decimal, increasing per container.
	ExtGeneration = "generation"
	// ExtLeaderToken fences leaders: the fencing token of the orchestrator
	// that decided an event or command while it led. Readers of the log and
	// workers refuse what carries a token older than the last
	// leader.elected before it. Decimal.
	ExtLeaderToken = "leadertoken"
	// ExtStreamSeq is the events stream's sequence number of an event, set
	// on the copies the API serves (never stored): the cursor a reader
	// resumes from (GET /v1/events?from=SEQ, openagent events --from).
	ExtStreamSeq = "streamseq"
)

// Option sets an attribute of an event being built by New.
type Option func(*Event)

// WithID sets the event id. Use it to derive ids deterministically, so that a
// replayed step publishes the same id and is deduplicated.
func WithID(id string) Option { return func(e *Event) { e.SetID(id) } }

// WithTime sets the event time; by default it is the time of building.
func WithTime(t time.Time) Option { return func(e *Event) { e.SetTime(t) } }

// WithSubject sets the CloudEvents subject: what the event is about, in
// the producer's terms (a stream's name for stream.drifted).
func WithSubject(subject string) Option { return func(e *Event) { e.SetSubject(subject) } }

// WithExtension sets one extension attribute; an empty value sets nothing.
func WithExtension(name, value string) Option {
	return func(e *Event) {
		if value != "" {
			e.SetExtension(name, value)
		}
	}
}

// WithHost, WithContainer and WithSession set the routing attributes.
func WithHost(id string) Option      { return WithExtension(ExtHostID, id) }
func WithContainer(id string) Option { return WithExtension(ExtContainerID, id) }
func WithSession(id string) Option   { return WithExtension(ExtSessionID, id) }

// WithGeneration sets the generation of a command or state event.
func WithGeneration(g uint64) Option {
	return func(e *Event) {
		if g != 0 {
			e.SetExtension(ExtGeneration, strconv.FormatUint(g, 10))
		}
	}
}

// Generation returns an event's generation, 0 when it carries none.
func Generation(e Event) uint64 {
	g, _ := strconv.ParseUint(Ext(e, ExtGeneration), 10, 64)
	return g
}

// WithLeaderToken marks an event or command as decided by the leader
// holding token.
func WithLeaderToken(token uint64) Option {
	return func(e *Event) {
		if token != 0 {
			e.SetExtension(ExtLeaderToken, strconv.FormatUint(token, 10))
		}
	}
}

// LeaderToken returns the leader token an event carries, 0 when none.
func LeaderToken(e Event) uint64 {
	t, _ := strconv.ParseUint(Ext(e, ExtLeaderToken), 10, 64)
	return t
}

// WithTrace sets W3C trace context.
func WithTrace(traceparent, tracestate string) Option {
	return func(e *Event) {
		WithExtension(ExtTraceParent, traceparent)(e)
		WithExtension(ExtTraceState, tracestate)(e)
	}
}

// CausedBy links an event to the one that caused it: the causation id is the
// cause's id, the correlation id is carried over (or is the cause's id when
// the cause started the chain), and so is the trace context.
func CausedBy(cause Event) Option {
	return func(e *Event) {
		e.SetExtension(ExtCausationID, cause.ID())
		corr := Ext(cause, ExtCorrelationID)
		if corr == "" {
			corr = cause.ID()
		}
		e.SetExtension(ExtCorrelationID, corr)
		WithTrace(Ext(cause, ExtTraceParent), Ext(cause, ExtTraceState))(e)
	}
}

// New builds an event of a catalog type whose data is v encoded as JSON. It
// gets a fresh time-ordered id unless WithID says otherwise, and its
// dataschema is the schema of its type. New does not validate: publishing
// does.
func New(eventType, source string, v any, opts ...Option) (Event, error) {
	e := event.New()
	e.SetID(newID())
	e.SetType(eventType)
	e.SetSource(source)
	e.SetTime(time.Now().UTC())
	if KindOf(eventType) != KindUnknown {
		e.SetDataSchema(DataSchema(eventType))
	}
	for _, o := range opts {
		o(&e)
	}
	if err := e.SetData(event.ApplicationJSON, v); err != nil {
		return Event{}, fmt.Errorf("events: encode data of %s: %w", eventType, err)
	}
	return e, nil
}

// Data decodes an event's data into v.
func Data(e Event, v any) error {
	if err := json.Unmarshal(e.Data(), v); err != nil {
		return fmt.Errorf("%w: data of %s: %w", ErrInvalid, e.Type(), err)
	}
	return nil
}

// Ext returns a string extension attribute, "" when it is not set.
func Ext(e Event, name string) string {
	v, err := e.Context.GetExtension(name)
	if err != nil || v == nil {
		return ""
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Sprint(v)
	}
	return s
}

// CorrelationID returns the id of the request an event belongs to: its
// correlation id, or its own id when it starts a chain.
func CorrelationID(e Event) string {
	if c := Ext(e, ExtCorrelationID); c != "" {
		return c
	}
	return e.ID()
}

func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// StreamSeq is the events stream's sequence number the API served an
// event with (ExtStreamSeq); 0 when it carries none.
func StreamSeq(e Event) uint64 {
	n, _ := strconv.ParseUint(Ext(e, ExtStreamSeq), 10, 64)
	return n
}
