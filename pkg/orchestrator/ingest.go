package orchestrator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/events"
)

// The workers' events reach the audit log through the orchestrator. A
// worker may publish only in its host's subtree of the ingest stream (the
// server's permissions see to it); the relay takes each event from there,
// checks that it is valid, that it is a worker's to send, and that it is
// about the sending host and not about a container placed on another
// host, and publishes it to
// the events stream under the same id. What fails a check is refused:
// never stored under the events subjects, and reported as a
// host.event.refused event. Events are moved in the order they arrived,
// their publishes pipelined.

// workerEvents are the types a worker may send.
var workerEvents = map[string]bool{
	events.ContainerCreated: true, events.ContainerStarted: true, events.ContainerExited: true,
	events.ContainerStopped: true, events.ContainerRemoved: true, events.ContainerFailed: true,
	events.ExecCompleted: true, events.ContainerCommandRefused: true, events.ContainerHealth: true,
	events.HostRegistered: true, events.HostHeartbeat: true, events.HostReconciled: true,
}

// relay moves the workers' events from the ingest stream to the events
// stream until ctx ends. Messages come in order to one callback, which
// checks each and publishes it without waiting; an acknowledger waits for
// the stores in the same order and acknowledges each message once its
// event is stored. What was not stored is delivered again, and stored
// once by its id.
func (o *Orchestrator) relay(ctx context.Context) error {
	cons, err := o.js.CreateOrUpdateConsumer(ctx, events.StreamIngest, leaderConsumer("orchestrator-ingest", events.IngestRoot+".>"))
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return fmt.Errorf("orchestrator: ingest consumer: %w", err)
	}
	type inFlight struct {
		m jetstream.Msg
		f jetstream.PubAckFuture
	}
	sent := make(chan inFlight, events.DefaultMaxAckPending)
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for s := range sent {
			select {
			case <-s.f.Ok():
				_ = s.m.Ack()
			case err := <-s.f.Err():
				o.log.Warn("orchestrator: store an event from a host", "subject", s.f.Msg().Subject, "err", err)
				_ = s.m.NakWithDelay(time.Second)
			case <-ctx.Done():
				// Not acknowledged: delivered again after the next start.
			}
		}
	}()
	// Short pulls make heartbeats frequent: a pull lost as the cluster
	// forms or as a server goes is made again within seconds; with the
	// default's 30s, a fresh deployment relayed nothing for its first 30s.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		host := events.IngestHost(m.Subject())
		e, why := o.checkIngest(host, m)
		if why != "" {
			o.refuse(ctx, host, m, e, why)
			return
		}
		subject, err := events.Subject(e)
		if err == nil {
			var out *nats.Msg
			if out, err = events.ToMsg(subject, e); err == nil {
				out.Header.Set(jetstream.MsgIDHeader, e.ID())
				var f jetstream.PubAckFuture
				if f, err = o.js.PublishMsgAsync(out); err == nil {
					sent <- inFlight{m, f}
					return
				}
			}
		}
		o.log.Warn("orchestrator: move an event to the events stream", "host_id", host, "event_id", e.ID(), "err", err)
		_ = m.NakWithDelay(time.Second)
	}, jetstream.PullExpiry(5*time.Second), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if ctx.Err() == nil {
			o.log.Warn("orchestrator: the ingest stream", "err", err)
		}
	}))
	if err != nil {
		close(sent)
		<-acked
		return fmt.Errorf("orchestrator: consume the ingest stream: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	close(sent)
	<-acked
	return nil
}

// checkIngest returns the event a host sent, or why it is refused.
func (o *Orchestrator) checkIngest(host string, m jetstream.Msg) (events.Event, string) {
	e, err := events.FromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
	if err != nil {
		return e, "not an event: " + err.Error()
	}
	if err := o.v.Validate(e); err != nil {
		return e, err.Error()
	}
	if !workerEvents[e.Type()] {
		return e, e.Type() + " is not an event a worker sends"
	}
	if want := "/openagent/hosts/" + host; e.Source() != want {
		return e, fmt.Sprintf("source %s; a worker of host %s sends as %s", e.Source(), host, want)
	}
	if h := events.Ext(e, events.ExtHostID); h != host {
		return e, fmt.Sprintf("hostid %q; it came from host %s", h, host)
	}
	id := events.Ext(e, events.ExtContainerID)
	if id == "" {
		return e, "" // the host's own event
	}
	// A container the orchestrator does not know (never placed, or
	// removed and forgotten) is the sending host's own business: what it
	// reports of it changes nothing the control plane decides on. One
	// placed on another host is not.
	if r, ok := o.state.Known(id); ok && r.Host != host {
		return e, fmt.Sprintf("container %s is on host %s, not host %s", id, r.Host, host)
	}
	return e, ""
}

// refuse terminates an event that failed a check and reports it.
func (o *Orchestrator) refuse(ctx context.Context, host string, m jetstream.Msg, e events.Event, why string) {
	o.log.Warn("orchestrator: refused an event from a host", "host_id", host, "event_id", e.ID(), "type", e.Type(), "reason", why)
	if events.ValidToken(host) {
		key := host + "\x00" + e.ID() + "\x00" + m.Headers().Get(jetstream.MsgIDHeader)
		if _, err := o.publish(ctx, events.HostEventRefused, events.HostEventRefusedData{HostID: host, EventID: e.ID(), EventType: e.Type(), Reason: why},
			events.WithHost(host), events.WithID(events.DeriveID(key, "refused"))); err != nil && !errors.Is(err, context.Canceled) {
			o.log.Warn("orchestrator: report a refused event", "host_id", host, "err", err)
			_ = m.NakWithDelay(time.Second) // report it the next time
			return
		}
	}
	_ = m.Term()
}
