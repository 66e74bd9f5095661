package orchestrator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/coord"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
)

// Leadership. Orchestrators on one bus campaign for one lease
// (pkg/coord); the holder leads: it consumes the requests, relays the
// workers' events, watches the hosts' liveness and the pending deadline,
// writes the projection's bucket, and runs what Config.Lead adds (the
// sessions and the request/reply door). The others follow: they keep the
// projection warm from the events stream, answer reads, and hand writes
// to the leader through the requests stream, where a request is durable
// whoever leads, then wait for its outcome in the events stream.
//
// A term starts with the leader's proclamation (events.Proclaim): a
// leader.elected event stored by compare-and-set, after which what a
// former leader writes is refused by every reader of the log (its older
// token). The new leader acts only once its projection has folded the log
// up to its proclamation: everything its predecessors decided is in its
// state. It confirms each request's outcome before answering: the last
// proclamation, read once the outcome is stored, must still be its own,
// so no answer given stands on a write a successor refuses.

// term is one tenure as leader.
type term struct {
	token  uint64
	seq    uint64 // the proclamation's sequence in the events stream
	since  time.Time
	cancel context.CancelFunc // ends the term
}

// errNotLeading says this orchestrator stopped leading while it handled a
// request; the request is retried, by whoever leads.
var errNotLeading = errors.New("orchestrator: no longer the leader")

// leading returns the current term; nil when this orchestrator follows.
// Without an election it always leads, unfenced (token 0).
func (o *Orchestrator) leading() *term {
	if o.leases == nil {
		return &term{}
	}
	return o.term.Load()
}

// Leading reports whether this orchestrator leads the control plane.
func (o *Orchestrator) Leading() bool { return o.leading() != nil }

// Leader says who leads: this orchestrator's own id and address while it
// does, else what the lease says; nil while nobody holds it.
func (o *Orchestrator) Leader(ctx context.Context) *coord.Holding {
	if t := o.leading(); t != nil {
		return &coord.Holding{Holder: o.id, Address: o.address, Since: t.since, Token: t.token}
	}
	h, err := o.leases.Current(ctx, events.Election)
	if err != nil {
		return nil
	}
	return h
}

// Token returns the fencing token of the term this orchestrator leads,
// and whether it leads.
func (o *Orchestrator) Token() (uint64, bool) {
	t := o.leading()
	if t == nil {
		return 0, false
	}
	return t.token, true
}

// ID is the name this orchestrator campaigns under.
func (o *Orchestrator) ID() string { return o.id }

func defaultID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// campaign leads whenever this orchestrator holds the lease, until ctx
// ends.
func (o *Orchestrator) campaign(ctx context.Context) error {
	if o.leases == nil {
		return o.lead(ctx, ctx)
	}
	return o.leases.Lead(ctx, events.Election, coord.Holding{Holder: o.id, Address: o.address}, func(lctx context.Context, token uint64) {
		if err := o.serveTerm(ctx, lctx, token); err != nil && lctx.Err() == nil {
			o.log.Warn("orchestrator: the term as leader ended", "token", token, "err", err)
		}
	})
}

// serveTerm is one term: proclaim, catch up to the proclamation, lead.
func (o *Orchestrator) serveTerm(runCtx, ctx context.Context, token uint64) error {
	since := time.Now().UTC()
	p, err := events.Proclaim(ctx, o.js, o.v, events.LeaderElectedData{Holder: o.id, Token: token, Address: o.address, Since: since}, o.source)
	if err != nil {
		return err
	}
	for {
		var at uint64
		o.state.Read(func(m *projection.Model) { at = m.Seq })
		if at >= p.Seq {
			break
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(5 * time.Millisecond):
		}
	}
	// What the projection learnt while following is written by this
	// leader, all of it: a predecessor may have written older records.
	o.state.MarkAllDirty()
	if err := o.state.Sweep(ctx, o.containers); err != nil {
		o.log.Warn("orchestrator: sweep the state's bucket of what it no longer holds", "err", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	o.term.Store(&term{token: token, seq: p.Seq, since: since, cancel: cancel})
	defer func() {
		o.term.Store(nil)
		o.state.dropReservations()
	}()
	o.log.Info("orchestrator: leading", "id", o.id, "token", token, "from_seq", p.Seq)
	err = o.lead(runCtx, ctx)
	o.log.Info("orchestrator: no longer leading", "id", o.id, "token", token)
	return err
}

// lead runs the leader-only loops until ctx ends or one fails. When the
// orchestrator itself stops (runCtx ended) it writes what the projection
// learnt last, for the next start; a leader that lost its lease does not,
// for its successor writes now.
func (o *Orchestrator) lead(runCtx, ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return o.failOverdue(ctx) })
	g.Go(func() error { return o.watchStreams(ctx) })
	g.Go(func() error { return o.relay(ctx) })
	g.Go(func() error { return o.flushLoop(ctx) })
	g.Go(func() error { return o.serveRequests(ctx) })
	g.Go(func() error { o.reconcileFollowed(ctx); return nil })
	g.Go(func() error { return o.watchLiveness(ctx) })
	g.Go(func() error { return o.checkpoints(ctx) })
	g.Go(func() error { return o.evaluateAlerts(ctx) })
	for _, name := range o.alerts.Webhooks() {
		g.Go(func() error { return o.deliverWebhook(ctx, name) })
	}
	if o.leadFn != nil {
		g.Go(func() error { return o.leadFn(ctx) })
	}
	err := g.Wait()
	if runCtx.Err() != nil {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if o.confirm(fctx) == nil {
			if ferr := o.state.Flush(fctx, o.js, o.containers); ferr != nil {
				o.log.Warn("orchestrator: final flush", "err", ferr)
			}
		}
	}
	return err
}

// confirm checks that this orchestrator's proclamation is still the last:
// what it stored before is then before any successor's, and stands.
func (o *Orchestrator) confirm(ctx context.Context) error {
	t := o.leading()
	if t == nil {
		return errNotLeading
	}
	if o.leases == nil {
		return nil
	}
	last, err := events.LastLeader(ctx, o.events, events.Election)
	if err != nil {
		return err
	}
	if last.Token != t.token {
		// Another leads, though this one's lease did not say so yet (it
		// was paused, or its bus partitioned): the term is over.
		if t.cancel != nil {
			t.cancel()
		}
		o.log.Warn("orchestrator: a later leader proclaimed itself; stepping down", "token", t.token, "leader_token", last.Token)
		return fmt.Errorf("%w: leader %d proclaimed after %d", errNotLeading, last.Token, t.token)
	}
	return nil
}

// forward hands a request to the leader through the requests stream and
// waits for the outcome the leader records for it in the requests bucket,
// which it writes only once the outcome stands: a former leader's outcome,
// refused by the log's readers, is never recorded.
func (o *Orchestrator) forward(ctx context.Context, req events.Event) (events.Event, error) {
	key, digest := events.RequestKey(req), events.RequestDigest(req)
	// The watch gives the record as it is first (a request handled
	// before), then as it is written.
	w, err := o.requests.Watch(ctx, events.RequestToken(key))
	if err != nil {
		return events.Event{}, events.Retry(fmt.Errorf("follow the request's outcome: %w", err), 0)
	}
	defer w.Stop()
	if _, err := o.pub.Publish(ctx, req); err != nil {
		var ve *events.ValidationError
		if errors.As(err, &ve) {
			// Not a valid request: refused here, as the leader would.
			return o.unstored(req, api.Error{Kind: api.KindInvalid, Field: ve.Field, Message: ve.Error()}), nil
		}
		return events.Event{}, events.Retry(fmt.Errorf("hand the request to the leader: %w", err), 0)
	}
	limit := time.NewTimer(DefaultWait)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			return events.Event{}, ctx.Err()
		case <-limit.C:
			return events.Event{}, &api.Error{Kind: api.KindUnavailable, Message: fmt.Sprintf(
				"handed to the leader, and no outcome within %v: no orchestrator leads, or it is overloaded; send the request again with the same id", DefaultWait)}
		case entry := <-w.Updates():
			if entry == nil || entry.Operation() != jetstream.KeyValuePut {
				continue
			}
			var rec outcomeRecord
			if json.Unmarshal(entry.Value(), &rec) != nil || rec.Event.ID() == "" {
				continue
			}
			if rec.Digest != "" && rec.Digest != digest {
				// The leader refuses it too, without recording anything.
				return o.unstored(req, api.Error{Kind: api.KindConflict, Field: "id", ID: req.ID(), Message: fmt.Sprintf(
					"request id %s from %s was used before with different data; use a new id for a new request", req.ID(), req.Source())}), nil
			}
			return rec.Event, nil
		}
	}
}

// unstored is the rejected event of a request refused by a follower
// before, or besides, the leader's own answer; a follower writes nothing
// to the log.
func (o *Orchestrator) unstored(req events.Event, e api.Error) events.Event {
	ev, _ := events.New(events.RequestRejected, o.source, events.RejectedData{RequestID: req.ID(), RequestType: req.Type(), Error: e}, events.CausedBy(req))
	return ev
}
