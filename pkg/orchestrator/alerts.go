package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/telemetry"
)

// The alert rules (package telemetry) are the leader's: every
// evaluation, each rule is evaluated on every active container and every
// host, from the projection and the hosts' last resource samples. What
// fires or resolves is logged and published as io.openagent.alert.*, and
// each webhook a rule names is delivered the event from a durable consumer
// of its own. A new leader goes on from the alerts the events stream says
// are firing: it does not fire them again.

// maxAttempts caps the attempts a delivery's record keeps.
const maxAttempts = 50

// evaluateAlerts evaluates the rules for as long as the term lasts.
func (o *Orchestrator) evaluateAlerts(ctx context.Context) error {
	o.alerts.Reset()
	o.alerts.Restore(o.FiringAlerts())
	t := time.NewTicker(o.alerts.Every())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			o.alerts.Reset()
			return nil
		case <-t.C:
			o.evaluateOnce(ctx, time.Now())
		}
	}
}

// evaluateOnce evaluates every rule once and carries out what fired or
// resolved. A transition that could not be published is undone, so that
// the next evaluation makes it again.
func (o *Orchestrator) evaluateOnce(ctx context.Context, now time.Time) {
	hosts := o.Hosts()
	hostVars := make(map[string]map[string]any, len(hosts))
	var subjects []telemetry.Subject
	for _, h := range hosts {
		v := telemetry.HostVars(h, now)
		hostVars[h.ID] = v
		subjects = append(subjects, telemetry.Subject{On: telemetry.OnHost, ID: h.ID, HostID: h.ID, Vars: map[string]any{telemetry.OnHost: v}})
	}
	samples := map[string]events.ContainerSample{}
	for _, s := range o.Samples() {
		samples[s.ContainerID] = s.ContainerSample
	}
	o.state.Read(func(m *projection.Model) {
		for _, r := range m.Containers {
			if !r.Status.Active() {
				continue
			}
			var sample *events.ContainerSample
			if s, ok := samples[r.ID]; ok {
				sample = &s
			}
			vars := map[string]any{telemetry.OnContainer: telemetry.ContainerVars(r.Container, sample)}
			if hv, ok := hostVars[r.Host]; ok {
				vars[telemetry.OnHost] = hv
			}
			subjects = append(subjects, telemetry.Subject{On: telemetry.OnContainer, ID: r.ID, HostID: r.Host, Vars: vars})
		}
	})
	for _, tr := range o.alerts.Evaluate(now, subjects) {
		d := tr.Data
		if tr.Log {
			verb := "alert firing"
			if !tr.Firing {
				verb = "alert resolved"
			}
			o.log.Warn("orchestrator: "+verb, "alert", d.Alert, "severity", d.Severity, "summary", d.Summary, "values", d.Values, "reason", d.Reason)
		}
		if !tr.Event {
			continue
		}
		typ, what := events.AlertFiring, "firing"
		if !tr.Firing {
			typ, what = events.AlertResolved, "resolved"
		}
		opts := []events.Option{events.WithSubject(d.Rule), events.WithHost(d.HostID),
			events.WithID(events.DeriveID(d.Alert, fmt.Sprintf("%s %d", what, d.Since.UnixNano())))}
		if d.On == telemetry.OnContainer {
			opts = append(opts, events.WithContainer(d.Subject))
		}
		if _, err := o.publish(ctx, typ, d, opts...); err != nil {
			if ctx.Err() == nil {
				o.log.Warn("orchestrator: publish an alert; the next evaluation tries again", "alert", d.Alert, "err", err)
			}
			o.alerts.Undo(tr)
		}
	}
}

// FiringAlerts are the alerts the events stream says are firing.
func (o *Orchestrator) FiringAlerts() []events.AlertData {
	var out []events.AlertData
	o.state.Read(func(m *projection.Model) {
		for _, d := range m.Alerts {
			out = append(out, d)
		}
	})
	slices.SortFunc(out, func(a, b events.AlertData) int { return strings.Compare(a.Alert, b.Alert) })
	return out
}

// Alerts is what GET /v1/alerts answers; deliveries are the latest
// limit.
func (o *Orchestrator) Alerts(ctx context.Context, limit int) (api.Alerts, error) {
	out := api.Alerts{Rules: []api.AlertRule{}, Webhooks: []api.AlertWebhook{}, Pending: []events.AlertData{}, Firing: o.FiringAlerts(),
		Deliveries: []api.Delivery{}, Errors: o.alerts.Errors()}
	if out.Firing == nil {
		out.Firing = []events.AlertData{}
	}
	for _, r := range o.alerts.Rules() {
		ar := api.AlertRule{ID: r.ID, Name: r.Name, On: r.On, Expr: r.Expr, For: time.Duration(r.For).String(), Severity: r.Severity, Summary: r.Summary}
		for _, a := range r.Actions {
			if a.Type == "webhook" {
				ar.Actions = append(ar.Actions, "webhook:"+a.Webhook)
			} else {
				ar.Actions = append(ar.Actions, a.Type)
			}
		}
		if len(ar.Actions) == 0 {
			ar.Actions = []string{"log", "event"}
		}
		out.Rules = append(out.Rules, ar)
	}
	for _, name := range o.alerts.Webhooks() {
		w, _ := o.alerts.Webhook(name)
		out.Webhooks = append(out.Webhooks, api.AlertWebhook{Name: name, URL: w.URL, Breaker: o.deliverer.BreakerState(w)})
	}
	if o.Leading() {
		out.Pending = append(out.Pending, o.alerts.Pending()...)
	}
	kv, err := o.js.KeyValue(ctx, events.BucketDeliveries)
	if err != nil {
		return out, fmt.Errorf("orchestrator: the deliveries bucket: %w", err)
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return out, fmt.Errorf("orchestrator: list the deliveries: %w", err)
	}
	for key := range keys.Keys() {
		entry, err := kv.Get(ctx, key)
		if err != nil {
			continue // expired meanwhile
		}
		var d api.Delivery
		if json.Unmarshal(entry.Value(), &d) == nil {
			out.Deliveries = append(out.Deliveries, d)
		}
	}
	slices.SortFunc(out.Deliveries, func(a, b api.Delivery) int { return b.CreatedAt.Compare(a.CreatedAt) })
	if limit > 0 && len(out.Deliveries) > limit {
		out.Deliveries = out.Deliveries[:limit]
	}
	return out, nil
}

// deliverWebhook delivers the alerts' events that name a webhook to it,
// one at a time and in order, from a durable consumer of its own: what
// one slow receiver holds back is its own. Each delivery's attempts are
// kept in the deliveries bucket.
func (o *Orchestrator) deliverWebhook(ctx context.Context, name string) error {
	w, _ := o.alerts.Webhook(name)
	cfg := leaderConsumer("webhook-"+name, events.AlertFilter)
	// A webhook added later is sent what fires from then on, not the
	// alerts of the past.
	cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	cons, err := o.js.CreateOrUpdateConsumer(ctx, events.StreamEvents, cfg)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("orchestrator: webhook %s's consumer: %w", name, err)
	}
	kv, err := o.js.KeyValue(ctx, events.BucketDeliveries)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("orchestrator: the deliveries bucket: %w", err)
	}
	return events.Consume(ctx, cons, o.v, func(ctx context.Context, dl *events.Delivery) error {
		return o.deliver(ctx, kv, w, dl)
	}, events.WithConcurrency(1), events.WithLogger(o.log), events.WithConsumeTracer(o.tracer), events.WithBackoff(time.Second, time.Minute),
		events.WithGiveUp(func(ctx context.Context, dl *events.Delivery, cause error) {
			o.recordDelivery(ctx, kv, w, dl.Event, nil, api.DeliveryAbandoned)
			o.log.Warn("orchestrator: gave up a webhook delivery", "webhook", name, "event_id", dl.Event.ID(), "err", cause)
		}))
}

// deliver delivers one alert event to a webhook, if its rule names it.
func (o *Orchestrator) deliver(ctx context.Context, kv jetstream.KeyValue, w telemetry.Webhook, dl *events.Delivery) error {
	e := dl.Event
	var d events.AlertData
	if err := events.Data(e, &d); err != nil {
		return events.Permanent(err)
	}
	if !slices.Contains(d.Webhooks, w.Name) {
		return nil
	}
	var leader uint64
	o.state.Read(func(m *projection.Model) { leader = m.Leader })
	if t := events.LeaderToken(e); t != 0 && t < leader {
		return nil // a former leader's, written after its successor took over
	}
	body, err := json.Marshal(e)
	if err != nil {
		return events.Permanent(err)
	}
	attempts, err := o.deliverer.Deliver(ctx, w, deliveryID(w.Name, e), body)
	var open *telemetry.BreakerOpen
	switch {
	case err == nil:
		return o.recordDelivery(ctx, kv, w, e, attempts, api.DeliveryDelivered)
	case errors.Is(err, telemetry.ErrRefused):
		o.log.Warn("orchestrator: a webhook refused an alert", "webhook", w.Name, "event_id", e.ID(), "err", err)
		return o.recordDelivery(ctx, kv, w, e, attempts, api.DeliveryRefused)
	case errors.As(err, &open):
		return events.Retry(err, max(open.Wait, 100*time.Millisecond))
	}
	if rerr := o.recordDelivery(ctx, kv, w, e, attempts, api.DeliveryRetrying); rerr != nil {
		return rerr
	}
	return err // delivered again by the consumer, with its backoff
}

// deliveryID is a delivery's id: the same on every attempt and after a
// failover, so a receiver can tell a retry from a new alert.
func deliveryID(webhook string, e events.Event) string {
	return events.DeriveID(e.ID(), "webhook "+webhook)
}

// recordDelivery adds attempts to a delivery's record, in the state it
// is now in.
func (o *Orchestrator) recordDelivery(ctx context.Context, kv jetstream.KeyValue, w telemetry.Webhook, e events.Event, attempts []telemetry.Attempt, state string) error {
	var ad events.AlertData
	_ = events.Data(e, &ad)
	id := deliveryID(w.Name, e)
	now := time.Now().UTC()
	d := api.Delivery{ID: id, Webhook: w.Name, EventID: e.ID(), EventType: e.Type(), Alert: ad.Alert, Severity: ad.Severity, CreatedAt: now}
	if entry, err := kv.Get(ctx, id); err == nil {
		_ = json.Unmarshal(entry.Value(), &d)
	}
	d.State, d.UpdatedAt = state, now
	d.Attempts = append(d.Attempts, attempts...)
	if len(d.Attempts) > maxAttempts {
		d.Attempts = d.Attempts[len(d.Attempts)-maxAttempts:]
	}
	b, _ := json.Marshal(d)
	if _, err := kv.Put(ctx, id, b); err != nil {
		return events.Retry(fmt.Errorf("record the delivery: %w", err), 0)
	}
	return nil
}
