// Package natsrpc is the control plane's NATS request/reply door: the
// subjects of events.SubjectRequest and its siblings, served by a queue
// group so that any number of orchestrators share them. It turns messages
// into events and queries, hands them to the orchestrator or the sessions,
// and answers with what they return; the decisions are theirs.
package natsrpc

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/sessions"
)

const (
	// queue is the queue group the door's subscriptions share.
	queue = "orchestrator"
	// requestTimeout bounds the handling of a container request.
	requestTimeout = 30 * time.Second
	// sessionTimeout bounds a session request: making a sandbox and
	// running code in it each wait up to orchestrator.DefaultWait.
	sessionTimeout = 2*orchestrator.DefaultWait + 5*time.Minute
	// grace is how long a shutdown waits for the requests in hand.
	grace = 10 * time.Second
)

// Config wires the door.
type Config struct {
	NC           *nats.Conn
	Validator    *events.Validator
	Orchestrator *orchestrator.Orchestrator
	Sessions     *sessions.Service
	Logger       *slog.Logger
	// Concurrency bounds the requests handled at once; 64 when zero.
	Concurrency int
	// Serve says which subjects this door answers; all when empty.
	Serve Part
	// Tracer makes every request a server span continuing the trace the
	// request carries; nil traces nothing.
	Tracer trace.TracerProvider
}

// Part is a part of the door's subjects.
type Part int

// Parts: every orchestrator answers the containers' subjects (a follower
// hands writes to the leader), and only the leader the sessions', whose
// state lives with its term.
const (
	All Part = iota
	Containers
	Sessions
)

func (p Part) serves(subject string) bool {
	switch p {
	case Containers:
		return subject != events.SubjectSessions
	case Sessions:
		return subject == events.SubjectSessions
	}
	return true
}

// Server is the door. Run it.
type Server struct {
	cfg    Config
	log    *slog.Logger
	tracer trace.Tracer // nil traces nothing
	ready  chan struct{}
}

// New returns the door.
func New(cfg Config) *Server {
	if cfg.Concurrency == 0 {
		cfg.Concurrency = 64
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{cfg: cfg, log: log, ready: make(chan struct{})}
	if cfg.Tracer != nil {
		s.tracer = cfg.Tracer.Tracer("github.com/openagent/orchestrator/pkg/gateway/natsrpc")
	}
	return s
}

// Ready is closed once the door takes requests.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run serves the door once the orchestrator and the sessions are ready,
// until ctx ends; then it stops taking requests and waits for those in
// hand, for at most the grace: a shutdown lets answers already being made
// go out.
func (s *Server) Run(ctx context.Context) error {
	readies := []<-chan struct{}{s.cfg.Orchestrator.Ready()}
	if s.cfg.Serve != Containers {
		readies = append(readies, s.cfg.Sessions.Ready())
	}
	for _, ready := range readies {
		select {
		case <-ready:
		case <-ctx.Done():
			return nil
		}
	}
	var subs []*nats.Subscription
	var handlers sync.WaitGroup
	// A subscription's handler runs one message at a time; requests are
	// handled concurrently, up to the bound.
	slots := make(chan struct{}, s.cfg.Concurrency)
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	add := func(subject string, h func(context.Context, *nats.Msg)) error {
		sub, err := s.cfg.NC.QueueSubscribe(subject, queue, func(m *nats.Msg) {
			slots <- struct{}{}
			handlers.Add(1)
			go func() {
				defer func() { <-slots; handlers.Done() }()
				h(base, m)
			}()
		})
		if err == nil {
			subs = append(subs, sub)
		}
		return err
	}
	var err error
	for subject, h := range map[string]func(context.Context, *nats.Msg){
		events.SubjectRequest:   s.request,
		events.SubjectSessions:  s.session,
		events.SubjectContainer: s.container,
		events.SubjectList:      s.list,
		events.SubjectHosts:     func(_ context.Context, m *nats.Msg) { s.respondJSON(m, brief(s.cfg.Orchestrator.Hosts())) },
	} {
		if !s.cfg.Serve.serves(subject) {
			continue
		}
		if err = add(subject, h); err != nil {
			break
		}
	}
	if err == nil {
		close(s.ready)
		<-ctx.Done()
	}
	for _, sub := range subs {
		_ = sub.Drain()
	}
	// Drained subscriptions hand over what they still hold, then close.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if !slices.ContainsFunc(subs, (*nats.Subscription).IsValid) {
			break
		}
	}
	stop := time.AfterFunc(grace, cancel)
	defer stop.Stop()
	handlers.Wait()
	return err
}

// request serves a container request: the answer is its outcome event.
func (s *Server) request(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	s.respondEvent(ctx, m, false, func(ctx context.Context, req events.Event) (events.Event, error) {
		// This door takes a service's requests; what is asked of hosts is
		// the operator's, whose credential alone may publish it on the
		// requests stream.
		if req.Type() == events.HostDrainRequested {
			return s.cfg.Orchestrator.Reject(ctx, req.ID(), req.Type(), &api.Error{Kind: api.KindPermission, Field: "type",
				Message: "draining a host is the operator's: publish it on the requests stream with an admin credential, or POST /v1/hosts/{id}/drain as the admin"})
		}
		return s.cfg.Orchestrator.Handle(ctx, req)
	})
}

// session serves a session request: the answer is the event that carried
// it out, or its rejection.
func (s *Server) session(ctx context.Context, m *nats.Msg) {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	s.respondEvent(ctx, m, true, s.cfg.Sessions.Handle)
}

// respondEvent reads a request event from m, hands it to handle and
// answers with the event it returns. A message that is no valid event is
// answered with its rejection; validate checks the event's data here,
// for handlers that do not check it themselves.
func (s *Server) respondEvent(ctx context.Context, m *nats.Msg, validate bool, handle func(context.Context, events.Event) (events.Event, error)) {
	req, err := events.FromMsg(m)
	if err == nil {
		err = s.cfg.Validator.CheckSize(m)
	}
	if err == nil && validate {
		err = s.cfg.Validator.Validate(req)
	}
	var reply events.Event
	if err != nil {
		id, typ := events.Identify(m)
		reply, err = s.cfg.Orchestrator.Reject(ctx, id, typ, err)
	} else {
		reply, err = s.serve(ctx, m, req, handle)
	}
	if err != nil {
		s.respondJSON(m, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	out, err := events.ToMsg(m.Reply, reply)
	if err == nil {
		err = m.RespondMsg(out)
	}
	if err != nil {
		s.log.Warn("natsrpc: reply", "subject", m.Subject, "err", err)
	}
}

// serve hands a request on, in a server span continuing its trace when
// tracing.
func (s *Server) serve(ctx context.Context, m *nats.Msg, req events.Event, handle func(context.Context, events.Event) (events.Event, error)) (events.Event, error) {
	if s.tracer == nil {
		return handle(ctx, req)
	}
	ctx, span := s.tracer.Start(events.TraceContext(ctx, req), "serve "+events.Name(req.Type()), trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", m.Subject),
			attribute.String("cloudevents.event_id", req.ID())))
	reply, err := handle(ctx, req)
	events.EndSpan(span, err)
	return reply, err
}

func (s *Server) container(_ context.Context, m *nats.Msg) {
	var q events.ContainerQuery
	if err := json.Unmarshal(m.Data, &q); err != nil {
		s.respondJSON(m, &api.Error{Kind: api.KindInvalid, Field: "body", Message: "not a container query: " + err.Error()})
		return
	}
	c, ok := s.cfg.Orchestrator.Container(q.ID)
	if !ok {
		s.respondJSON(m, &api.Error{Kind: api.KindNotFound, ID: q.ID, Message: "no container " + q.ID})
		return
	}
	s.respondJSON(m, c)
}

func (s *Server) list(_ context.Context, m *nats.Msg) {
	var q events.ListQuery
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &q); err != nil {
			s.respondJSON(m, &api.Error{Kind: api.KindInvalid, Field: "body", Message: "not a list query: " + err.Error()})
			return
		}
	}
	s.respondJSON(m, s.cfg.Orchestrator.List(q))
}

func (s *Server) respondJSON(m *nats.Msg, v any) {
	nc := s.cfg.NC
	b, _ := json.Marshal(v)
	if int64(len(b)) > nc.MaxPayload() {
		b, _ = json.Marshal(&api.Error{Kind: api.KindTooLarge, Message: fmt.Sprintf(
			"the answer is %d bytes, more than NATS carries (%d); narrow the query or use the HTTP API", len(b), nc.MaxPayload())})
	}
	if err := m.Respond(b); err != nil {
		s.log.Warn("natsrpc: reply", "subject", m.Subject, "err", err)
	}
}

// brief leaves out what the drivers enforce, setting by setting: a long
// list per host that would take a large fleet's answer past the bus's
// message size. The HTTP API's hosts carry it.
func brief(hosts []api.Host) []api.Host {
	for i := range hosts {
		drivers := make([]api.DriverInfo, len(hosts[i].Drivers))
		for j, d := range hosts[i].Drivers {
			d.Enforcement = nil
			drivers[j] = d
		}
		hosts[i].Drivers = drivers
	}
	return hosts
}
