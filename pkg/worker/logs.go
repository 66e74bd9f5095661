package worker

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// maxLogReply bounds a reply's entries to stay under NATS's payload limit;
// the newest are kept.
const maxLogReply = 768 << 10

// serveLogs answers log requests until ctx ends; follows counts the
// followed logs being streamed, which end with ctx.
func (w *Worker) serveLogs(ctx context.Context, follows *sync.WaitGroup) (*nats.Subscription, error) {
	return w.cfg.NC.Subscribe(events.LogsSubject(w.cfg.HostID), func(m *nats.Msg) {
		var req events.LogsRequest
		if err := json.Unmarshal(m.Data, &req); err != nil {
			respond(m, events.LogsReply{Error: &api.Error{Kind: api.KindInvalid, Message: err.Error()}})
			return
		}
		if req.Follow {
			follows.Add(1)
			go func() {
				defer follows.Done()
				w.follow(ctx, req)
			}()
			_ = m.Respond([]byte(`{"entries":[]}`))
			return
		}
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		seq, err := w.logs(rctx, req)
		if err != nil {
			respond(m, events.LogsReply{Error: apiError(err, req.ContainerID)})
			return
		}
		reply := events.LogsReply{Entries: []driver.LogEntry{}}
		size := 0
		for e, err := range seq {
			if err != nil {
				break
			}
			reply.Entries = append(reply.Entries, e)
			size += len(e.Line) + 64
			for size > maxLogReply && len(reply.Entries) > 0 {
				size -= len(reply.Entries[0].Line) + 64
				reply.Entries = reply.Entries[1:]
			}
		}
		respond(m, reply)
	})
}

func (w *Worker) logs(ctx context.Context, req events.LogsRequest) (func(func(driver.LogEntry, error) bool), error) {
	drv, err := w.driverOf(ctx, req.ContainerID)
	if err != nil {
		return nil, err
	}
	return drv.Logs(ctx, req.ContainerID, driver.LogOptions{Tail: req.Tail, Since: req.Since, Timestamps: req.Timestamps, Follow: req.Follow})
}

func (w *Worker) follow(ctx context.Context, req events.LogsRequest) {
	ctx, cancel := context.WithTimeout(ctx, time.Hour)
	defer cancel()
	stop, err := w.cfg.NC.Subscribe(req.Inbox+".stop", func(*nats.Msg) { cancel() })
	if err == nil {
		defer stop.Unsubscribe()
	}
	end := nats.NewMsg(req.Inbox)
	end.Header.Set(events.EndHeader, "1")
	defer func() { _ = w.cfg.NC.PublishMsg(end) }()
	seq, err := w.logs(ctx, req)
	if err != nil {
		b, _ := json.Marshal(apiError(err, req.ContainerID))
		end.Data = b
		return
	}
	for e, err := range seq {
		if err != nil {
			return
		}
		b, _ := json.Marshal(e)
		if w.cfg.NC.Publish(req.Inbox, b) != nil {
			return
		}
	}
}

func respond(m *nats.Msg, v any) {
	b, _ := json.Marshal(v)
	_ = m.Respond(b)
}

func apiError(err error, id string) *api.Error {
	return &api.Error{Kind: api.ErrorKind(driver.KindOf(err)), Message: err.Error(), ID: id}
}
