package orchestrator

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
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

//go:embed openapi.json
var openAPI []byte

// Version is the orchestrator's version, served at /v1/version.
var Version = "0.1.0"

// maxBody caps a request body at the event size cap.
const maxBody = events.DefaultMaxSize

// waitLimit bounds how long a request waits for its outcome before it is
// answered with what is known (202).
const waitLimit = 60 * time.Second

// Handler returns the HTTP API. See openapi.json.
func (o *Orchestrator) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range o.routes() {
		mux.HandleFunc(rt.method+" "+rt.path, rt.handler)
	}
	return mux
}

type route struct {
	method, path string
	handler      http.HandlerFunc
}

// routes lists the API; the OpenAPI document describes exactly these, as a
// test checks.
func (o *Orchestrator) routes() []route {
	return append([]route{
		{"GET", "/healthz", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-o.ready:
				writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
			default:
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
			}
		}},
		{"GET", "/v1/version", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]string{"version": Version})
		}},
		{"GET", "/v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Write(openAPI)
		}},
		{"POST", "/v1/containers", o.httpCreate},
		{"GET", "/v1/containers", o.httpList},
		{"GET", "/v1/containers/{id}", o.httpGet},
		{"DELETE", "/v1/containers/{id}", o.httpRemove},
		{"POST", "/v1/containers/{id}/start", o.httpStart},
		{"POST", "/v1/containers/{id}/stop", o.httpStop},
		{"POST", "/v1/containers/{id}/exec", o.httpExec},
		{"GET", "/v1/containers/{id}/logs", o.httpLogs},
		{"GET", "/v1/hosts", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, o.Hosts()) }},
		{"GET", "/v1/events", o.httpEvents},
		{"POST", "/v1/events", o.httpCloudEvent},
	}, o.sessionRoutes()...)
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *api.Error) {
	writeJSON(w, api.Info(e.Kind).Status, e)
}

// readBody reads a JSON body, refusing one over the size cap.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, *api.Error) {
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

// request turns an API call into a request event and handles it: the
// same path as the other doors. It returns the accepted outcome, or writes
// the rejection and returns nil.
func (o *Orchestrator) request(w http.ResponseWriter, r *http.Request, typ string, data []byte) *api.Accepted {
	if !json.Valid(data) {
		writeError(w, &api.Error{Kind: api.KindInvalid, Field: "body", Message: "body is not JSON"})
		return nil
	}
	opts := []events.Option{events.WithTrace(r.Header.Get("traceparent"), r.Header.Get("tracestate"))}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		opts = append(opts, events.WithID(key))
	}
	e, err := events.New(typ, "/openagent/http", json.RawMessage(data), opts...)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindInvalid, Field: "body", Message: err.Error()})
		return nil
	}
	return o.handleHTTP(w, r.Context(), e)
}

// handleHTTP handles a request event and writes its rejection, if any.
func (o *Orchestrator) handleHTTP(w http.ResponseWriter, ctx context.Context, e events.Event) *api.Accepted {
	acc, aerr := o.accept(ctx, e)
	if aerr != nil {
		writeError(w, aerr)
	}
	return acc
}

// accept handles a request in-process: what was accepted, or why not.
func (o *Orchestrator) accept(ctx context.Context, e events.Event) (*api.Accepted, *api.Error) {
	reply, err := o.Handle(ctx, e)
	if err != nil {
		return nil, &api.Error{Kind: api.KindUnavailable, Message: err.Error()}
	}
	if reply.Type() == events.RequestRejected {
		var d struct{ Error api.Error }
		_ = events.Data(reply, &d)
		return nil, &d.Error
	}
	var acc api.Accepted
	_ = events.Data(reply, &acc)
	return &acc, nil
}

// await waits until the container satisfies done, or an operation of this
// request failed, and answers with the container.
func (o *Orchestrator) await(w http.ResponseWriter, r *http.Request, acc *api.Accepted, done func(*record) bool) {
	ctx, cancel := context.WithTimeout(r.Context(), waitLimit)
	defer cancel()
	rec, err := o.state.waitFor(ctx, acc.ContainerID, func(rec *record) bool {
		return done(rec) || rec.FailedRequest == acc.RequestID
	})
	if err != nil {
		if c, ok := o.Container(acc.ContainerID); ok {
			writeJSON(w, http.StatusAccepted, c)
		} else {
			writeJSON(w, http.StatusAccepted, acc)
		}
		return
	}
	if rec.FailedRequest == acc.RequestID && rec.Error != nil {
		e := *rec.Error
		e.ID = rec.ID
		writeError(w, &e)
		return
	}
	writeJSON(w, http.StatusOK, o.state.view(rec, o.live))
}

func (o *Orchestrator) httpCreate(w http.ResponseWriter, r *http.Request) {
	if isCloudEvent(r) {
		o.httpCloudEvent(w, r)
		return
	}
	body, aerr := readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	acc := o.request(w, r, events.ContainerCreateRequested, body)
	if acc == nil {
		return
	}
	var start struct{ Start bool }
	_ = json.Unmarshal(body, &start)
	if r.URL.Query().Get("wait") == "false" {
		writeJSON(w, http.StatusAccepted, acc)
		return
	}
	o.await(w, r, acc, func(rec *record) bool {
		if rec.Status == api.StatusFailed || rec.Status == api.StatusExited || rec.Status == api.StatusStopped {
			return true
		}
		if start.Start {
			return rec.Status == api.StatusRunning
		}
		return rec.Status == api.StatusCreated
	})
}

func (o *Orchestrator) httpGet(w http.ResponseWriter, r *http.Request) {
	c, ok := o.Container(r.PathValue("id"))
	if !ok {
		writeError(w, &api.Error{Kind: api.KindNotFound, ID: r.PathValue("id"), Message: "no container " + r.PathValue("id")})
		return
	}
	writeJSON(w, http.StatusOK, c)
}

func (o *Orchestrator) httpList(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq := ListQuery{All: q.Get("all") == "true", Session: q.Get("session"), Status: q.Get("status")}
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
	writeJSON(w, http.StatusOK, o.List(lq))
}

func (o *Orchestrator) idBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body := map[string]any{}
	if r.ContentLength != 0 {
		b, aerr := readBody(w, r)
		if aerr != nil {
			writeError(w, aerr)
			return nil, false
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &body); err != nil {
				writeError(w, &api.Error{Kind: api.KindInvalid, Field: "body", Message: err.Error()})
				return nil, false
			}
		}
	}
	id := r.PathValue("id")
	if c, ok := o.Container(id); ok {
		id = c.ID // a name works too
	}
	body["containerId"] = id
	b, _ := json.Marshal(body)
	return b, true
}

func (o *Orchestrator) httpStart(w http.ResponseWriter, r *http.Request) {
	body, ok := o.idBody(w, r)
	if !ok {
		return
	}
	acc := o.request(w, r, events.ContainerStartRequested, body)
	if acc == nil {
		return
	}
	since := time.Now().Add(-time.Second)
	o.await(w, r, acc, func(rec *record) bool {
		return rec.Status == api.StatusRunning || (rec.Status == api.StatusExited && rec.FinishedAt.After(since))
	})
}

func (o *Orchestrator) httpStop(w http.ResponseWriter, r *http.Request) {
	body, ok := o.idBody(w, r)
	if !ok {
		return
	}
	acc := o.request(w, r, events.ContainerStopRequested, body)
	if acc == nil {
		return
	}
	o.await(w, r, acc, func(rec *record) bool { return !rec.Status.Active() || rec.Status == api.StatusCreated })
}

func (o *Orchestrator) httpRemove(w http.ResponseWriter, r *http.Request) {
	body, ok := o.idBody(w, r)
	if !ok {
		return
	}
	if r.URL.Query().Get("force") == "true" {
		var m map[string]any
		_ = json.Unmarshal(body, &m)
		m["force"] = true
		body, _ = json.Marshal(m)
	}
	acc := o.request(w, r, events.ContainerRemoveRequested, body)
	if acc == nil {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), waitLimit)
	defer cancel()
	_, err := o.state.waitFor(ctx, acc.ContainerID, func(rec *record) bool {
		return rec.Status == api.StatusRemoved || rec.FailedRequest == acc.RequestID
	})
	if rec, ok := o.state.get(acc.ContainerID); ok && rec.FailedRequest == acc.RequestID && rec.Error != nil {
		writeError(w, rec.Error)
		return
	}
	if err != nil {
		writeJSON(w, http.StatusAccepted, acc)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (o *Orchestrator) httpExec(w http.ResponseWriter, r *http.Request) {
	body, ok := o.idBody(w, r)
	if !ok {
		return
	}
	e, err := events.New(events.ContainerExecRequested, "/openagent/http", json.RawMessage(body))
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindInvalid, Message: err.Error()})
		return
	}
	if key := r.Header.Get("Idempotency-Key"); key != "" {
		e.SetID(key)
	}
	res, aerr := o.execWait(r.Context(), e)
	switch {
	case aerr != nil:
		writeError(w, aerr)
	case res == nil:
		writeJSON(w, http.StatusAccepted, map[string]string{"requestId": e.ID()})
	default:
		writeJSON(w, http.StatusOK, res)
	}
}

// execWait handles an exec request and waits for its result; nil without
// an error means the result did not come in time.
func (o *Orchestrator) execWait(ctx context.Context, e events.Event) (*api.ExecResult, *api.Error) {
	res, _, aerr := o.execWaitEvent(ctx, e)
	return res, aerr
}

// execWaitEvent is execWait that also returns the stored exec.completed
// event.
func (o *Orchestrator) execWaitEvent(ctx context.Context, e events.Event) (*api.ExecResult, events.Event, *api.Error) {
	outcome, forget := o.state.expectExec(derive(requestKey(e), "exec"))
	defer forget()
	if _, aerr := o.accept(ctx, e); aerr != nil {
		return nil, events.Event{}, aerr
	}
	var req api.ExecRequest
	_ = events.Data(e, &req)
	limit := waitLimit + time.Duration(req.TimeoutMs)*time.Millisecond
	select {
	case out := <-outcome:
		if out.err != nil {
			return nil, events.Event{}, out.err
		}
		return out.res, out.event, nil
	case <-time.After(limit):
		return nil, events.Event{}, nil
	case <-ctx.Done():
		return nil, events.Event{}, &api.Error{Kind: api.KindTimeout, Message: ctx.Err().Error()}
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

func (o *Orchestrator) httpLogs(w http.ResponseWriter, r *http.Request) {
	c, ok := o.Container(r.PathValue("id"))
	if !ok {
		writeError(w, &api.Error{Kind: api.KindNotFound, ID: r.PathValue("id"), Message: "no container " + r.PathValue("id")})
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
	if !o.live(c.Host) {
		writeError(w, &api.Error{Kind: api.KindUnavailable, ID: c.ID, Message: "host " + c.Host + " stopped reporting"})
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	if !req.Follow {
		b, _ := json.Marshal(req)
		m, err := o.nc.RequestWithContext(r.Context(), events.LogsSubject(c.Host), b)
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
	req.Inbox = nats.NewInbox()
	ch := make(chan *nats.Msg, 256)
	sub, err := o.nc.ChanSubscribe(req.Inbox, ch)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	defer sub.Unsubscribe()
	defer o.nc.Publish(req.Inbox+".stop", nil)
	b, _ := json.Marshal(req)
	if _, err := o.nc.RequestWithContext(r.Context(), events.LogsSubject(c.Host), b); err != nil {
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

// httpEvents streams events of the audit log as structured CloudEvents,
// one per line.
func (o *Orchestrator) httpEvents(w http.ResponseWriter, r *http.Request) {
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
	if id := q.Get("container"); id != "" {
		if !events.ValidToken(id) {
			writeError(w, &api.Error{Kind: api.KindInvalid, Field: "container", Message: "not a container id"})
			return
		}
		if c, ok := o.Container(id); ok {
			id = c.ID
		}
		cfg.FilterSubjects = []string{events.ContainerFilter(id)}
	}
	if !since.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	follow := q.Get("follow") == "true"
	session := q.Get("session")
	ctx := r.Context()
	cons, err := o.js.OrderedConsumer(ctx, events.StreamEvents, cfg)
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
	return mt == "application/cloudevents+json" || r.Header.Get("ce-specversion") != ""
}

// httpCloudEvent is the CloudEvents HTTP binding: a request event in
// binary or structured mode. The answer is the outcome event.
func (o *Orchestrator) httpCloudEvent(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(w, r)
	if aerr != nil {
		writeError(w, aerr)
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
		err = o.v.CheckSize(m)
	}
	if err != nil {
		reply, perr := o.Reject(r.Context(), m.Header.Get("ce-id"), m.Header.Get("ce-type"), err)
		if perr != nil {
			writeError(w, &api.Error{Kind: api.KindUnavailable, Message: perr.Error()})
			return
		}
		writeCloudEvent(w, http.StatusBadRequest, reply)
		return
	}
	reply, err := o.Handle(r.Context(), e)
	if err != nil {
		writeError(w, &api.Error{Kind: api.KindUnavailable, Message: err.Error()})
		return
	}
	code := http.StatusAccepted
	if reply.Type() == events.RequestRejected {
		var d struct{ Error api.Error }
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
