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

// The sessions' NATS door: JSON request/reply with the HTTP API's bodies;
// every request names its session and who asks. A run's output streams
// to streamTo, if given, as worker.Chunk messages.
const (
	SubjectSessionCreate = events.RPCRoot + ".sessions.create"
	SubjectSessionGet    = events.RPCRoot + ".sessions.get"
	SubjectSessionList   = events.RPCRoot + ".sessions.list"
	SubjectSessionExtend = events.RPCRoot + ".sessions.extend"
	SubjectSessionClose  = events.RPCRoot + ".sessions.close"
	SubjectSessionExec   = events.RPCRoot + ".sessions.exec"
)

// SessionRPC is the body of a session request over NATS.
type SessionRPC struct {
	SessionID string             `json:"sessionId,omitempty"`
	By        string             `json:"by,omitempty"`
	All       bool               `json:"all,omitempty"`
	TimeoutMs int64              `json:"timeoutMs,omitempty"`
	Create    api.SessionRequest `json:"create,omitzero"`
	Run       api.RunCodeRequest `json:"run,omitzero"`
	StreamTo  string             `json:"streamTo,omitempty"`
}

func (o *Orchestrator) sessionRPC() map[string]nats.MsgHandler {
	handle := func(f func(ctx context.Context, q SessionRPC) (any, *api.Error)) nats.MsgHandler {
		return func(m *nats.Msg) {
			var q SessionRPC
			if err := json.Unmarshal(m.Data, &q); err != nil {
				o.respondJSON(m, &api.Error{Kind: "invalid", Field: "body", Message: err.Error()})
				return
			}
			if q.By == "" {
				q.By = "anonymous"
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*waitLimit)
			defer cancel()
			v, aerr := f(ctx, q)
			if aerr != nil {
				o.respondJSON(m, aerr)
				return
			}
			o.respondJSON(m, v)
		}
	}
	return map[string]nats.MsgHandler{
		SubjectSessionCreate: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) {
			return o.CreateSession(ctx, q.Create, q.By)
		}),
		SubjectSessionGet: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) {
			if s, ok := o.Session(q.SessionID); ok {
				return s, nil
			}
			return nil, &api.Error{Kind: "not_found", ID: q.SessionID, Message: "no session " + q.SessionID}
		}),
		SubjectSessionList: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) { return o.Sessions(q.All), nil }),
		SubjectSessionExtend: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) {
			return o.ExtendSession(ctx, q.SessionID, time.Duration(q.TimeoutMs)*time.Millisecond, q.By)
		}),
		SubjectSessionClose: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) {
			return o.CloseSession(ctx, q.SessionID, q.By)
		}),
		SubjectSessionExec: handle(func(ctx context.Context, q SessionRPC) (any, *api.Error) {
			var onChunk func(worker.Chunk)
			if q.StreamTo != "" {
				onChunk = func(c worker.Chunk) {
					b, _ := json.Marshal(c)
					_ = o.nc.Publish(q.StreamTo, b)
				}
			}
			return o.RunCode(ctx, q.SessionID, q.Run, q.By, onChunk)
		}),
	}
}
