package orchestrator

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// RPC subjects: the NATS request/reply door. Requests are CloudEvents and
// the reply is the accepted or rejected CloudEvent; queries are JSON.
const (
	SubjectRequest    = events.RPCRoot + ".request"
	SubjectGet        = events.RPCRoot + ".containers.get"
	SubjectList       = events.RPCRoot + ".containers.list"
	SubjectListHosts  = events.RPCRoot + ".hosts.list"
	rpcHandlerTimeout = 30 * time.Second
	// rpcGrace is how long a shutdown waits for the requests in hand.
	rpcGrace = 10 * time.Second
)

// ListQuery selects containers, for the list query and the HTTP API.
type ListQuery struct {
	All     bool              `json:"all,omitempty"`
	Session string            `json:"session,omitempty"`
	Status  string            `json:"status,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// serveRPC serves the request/reply door until ctx ends, then stops
// taking requests and waits for those in hand, for at most rpcGrace: a
// shutdown lets answers already being made go out.
func (o *Orchestrator) serveRPC(ctx context.Context) error {
	var subs []*nats.Subscription
	var handlers sync.WaitGroup
	// A subscription's handler runs one message at a time; requests are
	// handled concurrently, up to the orchestrator's bound.
	slots := make(chan struct{}, o.conc)
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	add := func(subject string, h func(context.Context, *nats.Msg)) error {
		s, err := o.nc.QueueSubscribe(subject, "orchestrator", func(m *nats.Msg) {
			slots <- struct{}{}
			handlers.Add(1)
			go func() {
				defer func() { <-slots; handlers.Done() }()
				h(base, m)
			}()
		})
		if err == nil {
			subs = append(subs, s)
		}
		return err
	}
	err := add(SubjectRequest, func(ctx context.Context, m *nats.Msg) {
		ctx, cancel := context.WithTimeout(ctx, rpcHandlerTimeout)
		defer cancel()
		var reply events.Event
		req, err := events.FromMsg(m)
		if err == nil {
			err = o.v.CheckSize(m)
		}
		if err != nil {
			reply, err = o.Reject(ctx, m.Header.Get("ce-id"), m.Header.Get("ce-type"), err)
		} else {
			reply, err = o.Handle(ctx, req)
		}
		if err != nil {
			o.respondJSON(m, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
			return
		}
		out, err := events.ToMsg(m.Reply, reply)
		if err == nil {
			_ = m.RespondMsg(out)
		}
	})
	if err == nil {
		err = add(SubjectGet, func(_ context.Context, m *nats.Msg) {
			var q struct{ ID string }
			_ = json.Unmarshal(m.Data, &q)
			c, ok := o.Container(q.ID)
			if !ok {
				o.respondJSON(m, &api.Error{Kind: api.KindNotFound, ID: q.ID, Message: "no container " + q.ID})
				return
			}
			o.respondJSON(m, c)
		})
	}
	if err == nil {
		err = add(SubjectList, func(_ context.Context, m *nats.Msg) {
			var q ListQuery
			_ = json.Unmarshal(m.Data, &q)
			o.respondJSON(m, o.List(q))
		})
	}
	if err == nil {
		err = add(SubjectListHosts, func(_ context.Context, m *nats.Msg) { o.respondJSON(m, o.Hosts()) })
	}
	if err == nil {
		err = add(SubjectSessions, o.serveSessionRequest)
	}
	if err == nil {
		close(o.ready)
		<-ctx.Done()
	}
	for _, s := range subs {
		_ = s.Drain()
	}
	// Drained subscriptions hand over what they still hold, then close.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !slices.ContainsFunc(subs, (*nats.Subscription).IsValid) {
			break
		}
	}
	grace := time.AfterFunc(rpcGrace, cancel)
	defer grace.Stop()
	handlers.Wait()
	return err
}

func (o *Orchestrator) respondJSON(m *nats.Msg, v any) {
	b, _ := json.Marshal(v)
	if int64(len(b)) > o.nc.MaxPayload() {
		b, _ = json.Marshal(&api.Error{Kind: api.KindTooLarge, Message: fmt.Sprintf(
			"the answer is %d bytes, more than NATS carries (%d); narrow the query or use the HTTP API", len(b), o.nc.MaxPayload())})
	}
	if err := m.Respond(b); err != nil {
		o.log.Warn("orchestrator: reply", "subject", m.Subject, "err", err)
	}
}

// Container returns a container by id or name.
func (o *Orchestrator) Container(id string) (api.Container, bool) {
	r, ok := o.state.get(id)
	if !ok {
		return api.Container{}, false
	}
	return o.state.view(r, o.live), true
}

// List returns the containers q selects: running ones, or with All every
// one not removed.
func (o *Orchestrator) List(q ListQuery) []api.Container {
	out := []api.Container{}
	for _, r := range o.state.list() {
		c := o.state.view(r, o.live)
		switch {
		case q.Status != "" && string(c.Status) != q.Status:
			continue
		case q.Status == "" && !q.All && c.Status != api.StatusRunning:
			continue
		case q.Session != "" && c.SessionID != q.Session:
			continue
		}
		match := true
		for k, v := range q.Labels {
			if c.Labels[k] != v {
				match = false
			}
		}
		if match {
			out = append(out, c)
		}
	}
	return out
}
