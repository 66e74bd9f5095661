package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/policy"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// rejection is a request's refusal; the handler turns it into a rejected
// event.
type rejection struct{ e api.Error }

func (r *rejection) Error() string { return r.e.Message }

func reject(kind api.ErrorKind, field, id, format string, args ...any) error {
	return &rejection{api.Error{Kind: kind, Field: field, ID: id, Message: fmt.Sprintf(format, args...)}}
}

// Handle carries out one request and returns its outcome event:
// io.openagent.request.accepted or io.openagent.request.rejected, both
// published to the events stream. A request handled before gets the same
// outcome again and causes nothing new. An error means the outcome could
// not be recorded and the request should be retried.
//
// A follower hands the request to the leader and returns the outcome the
// leader recorded.
func (o *Orchestrator) Handle(ctx context.Context, req events.Event) (events.Event, error) {
	if !o.Leading() {
		return o.forward(ctx, req)
	}
	out, err := o.handle(ctx, req, false)
	if errors.Is(err, errNotLeading) {
		// The term ended while the request was in hand: whoever leads next
		// carries it out (what this term stored of it is found again).
		return o.forward(ctx, req)
	}
	return out, err
}

// handle is Handle for a request that may have been validated on receipt
// already (the consumer loop does), so that it is not validated twice.
func (o *Orchestrator) handle(ctx context.Context, req events.Event, validated bool) (out events.Event, err error) {
	defer func(since time.Time) { o.measure(ctx, req, out, err, since) }(time.Now())
	ctx, span := events.StartSpan(ctx, o.tracer, "handle "+events.Name(req.Type()),
		semconv.CloudEventsEventID(req.ID()), semconv.CloudEventsEventSource(req.Source()))
	defer func() {
		if out.ID() != "" {
			span.SetAttributes(attribute.String("openagent.outcome", events.Name(out.Type())))
		}
		events.EndSpan(span, err)
	}()
	key, digest := events.RequestKey(req), events.RequestDigest(req)
	bucketKey := events.RequestToken(key)
	if entry, err := o.requests.Get(ctx, bucketKey); err == nil {
		var prev outcomeRecord
		if json.Unmarshal(entry.Value(), &prev) == nil && prev.Event.ID() != "" {
			if prev.Digest != "" && prev.Digest != digest {
				return o.conflict(ctx, req, digest)
			}
			return prev.Event, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Event{}, events.Retry(fmt.Errorf("read outcome: %w", err), 0)
	}

	accepted, err := o.decide(ctx, req, validated)
	var reply events.Event
	var rej *rejection
	switch {
	case errors.Is(err, errRequestConflict):
		return o.conflict(ctx, req, digest)
	case errors.As(err, &rej):
		reply, err = o.publish(ctx, events.RequestRejected, events.RejectedData{RequestID: req.ID(), RequestType: req.Type(), Error: rej.e},
			events.CausedBy(req), events.WithID(events.DeriveID(key, "rejected")))
	case err != nil:
		return events.Event{}, err
	default:
		accepted.RequestType = req.Type()
		opts := []events.Option{events.CausedBy(req), events.WithID(events.DeriveID(key, "accepted")), events.WithContainer(accepted.ContainerID)}
		if accepted.generation != 0 {
			opts = append(opts, events.WithGeneration(accepted.generation))
		}
		reply, err = o.publish(ctx, events.RequestAccepted, accepted.Accepted, opts...)
	}
	if err != nil {
		return events.Event{}, events.Retry(err, 0)
	}
	// The outcome is stored: it stands if this orchestrator still led
	// then, which its proclamation being the last one proves.
	if err := o.confirm(ctx); err != nil {
		if accepted != nil {
			o.state.release(accepted.ContainerID) // reserved here, refused by the log
		}
		return events.Event{}, events.Retry(err, 0)
	}
	// The record is what answers the request from now on, here and on the
	// followers that handed it on: it must be written.
	b, _ := json.Marshal(outcomeRecord{Digest: digest, Event: reply})
	if _, err := o.requests.Put(ctx, bucketKey, b); err != nil {
		return events.Event{}, events.Retry(fmt.Errorf("record the outcome: %w", err), 0)
	}
	return reply, nil
}

// outcomeRecord is what the requests bucket keeps of a handled request:
// its outcome, and the digest of what it asked for.
type outcomeRecord struct {
	Digest string       `json:"digest"`
	Event  events.Event `json:"event"`
}

// errRequestConflict says a request's identity was used before with
// different data.
var errRequestConflict = errors.New("orchestrator: request id reused with different data")

// conflict rejects a request whose identity was used before with other
// data. It records nothing: the first request keeps its outcome.
func (o *Orchestrator) conflict(ctx context.Context, req events.Event, digest string) (events.Event, error) {
	e := api.Error{Kind: api.KindConflict, Field: "id", ID: req.ID(), Message: fmt.Sprintf(
		"request id %s from %s was used before with different data; use a new id for a new request", req.ID(), req.Source())}
	reply, err := o.publish(ctx, events.RequestRejected, events.RejectedData{RequestID: req.ID(), RequestType: req.Type(), Error: e},
		events.CausedBy(req), events.WithID(events.DeriveID(events.RequestKey(req), "conflict "+digest)))
	if err != nil {
		return events.Event{}, events.Retry(err, 0)
	}
	return reply, nil
}

// Reject publishes the rejection of something that arrived as a request
// but is not a valid event, so that its sender learns why.
func (o *Orchestrator) Reject(ctx context.Context, requestID, requestType string, cause error) (events.Event, error) {
	e := api.Error{Kind: api.KindInvalid, Message: cause.Error()}
	var ve *events.ValidationError
	var ae *api.Error
	switch {
	case errors.As(cause, &ve):
		e.Field = ve.Field
	case errors.As(cause, &ae):
		e = *ae
	}
	if requestID == "" {
		requestID = uuid.NewString()
	}
	return o.publish(ctx, events.RequestRejected, events.RejectedData{RequestID: requestID, RequestType: requestType, Error: e},
		events.WithExtension(events.ExtCorrelationID, requestID), events.WithID(events.DeriveID(requestID, "rejected")))
}

// publish stores an event or command this orchestrator decided, with its
// term's token; only a leader decides.
func (o *Orchestrator) publish(ctx context.Context, typ string, data any, opts ...events.Option) (events.Event, error) {
	t := o.leading()
	if t == nil {
		return events.Event{}, errNotLeading
	}
	e, err := events.New(typ, o.source, data, append(opts, events.WithLeaderToken(t.token), events.WithTraceFrom(ctx))...)
	if err != nil {
		return events.Event{}, err
	}
	ack, err := o.pub.Publish(ctx, e)
	if err != nil {
		return events.Event{}, err
	}
	if t.token != 0 && ack.Duplicate && ack.Stream == events.StreamEvents && ack.Sequence > t.seq {
		// The id was stored after this term began, and not necessarily by
		// this term: a former leader, paused past its lease, may have
		// written the same decision under the same id, which every reader
		// refuses. Then this term's decision goes under an id of its own.
		stored, err := o.events.GetMsg(ctx, ack.Sequence)
		if err != nil {
			return events.Event{}, fmt.Errorf("orchestrator: read the event %s stored before: %w", e.ID(), err)
		}
		if token, _ := strconv.ParseUint(stored.Header.Get("ce-"+events.ExtLeaderToken), 10, 64); token < t.token {
			e.SetID(events.DeriveID(e.ID(), fmt.Sprintf("leader %d", t.token)))
			if _, err := o.pub.Publish(ctx, e); err != nil {
				return events.Event{}, err
			}
		}
	}
	return e, nil
}

// commandID is the id of the command a request causes, in this term: a
// command a former leader published under the request's id after this
// term began was refused by its worker, and must not hide this term's
// command as a duplicate. A worker recognises a command carried out
// before by what it made, whatever the command's id.
func (o *Orchestrator) commandID(key string) string {
	if t := o.leading(); t != nil && t.token != 0 {
		return events.DeriveID(key, fmt.Sprintf("command %d", t.token))
	}
	return events.DeriveID(key, "command")
}

func (o *Orchestrator) validate(req events.Event, validated bool) error {
	if validated {
		return nil
	}
	return o.v.Validate(req)
}

// accepted is what decide accepted, and the generation of the command it
// published, which the accepted event carries.
type accepted struct {
	api.Accepted
	generation uint64
}

// decide validates, admits and carries out a request up to publishing its
// command; it returns what was accepted, a *rejection, or
// errRequestConflict.
func (o *Orchestrator) decide(ctx context.Context, req events.Event, validated bool) (*accepted, error) {
	if err := o.validate(req, validated); err != nil {
		var ve *events.ValidationError
		if errors.As(err, &ve) {
			return nil, reject(api.KindInvalid, ve.Field, "", "%s: %s", ve.Field, ve.Message)
		}
		return nil, reject(api.KindInvalid, "", "", "%v", err)
	}
	if events.KindOf(req.Type()) != events.KindRequest {
		return nil, reject(api.KindInvalid, "type", "", "%s is not a request", req.Type())
	}
	switch req.Type() {
	case events.ContainerCreateRequested:
		return o.create(ctx, req)
	case events.HostDrainRequested:
		return o.drainHost(ctx, req)
	case events.SessionCreateRequested, events.SessionExecRequested, events.SessionExtendRequested, events.SessionCloseRequested:
		return nil, reject(api.KindNotSupported, "type", "", "session requests are served by request/reply on %s", events.SubjectSessions)
	}
	var d events.ContainerRequestedData
	if err := events.Data(req, &d); err != nil {
		return nil, reject(api.KindInvalid, "data", "", "%v", err)
	}
	r, ok := o.state.Get(d.ContainerID)
	if !ok {
		return nil, reject(api.KindNotFound, "containerId", d.ContainerID, "no container %s", d.ContainerID)
	}
	key := events.RequestKey(req)
	gen := o.state.nextGeneration(r.ID)
	acc := &accepted{Accepted: api.Accepted{RequestID: req.ID(), ContainerID: r.ID}, generation: gen}
	cmdOpts := []events.Option{events.CausedBy(req), events.WithHost(r.Host), events.WithContainer(r.ID),
		events.WithID(o.commandID(key)), events.WithGeneration(gen)}
	// Whether the host reports, asked only once the request's own checks
	// passed: a host silent since the control plane began to listen is
	// waited for (see awaitHost).
	live := func() bool { return o.Live(r.Host) || o.awaitHost(ctx, r.Host) }
	switch req.Type() {
	case events.ContainerStartRequested:
		if r.Status == api.StatusFailed {
			return nil, reject(api.KindConflict, "", r.ID, "container %s failed to be created; remove it", r.ID)
		}
		if !live() {
			return nil, reject(api.KindUnavailable, "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		_, err := o.publish(ctx, events.CommandStart, events.ContainerCommandData{ContainerID: r.ID, HostID: r.Host}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerStopRequested:
		if !live() {
			return nil, reject(api.KindUnavailable, "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		_, err := o.publish(ctx, events.CommandStop, events.ContainerCommandData{ContainerID: r.ID, HostID: r.Host, TimeoutMs: d.TimeoutMs, Force: d.Force}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerRemoveRequested:
		if (r.Status == api.StatusRunning || r.Status == api.StatusPending) && !d.Force {
			return nil, reject(api.KindConflict, "", r.ID, "container %s is %s; stop it first or force", r.ID, r.Status)
		}
		// A container that failed on its host (its start, say) may be there
		// still: the host removes it. Only one never placed, or on a host
		// no longer reporting (forced), is forgotten here.
		hostLive := live()
		if !hostLive || r.Status == api.StatusFailed && r.Host == "" {
			if !hostLive && !d.Force {
				return nil, reject(api.KindUnavailable, "", r.ID, "host %s of container %s stopped reporting; force to forget it", r.Host, r.ID)
			}
			// Nothing to remove on a host: forget the container.
			reason := "failed before it existed on a host"
			if !hostLive {
				reason = "forgotten: host " + r.Host + " stopped reporting"
			}
			_, err := o.publish(ctx, events.ContainerRemoved, events.RemovedData{ContainerID: r.ID, HostID: r.Host, Reason: reason},
				events.CausedBy(req), events.WithContainer(r.ID), events.WithHost(r.Host), events.WithID(events.DeriveID(key, "removed")), events.WithGeneration(gen))
			return acc, retry(err)
		}
		_, err := o.publish(ctx, events.CommandRemove, events.ContainerCommandData{ContainerID: r.ID, HostID: r.Host, Force: d.Force}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerExecRequested:
		if r.Status != api.StatusRunning {
			return nil, reject(api.KindConflict, "", r.ID, "container %s is %s, not running", r.ID, r.Status)
		}
		if !live() {
			return nil, reject(api.KindUnavailable, "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		var x events.ExecRequestedData
		if err := events.Data(req, &x); err != nil {
			return nil, reject(api.KindInvalid, "data", "", "%v", err)
		}
		acc.ExecID = events.DeriveID(key, "exec")
		_, err := o.publish(ctx, events.CommandExec, events.ExecCommandData{ContainerID: r.ID, HostID: r.Host, ExecID: acc.ExecID,
			Command: x.Command, Env: x.Env, WorkingDir: x.WorkingDir, TimeoutMs: x.TimeoutMs, Stdin: x.Stdin, StreamTo: x.StreamTo,
			StdinObject: x.StdinObject, StdoutObject: x.StdoutObject}, cmdOpts...)
		return acc, retry(err)
	}
	return nil, reject(api.KindInvalid, "type", "", "unknown request %s", req.Type())
}

// driverFor picks the driver of a request that names none, by its image:
// "host" is the local driver's, "fake" the fake's, any other a Docker
// image.
func driverFor(image string) string {
	switch image {
	case "host":
		return "local"
	case "fake":
		return "fake"
	}
	return "docker"
}

func retry(err error) error {
	if err != nil {
		return events.Retry(err, 0)
	}
	return nil
}

func (o *Orchestrator) create(ctx context.Context, req events.Event) (*accepted, error) {
	var d api.CreateRequest
	if err := events.Data(req, &d); err != nil {
		return nil, reject(api.KindInvalid, "data", "", "%v", err)
	}
	key := events.RequestKey(req)
	if d.ContainerID == "" {
		d.ContainerID = events.ContainerIDFor(key)
	}
	if d.Spec.SessionID == "" {
		d.Spec.SessionID = d.ContainerID
	}
	if d.Name != "" {
		// The runtime's own tools find a container by its name too.
		d.Spec.Labels = maps.Clone(d.Spec.Labels)
		if d.Spec.Labels == nil {
			d.Spec.Labels = map[string]string{}
		}
		d.Spec.Labels[driver.LabelName] = d.Name
	}
	if err := o.admitCreate(ctx, req, &d); err != nil {
		return nil, err
	}
	// The record, like the placed event, keeps the secrets' names only;
	// the create command carries their values to the host.
	r := &record{Container: api.Container{ID: d.ContainerID, Name: d.Name, RequestID: strings.Clone(req.ID())},
		RequestSource: req.Source(), RequestDigest: events.RequestDigest(req), Spec: d.Spec.Redacted(),
		Constraints: d.Constraints, Placement: d.Placement, Reschedule: d.Reschedule, Start: d.Start}
	// A request handled again, after a crash or redelivered while the first
	// handling went on, finds its own container: it announces nothing new.
	if prev, ok := o.state.Placed(r.ID); ok && prev.SameRequest(r) {
		return o.replace(ctx, req, prev, d)
	}
	api.FromSpec(&r.Container, d.Spec)
	prev, taken, err := o.place(ctx, d, r)
	var rej *rejection
	switch {
	case errors.As(err, &rej):
		return nil, err // the driver's limits
	case err != nil:
		kind := api.KindUnavailable
		var pe *scheduler.PlacementError
		if errors.As(err, &pe) {
			for _, u := range pe.Hosts {
				switch u.Kind {
				case scheduler.NoCPU, scheduler.NoMemory, scheduler.NoPids, scheduler.NoGPUs:
					kind = api.KindResourceLimit
				}
			}
		}
		return nil, reject(kind, "", d.ContainerID, "%v", err)
	}
	switch taken {
	case "name":
		return nil, reject(api.KindConflict, "name", d.Name, "a container named %s exists", d.Name)
	case "id":
		if prev.SameRequest(r) {
			return o.replace(ctx, req, prev, d) // placed meanwhile by the same request
		}
		if prev.RequestID == r.RequestID && prev.RequestSource == r.RequestSource {
			return nil, errRequestConflict
		}
		return nil, reject(api.KindConflict, "containerId", d.ContainerID, "container %s exists", d.ContainerID)
	}
	if err := o.announce(ctx, req, r, d); err != nil {
		o.state.release(r.ID)
		return nil, events.Retry(err, 0)
	}
	return &accepted{Accepted: api.Accepted{RequestID: req.ID(), ContainerID: r.ID}, generation: r.Generation}, nil
}

// admitCreate checks a create request's spec, resolves its egress and
// runs the admission floor and the policies; it fills in the driver.
func (o *Orchestrator) admitCreate(ctx context.Context, req events.Event, d *api.CreateRequest) (err error) {
	ctx, span := events.StartSpan(ctx, o.tracer, "admit", attribute.String("openagent.container.id", d.ContainerID))
	defer func(since time.Time) {
		o.stage(ctx, "admit", time.Since(since))
		events.EndSpan(span, err)
	}(time.Now())
	// Egress rules by host name are resolved here, once: the command, the
	// placed event and the record carry the addresses the name had when
	// the request was admitted, and the policies judge those.
	resolved, err := policy.ResolveEgress(ctx, d.Spec.Egress, o.resolver)
	if err == nil {
		d.Spec.Egress = resolved
		err = d.Spec.Validate()
	}
	if err != nil {
		var ce *driver.ConfigError
		if errors.As(err, &ce) {
			return reject(api.KindInvalid, "spec."+ce.Field, "", "spec.%s: %s", ce.Field, ce.Message)
		}
		return reject(api.KindInvalid, "spec", "", "%v", err)
	}
	if err := admit(d.Spec, o.protected); err != nil {
		return &rejection{e: *api.AsError(err)}
	}
	if d.Driver == "" {
		d.Driver = driverFor(d.Spec.Image)
	}
	if min, ok := o.minCPU(d.Driver); ok && d.Spec.Resources.CPU < min {
		return reject(api.KindInvalid, "spec.resources.cpu", "", "spec.resources.cpu: the %s driver's smallest cpu limit is %g cores, got %g", d.Driver, min, d.Spec.Resources.CPU)
	}
	return o.applyPolicy(ctx, req, *d)
}

// place reserves a host for a container by the request's placement.
func (o *Orchestrator) place(ctx context.Context, d api.CreateRequest, r *record) (prev *record, taken string, err error) {
	ctx, span := events.StartSpan(ctx, o.tracer, "place", attribute.String("openagent.container.id", d.ContainerID))
	defer func(since time.Time) {
		o.stage(ctx, "place", time.Since(since))
		if err == nil && taken == "" {
			span.SetAttributes(attribute.String("openagent.host.id", r.Host))
		}
		events.EndSpan(span, err)
	}(time.Now())
	sreq, err := placementOf(d)
	if err != nil {
		return nil, "", err
	}
	prev, taken, err = o.reserve(sreq, r)
	// Hosts silent but not lost may be the control plane's own fault (it
	// was cut off from the bus) or a moment's: the request waits for them,
	// a bounded time, before it is refused.
	for err != nil && o.silentNotLost(err) {
		select {
		case <-ctx.Done():
			return nil, "", events.Retry(ctx.Err(), 0)
		case <-time.After(200 * time.Millisecond):
		}
		prev, taken, err = o.reserve(sreq, r)
	}
	return prev, taken, err
}

// announce publishes a reserved container's placement and its create
// command, with ids derived from the request.
func (o *Orchestrator) announce(ctx context.Context, req events.Event, r *record, d api.CreateRequest) error {
	key := events.RequestKey(req)
	opts := []events.Option{events.CausedBy(req), events.WithContainer(r.ID), events.WithHost(r.Host),
		events.WithSession(d.Spec.SessionID), events.WithGeneration(r.Generation)}
	placed := events.PlacedData{ContainerID: r.ID, HostID: r.Host, Driver: r.Driver, Name: d.Name, Spec: d.Spec.Redacted(),
		RequestSource: r.RequestSource, RequestDigest: r.RequestDigest, Constraints: d.Constraints, Placement: d.Placement,
		Reschedule: d.Reschedule, Start: d.Start}
	if _, err := o.publish(ctx, events.ContainerPlaced, placed, append(opts, events.WithID(events.DeriveID(key, "placed")))...); err != nil {
		return err
	}
	_, err := o.publish(ctx, events.CommandCreate, events.CreateCommandData{
		ContainerID: r.ID, HostID: r.Host, Driver: r.Driver, Spec: d.Spec, Start: d.Start,
	}, append(opts, events.WithID(o.commandID(key)))...)
	return err
}

// replace answers a create request that placed its container before. While
// the container is still pending its announcement is published again,
// which JetStream deduplicates and a worker recognises; once the worker
// reported on it, nothing is published.
func (o *Orchestrator) replace(ctx context.Context, req events.Event, prev *record, d api.CreateRequest) (*accepted, error) {
	if prev.Status == api.StatusPending {
		if err := o.announce(ctx, req, prev, d); err != nil {
			return nil, events.Retry(err, 0)
		}
	}
	return &accepted{Accepted: api.Accepted{RequestID: req.ID(), ContainerID: prev.ID}, generation: prev.Generation}, nil
}

// checkDriverLimits refuses what the chosen host's driver is known to
// refuse, naming the field and the limit, rather than failing on the host.
func checkDriverLimits(h *events.HostRecord, plan scheduler.Plan, spec driver.ContainerConfig) error {
	if h == nil {
		return nil
	}
	for _, di := range h.Drivers {
		if di.Name == plan.Driver && di.MinCPU > 0 && spec.Resources.CPU < di.MinCPU {
			return reject(api.KindInvalid, "spec.resources.cpu", "", "spec.resources.cpu: the %s driver needs at least %g cores, got %g",
				plan.Driver, di.MinCPU, spec.Resources.CPU)
		}
	}
	return nil
}

// placementOf is what a create request asks of placement, checked.
func placementOf(d api.CreateRequest) (scheduler.Request, error) {
	req := scheduler.Request{Driver: d.Driver, HostID: d.HostID, Constraints: d.Constraints, Resources: demand(d.Spec)}
	p := d.Placement
	if p == nil {
		return req, nil
	}
	switch scheduler.Strategy(p.Strategy) {
	case "", scheduler.Binpack, scheduler.Spread:
		req.Strategy = scheduler.Strategy(p.Strategy)
	default:
		return req, reject(api.KindInvalid, "placement.strategy", "", "placement.strategy: binpack or spread, not %q", p.Strategy)
	}
	for i, x := range p.Expressions {
		c := scheduler.Constraint{Key: x.Key, Op: scheduler.Op(x.Op), Values: x.Values}
		if err := c.Check(); err != nil {
			return req, reject(api.KindInvalid, fmt.Sprintf("placement.expressions[%d]", i), "", "placement.expressions[%d]: %v", i, err)
		}
		req.Expressions = append(req.Expressions, c)
	}
	if k := p.AntiAffinity; k != "" {
		v, ok := d.Spec.Labels[k]
		if !ok {
			return req, reject(api.KindInvalid, "placement.antiAffinity", "", "placement.antiAffinity: the container has no label %s to keep apart by", k)
		}
		req.AntiAffinity = projection.GroupOf(k, v)
	}
	req.Capabilities = p.Capabilities
	return req, nil
}

// minCPU is the smallest cpu limit any host's driver of this name sets,
// as the hosts report it; false when no host reports one.
func (o *Orchestrator) minCPU(driverName string) (float64, bool) {
	o.state.hostsMu.RLock()
	defer o.state.hostsMu.RUnlock()
	min, found := 0.0, false
	for _, h := range o.state.hosts {
		for _, d := range h.Drivers {
			if d.Name != driverName {
				continue
			}
			if d.MinCPU <= 0 {
				return 0, false // a host that takes any limit
			}
			if !found || d.MinCPU < min {
				min, found = d.MinCPU, true
			}
		}
	}
	return min, found
}

// applyPolicy evaluates the admission policies on a create request. Each
// violation is an event; the first refuses the request, naming the
// policy, unless the policies only report (dry run).
func (o *Orchestrator) applyPolicy(ctx context.Context, req events.Event, d api.CreateRequest) error {
	if o.policy == nil {
		return nil
	}
	dec := o.policy.Admit(policy.Input{Spec: d.Spec, Driver: d.Driver, HostID: d.HostID, Source: req.Source(), ID: req.ID()})
	key := events.RequestKey(req)
	for _, v := range dec.Violations {
		_, err := o.publish(ctx, events.RequestPolicyViolated, events.PolicyViolatedData{RequestID: req.ID(), RequestType: req.Type(),
			Policy: v.Policy, Field: v.Field, Message: v.Message, Enforced: !dec.DryRun},
			events.CausedBy(req), events.WithID(events.DeriveID(key, "policy "+v.Policy)))
		if err != nil {
			return events.Retry(err, 0) // the violation must be on record before the answer
		}
		if dec.DryRun {
			o.log.Info("orchestrator: a request breaks a policy (dry run: admitted)", "request_id", req.ID(), "policy", v.Policy, "message", v.Message)
		}
	}
	if dec.Allowed {
		return nil
	}
	v := dec.Violations[0]
	return &rejection{api.Error{Kind: api.KindPermission, Field: v.Field, Policy: v.Policy,
		Message: fmt.Sprintf("refused by policy %s: %s", v.Policy, v.Message)}}
}
