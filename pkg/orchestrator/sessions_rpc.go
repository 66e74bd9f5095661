package orchestrator

import (
	"context"
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
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
	var d events.SessionIDRequestedData
	_ = events.Data(req, &d)
	reject := func(aerr *api.Error) (events.Event, error) {
		return o.publish(ctx, events.RequestRejected, events.RejectedData{RequestID: req.ID(), RequestType: req.Type(), Error: *aerr},
			events.CausedBy(req), events.WithID(derive(requestKey(req), "rejected")))
	}
	// The answer is the outcome event itself, as stored.
	cause := []events.Option{events.CausedBy(req)}
	var out events.Event
	var aerr *api.Error
	switch req.Type() {
	case events.SessionCreateRequested:
		var sr api.SessionRequest
		if err := events.Data(req, &sr); err != nil {
			return reject(&api.Error{Kind: api.KindInvalid, Field: "data", Message: err.Error()})
		}
		_, out, aerr = o.createSession(ctx, sr, by, &req)
	case events.SessionExecRequested:
		var run events.SessionExecRequestedData
		_ = events.Data(req, &run)
		var onChunk func(events.Chunk)
		if run.StreamTo != "" {
			onChunk = func(c events.Chunk) {
				b, _ := json.Marshal(c)
				_ = o.nc.Publish(run.StreamTo, b)
			}
		}
		_, out, aerr = o.runCode(ctx, run.SessionID, api.RunCodeRequest{Language: run.Language, Code: run.Code, TimeoutMs: run.TimeoutMs,
			Env: run.Env, WorkingDir: run.WorkingDir, Stdin: run.Stdin}, by, onChunk, &req)
	case events.SessionExtendRequested:
		_, out, aerr = o.extendSession(ctx, d.SessionID, time.Duration(d.TimeoutMs)*time.Millisecond, by, cause)
	case events.SessionCloseRequested:
		_, out, aerr = o.closeSession(ctx, d.SessionID, by, cause)
	default:
		aerr = &api.Error{Kind: api.KindInvalid, Field: "type", Message: req.Type() + " is not a session request"}
	}
	if aerr != nil {
		return reject(aerr)
	}
	return out, nil
}
