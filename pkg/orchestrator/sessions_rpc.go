package orchestrator

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/worker"
)

// SubjectSessions is the sessions' NATS door: a session request as a
// CloudEvent (binary or structured), answered with the outcome event:
// session.ready, exec.completed, session.extended, session.closed, or
// request.rejected. The request's source names who asks.
const SubjectSessions = events.RPCRoot + ".sessions"

func (o *Orchestrator) serveSessionRequest(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, 2*waitLimit+5*time.Minute)
	defer cancel()
	reply, err := o.sessionRequest(ctx, m)
	if err != nil {
		o.respondJSON(m, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	if out, err := events.ToMsg(m.Reply, reply); err == nil {
		_ = m.RespondMsg(out)
	}
}

func (o *Orchestrator) sessionRequest(ctx context.Context, m *nats.Msg) (events.Event, error) {
	req, err := events.FromMsg(m)
	if err == nil {
		err = o.v.CheckSize(m)
	}
	if err == nil {
		err = o.v.Validate(req)
	}
	if err != nil {
		return o.Reject(ctx, m.Header.Get("ce-id"), m.Header.Get("ce-type"), err)
	}
	by := req.Source()
	var d struct {
		SessionID string `json:"sessionId"`
		TimeoutMs int64  `json:"timeoutMs"`
		StreamTo  string `json:"streamTo"`
	}
	_ = events.Data(req, &d)
	reject := func(aerr *api.Error) (events.Event, error) {
		return o.publish(ctx, events.RequestRejected, map[string]any{"requestId": req.ID(), "requestType": req.Type(), "error": aerr},
			events.CausedBy(req), events.WithID(derive(requestKey(req), "rejected")))
	}
	outcome := func(typ string, id string, s *api.Session, data map[string]any) (events.Event, error) {
		data["sessionId"] = s.ID
		if s.ContainerID != "" {
			data["containerId"] = s.ContainerID
		}
		if s.Host != "" {
			data["hostId"] = s.Host
		}
		e, err := events.New(typ, o.source, data, events.CausedBy(req), events.WithSession(s.ID), events.WithContainer(s.ContainerID), events.WithID(id))
		return e, err
	}
	switch req.Type() {
	case events.SessionCreateRequested:
		var sr api.SessionRequest
		if err := events.Data(req, &sr); err != nil {
			return reject(&api.Error{Kind: api.KindInvalid, Field: "data", Message: err.Error()})
		}
		s, aerr := o.CreateSession(ctx, sr, by)
		if aerr != nil {
			return reject(aerr)
		}
		return outcome(events.SessionReady, derive(s.ID, "ready"), s, map[string]any{"expiresAt": s.ExpiresAt,
			"readyMs": float64(s.ReadyAt.Sub(s.CreatedAt).Microseconds()) / 1000})
	case events.SessionExecRequested:
		var run api.RunCodeRequest
		_ = events.Data(req, &run)
		var onChunk func(worker.Chunk)
		if d.StreamTo != "" {
			onChunk = func(c worker.Chunk) {
				b, _ := json.Marshal(c)
				_ = o.nc.Publish(d.StreamTo, b)
			}
		}
		res, aerr := o.RunCode(ctx, d.SessionID, run, by, onChunk)
		if aerr != nil {
			return reject(aerr)
		}
		s, _ := o.Session(d.SessionID)
		return outcome(events.ExecCompleted, derive(res.ExecID, "reply"), s, map[string]any{"execId": res.ExecID, "exitCode": res.ExitCode,
			"stdout": res.Stdout, "stderr": res.Stderr, "truncated": res.Truncated, "timedOut": res.TimedOut, "durationMs": res.DurationMs})
	case events.SessionExtendRequested:
		s, aerr := o.ExtendSession(ctx, d.SessionID, time.Duration(d.TimeoutMs)*time.Millisecond, by)
		if aerr != nil {
			return reject(aerr)
		}
		return outcome(events.SessionExtended, derive(d.SessionID, "extended "+s.ExpiresAt.String()), s, map[string]any{"expiresAt": s.ExpiresAt, "setBy": by})
	case events.SessionCloseRequested:
		s, aerr := o.CloseSession(ctx, d.SessionID, by)
		if aerr != nil {
			return reject(aerr)
		}
		return outcome(events.SessionClosed, derive(d.SessionID, "closed"), s, map[string]any{"closedBy": by, "reason": "closed on request"})
	}
	return reject(&api.Error{Kind: api.KindInvalid, Field: "type", Message: req.Type() + " is not a session request"})
}
