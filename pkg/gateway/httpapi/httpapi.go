// Package httpapi is the HTTP door: the REST API that openapi.json
// describes, the CloudEvents HTTP binding, the events and logs streams,
// and server-sent events for code runs. It turns calls into request events
// and hands them to the orchestrator and the sessions; the decisions are
// theirs.
package httpapi

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	noopmetric "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/openagent/orchestrator/internal/version"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator"
	"github.com/openagent/orchestrator/pkg/sessions"
)

//go:embed openapi.json
var openAPI []byte

// maxBody caps a request body at the event size cap.
const maxBody = events.DefaultMaxSize

// Config wires the door.
type Config struct {
	NC           *nats.Conn
	JS           jetstream.JetStream
	Validator    *events.Validator
	Orchestrator *orchestrator.Orchestrator
	Sessions     *sessions.Service
	// Tokens authenticates the callers; nil leaves the door open.
	Tokens *creds.Tokens
	// Metrics serves GET /metrics (Prometheus' text format) to any
	// principal that may read; nil answers 404.
	Metrics http.Handler
	// Tracer makes every call a server span, continuing the caller's
	// trace (its traceparent header); nil traces nothing, while the
	// caller's trace context still rides in the request it makes.
	Tracer trace.TracerProvider
}

// server is the door's state: what it hands calls to.
type server struct {
	Config
	o *orchestrator.Orchestrator
}

// New returns the HTTP API.
func New(cfg Config) http.Handler {
	s := &server{Config: cfg, o: cfg.Orchestrator}
	mux := http.NewServeMux()
	allowed := map[string][]string{}
	for _, rt := range s.routes() {
		h := rt.handler
		if !rawBody[rt.method+" "+rt.path] {
			h = contentTypes(h)
		}
		if strings.HasPrefix(rt.path, "/v1/sessions") || strings.HasPrefix(rt.path, "/v1/pools") {
			h = s.leaderOnly(h)
		}
		mux.HandleFunc(rt.method+" "+rt.path, s.guard(accessOf(rt), h))
		allowed[rt.path] = append(allowed[rt.path], rt.method)
	}
	// The mux's own 404 and 405 are plain text; the API answers in JSON.
	for path, methods := range allowed {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", strings.Join(methods, ", "))
			writeJSON(w, http.StatusMethodNotAllowed, &api.Error{Kind: api.KindInvalid, Field: "method",
				Message: fmt.Sprintf("%s does not take %s; it takes %s", path, r.Method, strings.Join(methods, ", "))})
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &api.Error{Kind: api.KindNotFound, Message: "no such path: " + r.URL.Path + " (GET /v1/openapi.json lists the API)"})
	})
	if cfg.Tracer == nil {
		return mux
	}
	return otelhttp.NewHandler(mux, "openagent-api", otelhttp.WithTracerProvider(cfg.Tracer),
		otelhttp.WithPropagators(propagation.TraceContext{}), otelhttp.WithMeterProvider(noopmetric.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if r.Pattern != "" {
				return r.Pattern // "POST /v1/containers"
			}
			return r.Method
		}))
}

// rawBody are the routes whose body is not JSON but bytes of any type.
var rawBody = map[string]bool{"PUT /v1/sessions/{id}/files": true}

// contentTypes refuses, with 415, a body in a media type the API does not
// read: it reads JSON (application/json, or any +json type) and CloudEvents
// (application/cloudevents, in structured mode; binary mode's data is
// JSON). A body with no content type is taken as JSON.
func contentTypes(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ct := r.Header.Get("Content-Type")
		if ct == "" || r.ContentLength == 0 && r.Method != http.MethodPost {
			h(w, r)
			return
		}
		mt, _, err := mime.ParseMediaType(ct)
		switch {
		case err != nil:
			writeJSON(w, http.StatusUnsupportedMediaType, &api.Error{Kind: api.KindInvalid, Field: "Content-Type", Message: fmt.Sprintf("%q is not a media type: %v", ct, err)})
		case mt == "application/cloudevents-batch+json":
			writeJSON(w, http.StatusUnsupportedMediaType, &api.Error{Kind: api.KindNotSupported, Field: "Content-Type",
				Message: "CloudEvents batch mode is not supported: send one event per request (binary or structured mode)"})
		case mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "application/cloudevents":
			h(w, r)
		default:
			writeJSON(w, http.StatusUnsupportedMediaType, &api.Error{Kind: api.KindInvalid, Field: "Content-Type",
				Message: fmt.Sprintf("the API reads JSON, not %s: send Content-Type: application/json", mt)})
		}
	}
}

// accessOf is what a route asks of its caller: reading takes any
// principal, changing anything a role that may.
func accessOf(rt route) access {
	switch {
	case rt.path == "/healthz" || rt.path == "/v1/version" || rt.path == "/v1/openapi.json":
		return public
	case rt.method == http.MethodGet:
		return read
	case rt.path == "/v1/pools" || strings.HasPrefix(rt.path, "/v1/hosts/"):
		return adminOnly
	}
	return write
}

type route struct {
	method, path string
	handler      http.HandlerFunc
}

// routes lists the API; the OpenAPI document describes exactly these, as a
// test checks.
func (s *server) routes() []route {
	return append([]route{
		{"GET", "/healthz", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-s.o.Ready():
				role, leader := "follower", ""
				if s.o.Leading() {
					role = "leader"
				}
				if h := s.o.Leader(r.Context()); h != nil {
					leader = h.Holder
				}
				writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "role": role, "id": s.o.ID(), "leader": leader})
			default:
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
			}
		}},
		{"GET", "/metrics", func(w http.ResponseWriter, r *http.Request) {
			if s.Metrics == nil {
				writeError(w, &api.Error{Kind: api.KindNotFound, Message: "this orchestrator keeps no metrics"})
				return
			}
			s.Metrics.ServeHTTP(w, r)
		}},
		{"GET", "/v1/version", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"version": version.Version})
		}},
		{"GET", "/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openAPI)
		}},
		{"POST", "/v1/containers", s.create},
		{"GET", "/v1/containers", s.list},
		{"GET", "/v1/containers/{id}", s.get},
		{"DELETE", "/v1/containers/{id}", s.operation(events.ContainerRemoveRequested)},
		{"POST", "/v1/containers/{id}/start", s.operation(events.ContainerStartRequested)},
		{"POST", "/v1/containers/{id}/stop", s.operation(events.ContainerStopRequested)},
		{"POST", "/v1/containers/{id}/exec", s.exec},
		{"GET", "/v1/containers/{id}/logs", s.logs},
		{"GET", "/v1/hosts", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.o.Hosts()) }},
		{"POST", "/v1/hosts/{id}/drain", s.drain},
		{"GET", "/v1/alerts", s.alerts},
		{"GET", "/v1/events", s.eventStream},
		{"POST", "/v1/events", s.cloudEvent},
	}, s.sessionRoutes()...)
}

// leaderOnly answers a request for the sessions or pools, which only the
// leader serves, on a follower: 503, naming the leader and where its API
// answers (in the body and the OpenAgent-Leader header), so that the
// caller goes there. Containers' requests need no such answer: a follower
// hands them to the leader itself.
func (s *server) leaderOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Sessions.Serving() {
			h(w, r)
			return
		}
		msg := "this orchestrator does not lead the control plane, and only the leader serves sessions and pools"
		if l := s.o.Leader(r.Context()); l != nil && l.Holder != s.o.ID() {
			msg += fmt.Sprintf("; the leader is %s", l.Holder)
			if l.Address != "" {
				msg += " at " + l.Address
				w.Header().Set("OpenAgent-Leader", l.Address)
			}
		} else {
			msg += "; no leader is elected yet, try again in a few seconds"
		}
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: msg})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with an error: its kind's status, and the error as
// the body.
func writeError(w http.ResponseWriter, err error) {
	e := api.AsError(err)
	writeJSON(w, api.Info(e.Kind).Status, e)
}

// readBody reads a body, refusing one over the size cap.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, &api.Error{Kind: api.KindTooLarge, Field: "body", Message: fmt.Sprintf("body exceeds %d bytes", maxBody)}
	}
	if err != nil {
		return nil, &api.Error{Kind: api.KindInvalid, Field: "body", Message: err.Error()}
	}
	return b, nil
}

// jsonError says what is wrong with a JSON body in the API's terms: the
// field's path and the JSON type it wants, not Go's struct names.
func jsonError(err error) *api.Error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return &api.Error{Kind: api.KindInvalid, Field: te.Field, Message: fmt.Sprintf("%s: must be %s, got %s", te.Field, jsonKind(te.Type), te.Value)}
	case errors.As(err, &te):
		return &api.Error{Kind: api.KindInvalid, Field: "body", Message: fmt.Sprintf("body: must be %s, got %s", jsonKind(te.Type), te.Value)}
	case errors.As(err, &se):
		return &api.Error{Kind: api.KindInvalid, Field: "body", Message: fmt.Sprintf("body is not JSON: %v (at byte %d)", err, se.Offset)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &api.Error{Kind: api.KindInvalid, Field: name, Message: fmt.Sprintf("%s: no such field", name)}
	}
	return &api.Error{Kind: api.KindInvalid, Field: "body", Message: strings.TrimPrefix(err.Error(), "json: ")}
}

// jsonKind names a Go type as the JSON value it decodes from.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "a " + t.Kind().String()
}

// alerts answers the alert rules, the webhooks, the alerts pending and
// firing and the latest deliveries (?limit=N, 100 by default).
func (s *server) alerts(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "limit", Message: fmt.Sprintf("limit %q: a positive number of deliveries", v)})
			return
		}
		limit = n
	}
	out, err := s.o.Alerts(r.Context(), limit)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// newRequest turns an API call into a request event: the same path as the
// other doors. An Idempotency-Key header is the request's id.
func newRequest(r *http.Request, typ string, data []byte) (events.Event, error) {
	if !json.Valid(data) {
		return events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "body", Message: "body is not JSON"}
	}
	// The caller's trace context, checked as on the bus; the call's own
	// span, when it is traced, is what the request carries on.
	tp, ts := r.Header.Get("traceparent"), r.Header.Get("tracestate")
	if err := events.CheckTrace(tp, ts); err != nil {
		var ve *events.ValidationError
		errors.As(err, &ve)
		return events.Event{}, &api.Error{Kind: api.KindInvalid, Field: ve.Field, Message: "header " + ve.Field + ": " + ve.Message}
	}
	opts := []events.Option{events.WithTrace(tp, ts), events.WithTraceFrom(r.Context())}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		opts = append(opts, events.WithID(key))
	}
	e, err := events.New(typ, "/openagent/http", json.RawMessage(data), opts...)
	if err != nil {
		return events.Event{}, &api.Error{Kind: api.KindInvalid, Field: "body", Message: err.Error()}
	}
	return e, nil
}

// do hands a request to the orchestrator, waits up to DefaultWait for it
// to take effect, and answers: 200 with the container, 202 with what is
// known when it did not take effect in time, or the error.
func (s *server) do(w http.ResponseWriter, r *http.Request, e events.Event, noContent bool) {
	ctx, cancel := context.WithTimeout(r.Context(), orchestrator.DefaultWait)
	defer cancel()
	acc, c, err := s.o.Do(ctx, e)
	switch {
	case errors.Is(err, orchestrator.ErrNotYet) && c.ID != "" && !noContent:
		writeJSON(w, http.StatusAccepted, c)
	case errors.Is(err, orchestrator.ErrNotYet):
		writeJSON(w, http.StatusAccepted, acc)
	case err != nil:
		writeError(w, err)
	case noContent:
		w.WriteHeader(http.StatusNoContent)
	case e.Type() == events.ContainerCreateRequested:
		w.Header().Set("Location", "/v1/containers/"+c.ID)
		writeJSON(w, http.StatusCreated, c)
	default:
		writeJSON(w, http.StatusOK, c)
	}
}

func (s *server) create(w http.ResponseWriter, r *http.Request) {
	if isCloudEvent(r) {
		s.cloudEvent(w, r)
		return
	}
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	e, err := newRequest(r, events.ContainerCreateRequested, body)
	if err != nil {
		writeError(w, err)
		return
	}
	if r.URL.Query().Get("wait") == "false" {
		acc, err := s.o.Accept(r.Context(), e)
		if err != nil {
			writeError(w, err)
			return
		}
		writeJSON(w, http.StatusAccepted, acc)
		return
	}
	s.do(w, r, e, false)
}

// container finds the container the path names (an id, a name or a
// unique prefix of an id), or answers why not.
func (s *server) container(w http.ResponseWriter, r *http.Request) (api.Container, bool) {
	id, err := s.o.Resolve(r.PathValue("id"), false)
	c, ok := s.o.Container(id)
	if err != nil || !ok {
		if err == nil {
			err = &api.Error{Kind: api.KindNotFound, ID: r.PathValue("id"), Message: "no container " + r.PathValue("id")}
		}
		writeError(w, err)
		return api.Container{}, false
	}
	return c, true
}

func (s *server) get(w http.ResponseWriter, r *http.Request) {
	c, ok := s.container(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (s *server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := events.ListQuery{All: q.Get("all") == "true", Session: q.Get("session"), Status: q.Get("status")}
	for _, l := range q["label"] {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "label", Message: fmt.Sprintf("label %q is not K=V", l)})
			return
		}
		if lq.Labels == nil {
			lq.Labels = map[string]string{}
		}
		lq.Labels[k] = v
	}
	writeJSON(w, http.StatusOK, s.o.List(lq))
}

// idBody returns the body of a call on one container: its JSON body, if
// any, with the container's id from the path.
func (s *server) idBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body := map[string]any{}
	if r.ContentLength != 0 {
		b, err := readBody(w, r)
		if err != nil {
			writeError(w, err)
			return nil, false
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				writeError(w, jsonError(err))
				return nil, false
			}
		}
	}
	// A name or a unique prefix works too; what names nothing goes on to
	// be refused as a request, with its outcome on record.
	id := r.PathValue("id")
	if rid, err := s.o.Resolve(id, false); err == nil {
		id = rid
	} else if api.AsError(err).Kind == api.KindInvalid {
		writeError(w, err)
		return nil, false
	}
	body["containerId"] = id
	if r.Method == http.MethodDelete && r.URL.Query().Get("force") == "true" {
		body["force"] = true
	}
	b, _ := json.Marshal(body)
	return b, true
}

// operation serves a start, stop or remove: a request of type typ.
func (s *server) operation(typ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, ok := s.idBody(w, r)
		if !ok {
			return
		}
		e, err := newRequest(r, typ, body)
		if err != nil {
			writeError(w, err)
			return
		}
		s.do(w, r, e, typ == events.ContainerRemoveRequested)
	}
}

// drain asks for a host to be drained (or no longer), and answers with the
// host once the control plane shows it so.
func (s *server) drain(w http.ResponseWriter, r *http.Request) {
	var body api.DrainRequest
	if r.ContentLength != 0 {
		b, err := readBody(w, r)
		if err != nil {
			writeError(w, err)
			return
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				writeError(w, jsonError(err))
				return
			}
		}
	}
	d := events.HostDrainRequestedData{HostID: r.PathValue("id"), Drain: body.Drain == nil || *body.Drain}
	data, _ := json.Marshal(d)
	e, err := newRequest(r, events.HostDrainRequested, data)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, err := s.o.Accept(r.Context(), e); err != nil {
		writeError(w, err)
		return
	}
	// A follower shows the drain once the event reaches it: moments.
	ctx, cancel := context.WithTimeout(r.Context(), orchestrator.DefaultWait)
	defer cancel()
	for {
		for _, h := range s.o.Hosts() {
			if h.ID == d.HostID && (h.DrainingSince.IsZero() != d.Drain || ctx.Err() != nil) {
				writeJSON(w, http.StatusOK, h)
				return
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (s *server) exec(w http.ResponseWriter, r *http.Request) {
	body, ok := s.idBody(w, r)
	if !ok {
		return
	}
	e, err := newRequest(r, events.ContainerExecRequested, body)
	if err != nil {
		writeError(w, err)
		return
	}
	res, _, err := s.o.Exec(r.Context(), e)
	switch {
	case errors.Is(err, orchestrator.ErrNotYet):
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": e.ID()})
	case err != nil:
		writeError(w, err)
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// parseSince reads a time as RFC 3339 or as a duration before now.
func parseSince(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("since %q is neither an RFC 3339 time nor a duration", s)
	}
	return time.Now().Add(-d), nil
}

// logs serves a container's output, asked of its host: what it has, or
// followed as it comes.
func (s *server) logs(w http.ResponseWriter, r *http.Request) {
	c, ok := s.container(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	since, err := parseSince(q.Get("since"))
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindInvalid, Field: "since", Message: err.Error()})
		return
	}
	tail := 0
	if s := q.Get("tail"); s != "" {
		if tail, err = strconv.Atoi(s); err != nil || tail < 0 {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "tail", Message: "tail must be a number of lines"})
			return
		}
	}
	req := events.LogsRequest{ContainerID: c.ID, Tail: tail, Since: since, Timestamps: q.Get("timestamps") == "true", Follow: q.Get("follow") == "true"}
	if !s.o.Live(c.Host) {
		writeError(w, &api.Error{Kind: api.KindUnavailable, ID: c.ID, Message: "host " + c.Host + " stopped reporting"})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !req.Follow {
		b, _ := json.Marshal(req)
		m, err := s.NC.RequestWithContext(r.Context(), events.LogsSubject(c.Host), b)
		if err != nil {
			writeError(w, &api.Error{Kind: api.KindUnavailable, ID: c.ID, Message: "host " + c.Host + ": " + err.Error()})
			return
		}
		var reply events.LogsReply
		if err := json.Unmarshal(m.Data, &reply); err != nil || reply.Error != nil {
			if reply.Error == nil {
				reply.Error = &api.Error{Kind: api.KindUnavailable, Message: "bad reply from host " + c.Host}
			}
			writeError(w, reply.Error)
			return
		}
		for _, e := range reply.Entries {
			_ = enc.Encode(e)
		}
		return
	}
	req.Inbox = s.NC.NewInbox() // under the connection's own prefix
	ch := make(chan *nats.Msg, 256)
	sub, err := s.NC.ChanSubscribe(req.Inbox, ch)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	defer sub.Unsubscribe()
	defer s.NC.Publish(req.Inbox+".stop", nil)
	b, _ := json.Marshal(req)
	if _, err := s.NC.RequestWithContext(r.Context(), events.LogsSubject(c.Host), b); err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, ID: c.ID, Message: "host " + c.Host + ": " + err.Error()})
		return
	}
	w.WriteHeader(http.StatusOK)
	flush(w)
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-ch:
			if m.Header.Get(events.EndHeader) != "" {
				return
			}
			w.Write(append(m.Data, '\n'))
			flush(w)
		}
	}
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// eventStream streams events of the audit log as structured CloudEvents,
// one per line.
func (s *server) eventStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := parseSince(q.Get("since"))
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindInvalid, Field: "since", Message: err.Error()})
		return
	}
	typ := q.Get("type")
	if typ != "" && !strings.HasPrefix(typ, events.Prefix) {
		typ = events.Prefix + typ
	}
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from := q.Get("from"); from != "" {
		if !since.IsZero() {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "from", Message: "give one cursor: from or since, not both"})
			return
		}
		if seq, err := strconv.ParseUint(from, 10, 64); err == nil && seq > 0 {
			cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, seq
		} else if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
			since = t
		} else {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "from", Message: fmt.Sprintf("%q is neither a sequence number (1 or more) nor a time (RFC 3339)", from)})
			return
		}
	}
	if id := q.Get("container"); id != "" {
		if !events.ValidToken(id) {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "container", Message: "not a container id"})
			return
		}
		if rid, err := s.o.Resolve(id, true); err == nil {
			id = rid
		} else if api.AsError(err).Kind == api.KindInvalid {
			writeError(w, err)
			return
		}
		cfg.FilterSubjects = []string{events.ContainerFilter(id)}
	}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	follow := q.Get("follow") == "true"
	session := q.Get("session")
	ctx := r.Context()
	cons, err := s.JS.OrderedConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flush(w)
	info, err := cons.Info(ctx)
	if err != nil || (!follow && info.NumPending == 0) {
		return
	}
	iter, err := cons.Messages()
	if err != nil {
		return
	}
	defer iter.Stop()
	stop := context.AfterFunc(ctx, iter.Stop)
	defer stop()
	for {
		msg, err := iter.Next()
		if err != nil {
			return
		}
		e, err := events.FromMsg(&nats.Msg{Subject: msg.Subject(), Header: msg.Headers(), Data: msg.Data()})
		md, _ := msg.Metadata()
		if err == nil && (typ == "" || strings.HasPrefix(e.Type(), typ)) && (session == "" || events.Ext(e, events.ExtSessionID) == session) {
			if md != nil {
				e.SetExtension(events.ExtStreamSeq, strconv.FormatUint(md.Sequence.Stream, 10))
			}
			b, _ := json.Marshal(e)
			w.Write(append(b, '\n'))
			flush(w)
		}
		if !follow && md != nil && md.NumPending == 0 {
			return
		}
	}
}

func isCloudEvent(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/cloudevents" || strings.HasPrefix(mt, "application/cloudevents+") || r.Header.Get("ce-specversion") != ""
}

// cloudEvent is the CloudEvents HTTP binding: a request event in
// binary or structured mode. The answer is the outcome event.
func (s *server) cloudEvent(w http.ResponseWriter, r *http.Request) {
	body, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	// The HTTP binding's headers are those of the NATS binding.
	m := nats.NewMsg("http")
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if strings.HasPrefix(lk, "ce-") {
			m.Header[lk] = vs
		}
	}
	m.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	m.Data = body
	e, err := events.FromMsg(m)
	if err == nil {
		err = s.Validator.CheckSize(m)
	}
	if err != nil {
		id, typ := events.Identify(m)
		reply, perr := s.o.Reject(r.Context(), id, typ, err)
		if perr != nil {
			writeError(w, &api.Error{Kind: api.KindUnavailable, Message: perr.Error()})
			return
		}
		writeCloudEvent(w, http.StatusBadRequest, reply)
		return
	}
	if e.Type() == events.HostDrainRequested && !principal(r).Admin() {
		writeError(w, &api.Error{Kind: api.KindPermission, Field: "type", Message: "draining a host is the admin's; role " + string(principal(r).Role) + " may not"})
		return
	}
	reply, err := s.o.Handle(r.Context(), e)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	code := http.StatusAccepted
	if reply.Type() == events.RequestRejected {
		var d events.RejectedData
		_ = events.Data(reply, &d)
		code = api.Info(d.Error.Kind).Status
	}
	writeCloudEvent(w, code, reply)
}

func writeCloudEvent(w http.ResponseWriter, code int, e events.Event) {
	w.Header().Set("Content-Type", "application/cloudevents+json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(e)
}
