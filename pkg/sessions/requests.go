package sessions

import (
	"context"
	"encoding/json"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// Handle carries out a session request, a valid CloudEvent of one of the
// session request types, and returns the stored event that says how it
// went: session.ready, exec.completed, session.extended, session.closed,
// or request.rejected. The request's source names who asks. An exec
// request that names a subject (streamTo) gets its output there while it
// is produced. An error means no outcome could be stored.
func (s *Service) Handle(ctx context.Context, req events.Event) (_ events.Event, err error) {
	ctx, span := events.StartSpan(ctx, s.tracer, "handle "+events.Name(req.Type()), attribute.String("cloudevents.event_id", req.ID()))
	defer func() { events.EndSpan(span, err) }()
	// Over NATS a caller is its source, with a service's rights: the bus
	// let it publish here only with a service's credential or more.
	who := api.Principal{Name: req.Source(), Role: events.RoleService}
	cause := []events.Option{events.CausedBy(req)}
	var out events.Event
	switch req.Type() {
	case events.SessionCreateRequested:
		var sr api.SessionRequest
		if err := events.Data(req, &sr); err != nil {
			return s.reject(ctx, req, &api.Error{Kind: api.KindInvalid, Field: "data", Message: err.Error()})
		}
		_, out, err = s.create(ctx, sr, who, cause)
	case events.SessionExecRequested:
		var run events.SessionExecRequestedData
		if err := events.Data(req, &run); err != nil {
			return s.reject(ctx, req, &api.Error{Kind: api.KindInvalid, Field: "data", Message: err.Error()})
		}
		var onChunk func(events.Chunk)
		if run.StreamTo != "" {
			onChunk = func(c events.Chunk) {
				b, _ := json.Marshal(c)
				_ = s.nc.Publish(run.StreamTo, b)
			}
		}
		_, out, err = s.runCode(ctx, run.SessionID, api.RunCodeRequest{Language: run.Language, Code: run.Code, TimeoutMs: run.TimeoutMs,
			Env: run.Env, WorkingDir: run.WorkingDir, Stdin: run.Stdin}, who, onChunk, cause)
	case events.SessionExtendRequested, events.SessionCloseRequested:
		var d events.SessionIDRequestedData
		if err := events.Data(req, &d); err != nil {
			return s.reject(ctx, req, &api.Error{Kind: api.KindInvalid, Field: "data", Message: err.Error()})
		}
		if req.Type() == events.SessionExtendRequested {
			_, out, err = s.extend(ctx, d.SessionID, time.Duration(d.TimeoutMs)*time.Millisecond, who, cause)
		} else {
			_, out, err = s.close(ctx, d.SessionID, who, cause)
		}
	default:
		err = &api.Error{Kind: api.KindInvalid, Field: "type", Message: req.Type() + " is not a session request"}
	}
	if err != nil {
		return s.reject(ctx, req, api.AsError(err))
	}
	return out, nil
}

// reject publishes a session request's rejection and returns it.
func (s *Service) reject(ctx context.Context, req events.Event, e *api.Error) (events.Event, error) {
	return s.publish(ctx, events.RequestRejected, events.RejectedData{RequestID: req.ID(), RequestType: req.Type(), Error: *e},
		events.CausedBy(req), events.WithID(events.DeriveID(events.RequestKey(req), "rejected")))
}
