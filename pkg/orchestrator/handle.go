package orchestrator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/scheduler"
)

// idSpace derives the ids of the events a request causes, so that handling
// the same request again publishes the same ids and JetStream keeps one.
var idSpace = uuid.MustParse("5b1f6c2e-6f0a-4c1e-9a55-0e6a4b1d7c3a")

func derive(requestID, step string) string {
	return uuid.NewSHA1(idSpace, []byte(requestID+"\x00"+step)).String()
}

// newContainerID returns a fresh container id: 24 hex digits.
func newContainerID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rejection is a request's refusal; the handler turns it into a rejected
// event.
type rejection struct{ e api.Error }

func (r *rejection) Error() string { return r.e.Message }

func reject(kind, field, id, format string, args ...any) error {
	return &rejection{api.Error{Kind: kind, Field: field, ID: id, Message: fmt.Sprintf(format, args...)}}
}

// Handle carries out one request and returns its outcome event:
// io.openagent.request.accepted or io.openagent.request.rejected, both
// published to the events stream. A request handled before gets the same
// outcome again and causes nothing new. An error means the outcome could
// not be recorded and the request should be retried.
func (o *Orchestrator) Handle(ctx context.Context, req events.Event) (events.Event, error) {
	key := events.RequestToken(req.ID())
	if entry, err := o.requests.Get(ctx, key); err == nil {
		var prev events.Event
		if json.Unmarshal(entry.Value(), &prev) == nil {
			return prev, nil
		}
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return events.Event{}, events.Retry(fmt.Errorf("read outcome: %w", err), 0)
	}

	accepted, err := o.decide(ctx, req)
	var reply events.Event
	var rej *rejection
	switch {
	case errors.As(err, &rej):
		reply, err = o.publish(ctx, events.RequestRejected, map[string]any{
			"requestId": req.ID(), "requestType": req.Type(), "error": rej.e,
		}, events.CausedBy(req), events.WithID(derive(req.ID(), "rejected")))
	case err != nil:
		return events.Event{}, err
	default:
		accepted.RequestType = req.Type()
		reply, err = o.publish(ctx, events.RequestAccepted, accepted, events.CausedBy(req),
			events.WithID(derive(req.ID(), "accepted")), events.WithContainer(accepted.ContainerID))
	}
	if err != nil {
		return events.Event{}, events.Retry(err, 0)
	}
	if b, err := json.Marshal(reply); err == nil {
		if _, err := o.requests.Put(ctx, key, b); err != nil {
			o.log.Warn("orchestrator: record outcome", "event_id", req.ID(), "err", err)
		}
	}
	return reply, nil
}

// Reject publishes the rejection of something that arrived as a request
// but is not a valid event, so that its sender learns why.
func (o *Orchestrator) Reject(ctx context.Context, requestID, requestType string, cause error) (events.Event, error) {
	e := api.Error{Kind: "invalid", Message: cause.Error()}
	var ve *events.ValidationError
	if errors.As(cause, &ve) {
		e.Field = ve.Field
	}
	if requestID == "" {
		requestID = uuid.NewString()
	}
	return o.publish(ctx, events.RequestRejected, map[string]any{"requestId": requestID, "requestType": requestType, "error": e},
		events.WithExtension(events.ExtCorrelationID, requestID), events.WithID(derive(requestID, "rejected")))
}

func (o *Orchestrator) publish(ctx context.Context, typ string, data any, opts ...events.Option) (events.Event, error) {
	e, err := events.New(typ, o.source, data, opts...)
	if err != nil {
		return events.Event{}, err
	}
	if _, err := o.pub.Publish(ctx, e); err != nil {
		return events.Event{}, err
	}
	return e, nil
}

// decide validates, admits and carries out a request up to publishing its
// command; it returns what was accepted or a *rejection.
func (o *Orchestrator) decide(ctx context.Context, req events.Event) (*api.Accepted, error) {
	if err := o.v.Validate(req); err != nil {
		var ve *events.ValidationError
		if errors.As(err, &ve) {
			return nil, reject("invalid", ve.Field, "", "%s: %s", ve.Field, ve.Message)
		}
		return nil, reject("invalid", "", "", "%v", err)
	}
	if events.KindOf(req.Type()) != events.KindRequest {
		return nil, reject("invalid", "type", "", "%s is not a request", req.Type())
	}
	switch req.Type() {
	case events.ContainerCreateRequested:
		return o.create(ctx, req)
	case events.SessionCreateRequested, events.SessionExecRequested, events.SessionExtendRequested, events.SessionCloseRequested:
		return nil, reject("not_supported", "type", "", "session requests are served by request/reply on %s", SubjectSessions)
	}
	var d struct {
		ContainerID string `json:"containerId"`
		TimeoutMs   int64  `json:"timeoutMs"`
		Force       bool   `json:"force"`
	}
	if err := events.Data(req, &d); err != nil {
		return nil, reject("invalid", "data", "", "%v", err)
	}
	r, ok := o.state.get(d.ContainerID)
	if !ok {
		return nil, reject("not_found", "containerId", d.ContainerID, "no container %s", d.ContainerID)
	}
	acc := &api.Accepted{RequestID: req.ID(), ContainerID: r.ID}
	cmdOpts := []events.Option{events.CausedBy(req), events.WithHost(r.Host), events.WithContainer(r.ID), events.WithID(derive(req.ID(), "command"))}
	live := o.live(r.Host)
	switch req.Type() {
	case events.ContainerStartRequested:
		if r.Status == api.StatusFailed {
			return nil, reject("conflict", "", r.ID, "container %s failed to be created; remove it", r.ID)
		}
		if !live {
			return nil, reject("unavailable", "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		_, err := o.publish(ctx, events.CommandStart, map[string]any{"containerId": r.ID, "hostId": r.Host}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerStopRequested:
		if !live {
			return nil, reject("unavailable", "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		_, err := o.publish(ctx, events.CommandStop, map[string]any{"containerId": r.ID, "hostId": r.Host, "timeoutMs": d.TimeoutMs, "force": d.Force}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerRemoveRequested:
		if (r.Status == api.StatusRunning || r.Status == api.StatusPending) && !d.Force {
			return nil, reject("conflict", "", r.ID, "container %s is %s; stop it first or force", r.ID, r.Status)
		}
		if !live || r.Status == api.StatusFailed {
			if !live && !d.Force {
				return nil, reject("unavailable", "", r.ID, "host %s of container %s stopped reporting; force to forget it", r.Host, r.ID)
			}
			// Nothing to remove on a host: forget the container.
			reason := "failed before it existed on a host"
			if !live {
				reason = "forgotten: host " + r.Host + " stopped reporting"
			}
			_, err := o.publish(ctx, events.ContainerRemoved, map[string]any{"containerId": r.ID, "hostId": r.Host, "reason": reason},
				events.CausedBy(req), events.WithContainer(r.ID), events.WithHost(r.Host), events.WithID(derive(req.ID(), "removed")))
			return acc, retry(err)
		}
		_, err := o.publish(ctx, events.CommandRemove, map[string]any{"containerId": r.ID, "hostId": r.Host, "force": d.Force}, cmdOpts...)
		return acc, retry(err)
	case events.ContainerExecRequested:
		if r.Status != api.StatusRunning {
			return nil, reject("conflict", "", r.ID, "container %s is %s, not running", r.ID, r.Status)
		}
		if !live {
			return nil, reject("unavailable", "", r.ID, "host %s of container %s stopped reporting", r.Host, r.ID)
		}
		var x map[string]any
		if err := json.Unmarshal(req.Data(), &x); err != nil {
			return nil, reject("invalid", "data", "", "%v", err)
		}
		acc.ExecID = derive(req.ID(), "exec")
		x["execId"], x["hostId"] = acc.ExecID, r.Host
		_, err := o.publish(ctx, events.CommandExec, x, cmdOpts...)
		return acc, retry(err)
	}
	return nil, reject("invalid", "type", "", "unknown request %s", req.Type())
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

func (o *Orchestrator) create(ctx context.Context, req events.Event) (*api.Accepted, error) {
	var d api.CreateRequest
	if err := events.Data(req, &d); err != nil {
		return nil, reject("invalid", "data", "", "%v", err)
	}
	if d.ContainerID == "" {
		d.ContainerID = newContainerID()
	}
	if d.Spec.SessionID == "" {
		d.Spec.SessionID = d.ContainerID
	}
	if err := d.Spec.Validate(); err != nil {
		var ce *driver.ConfigError
		if errors.As(err, &ce) {
			return nil, reject("invalid", "spec."+ce.Field, "", "spec.%s: %s", ce.Field, ce.Message)
		}
		return nil, reject("invalid", "spec", "", "%v", err)
	}
	if e := admit(d.Spec, o.protected); e != nil {
		return nil, &rejection{e: *e}
	}
	if d.Driver == "" {
		d.Driver = driverFor(d.Spec.Image)
	}
	plan, err := scheduler.Place(o.snapshot(), scheduler.Request{
		Driver: d.Driver, HostID: d.HostID, Constraints: d.Constraints, Resources: demand(d.Spec),
	})
	if err != nil {
		kind := "unavailable"
		var pe *scheduler.PlacementError
		if errors.As(err, &pe) {
			for _, u := range pe.Hosts {
				if strings.HasPrefix(u.Reason, "cpu:") || strings.HasPrefix(u.Reason, "memory:") || strings.HasPrefix(u.Reason, "pids:") {
					kind = "resource_limit"
				}
			}
		}
		return nil, reject(kind, "", d.ContainerID, "%v", err)
	}
	r := &record{Container: api.Container{ID: d.ContainerID, Name: d.Name, Host: plan.HostID, Driver: plan.Driver, RequestID: strings.Clone(req.ID())}, Spec: d.Spec}
	api.FromSpec(&r.Container, d.Spec)
	if taken := o.state.reserve(r); taken != "" {
		if taken == "name" {
			return nil, reject("conflict", "name", d.Name, "a container named %s exists", d.Name)
		}
		return nil, reject("conflict", "containerId", d.ContainerID, "container %s exists", d.ContainerID)
	}
	opts := []events.Option{events.CausedBy(req), events.WithContainer(r.ID), events.WithHost(plan.HostID), events.WithSession(d.Spec.SessionID)}
	placed := map[string]any{"containerId": r.ID, "hostId": plan.HostID, "driver": plan.Driver, "spec": d.Spec}
	if d.Name != "" {
		placed["name"] = d.Name
	}
	_, err = o.publish(ctx, events.ContainerPlaced, placed, append(opts, events.WithID(derive(req.ID(), "placed")))...)
	if err == nil {
		_, err = o.publish(ctx, events.CommandCreate, map[string]any{
			"containerId": r.ID, "hostId": plan.HostID, "driver": plan.Driver, "spec": d.Spec, "start": d.Start,
		}, append(opts, events.WithID(derive(req.ID(), "command")))...)
	}
	if err != nil {
		o.state.release(r.ID)
		return nil, events.Retry(err, 0)
	}
	return &api.Accepted{RequestID: req.ID(), ContainerID: r.ID}, nil
}
