package orchestrator

import (
	"context"
	"crypto/ed25519"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/events"
)

// checkpointSubject is where the audit chain's checkpoints are stored.
var checkpointSubject = events.EventsRoot + ".audit.chain." + events.Name(events.AuditCheckpoint)

// checkpoints signs the audit chain while this orchestrator leads: it
// resumes after the last checkpoint its key signed (from the stream's
// start when there is none), folds what the stream holds after it, and
// publishes a checkpoint every checkpointEvery while the stream grew by
// more than checkpoints.
func (o *Orchestrator) checkpoints(ctx context.Context) error {
	if o.auditKey == nil {
		return nil
	}
	seq, link := o.lastCheckpoint(ctx)
	t := time.NewTicker(o.checkpointEvery)
	defer t.Stop()
	for {
		next, nextLink, fresh, err := o.fold(ctx, seq, link)
		if err != nil && ctx.Err() == nil {
			o.log.Warn("orchestrator: fold the audit chain", "from", seq+1, "err", err)
		}
		seq, link = next, nextLink
		if fresh {
			d := audit.Sign(o.auditKey, seq, link)
			if _, err := o.publish(ctx, events.AuditCheckpoint, d, events.WithID(events.DeriveID(d.Key, "checkpoint "+strconv.FormatUint(seq, 10)))); err != nil && ctx.Err() == nil {
				o.log.Warn("orchestrator: publish an audit checkpoint", "seq", seq, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// lastCheckpoint is where the chain resumes: after the last checkpoint
// this key signed, or at the start of the stream.
func (o *Orchestrator) lastCheckpoint(ctx context.Context) (seq uint64, link audit.Link) {
	m, err := o.events.GetLastMsgForSubject(ctx, checkpointSubject)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			o.log.Warn("orchestrator: read the last audit checkpoint; folding the chain from the start", "err", err)
		}
		return 0, audit.Genesis
	}
	e, err := events.FromMsg(&nats.Msg{Subject: m.Subject, Header: m.Header, Data: m.Data})
	var d events.AuditCheckpointData
	if err == nil {
		err = events.Data(e, &d)
	}
	if err == nil {
		err = audit.Check(d, o.auditKey.Public().(ed25519.PublicKey))
	}
	if err == nil {
		link, err = audit.ParseLink(d.Link)
	}
	if err != nil {
		o.log.Warn("orchestrator: the last audit checkpoint is not this key's; folding the chain from the start", "seq", m.Sequence, "err", err)
		return 0, audit.Genesis
	}
	return d.Seq, link
}

// fold reads the events after seq, as far as the stream holds now, into
// the chain; fresh says whether any was not a checkpoint.
func (o *Orchestrator) fold(ctx context.Context, seq uint64, link audit.Link) (_ uint64, _ audit.Link, fresh bool, _ error) {
	cons, err := o.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1})
	if err != nil {
		return seq, link, fresh, err
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumPending == 0 {
		return seq, link, fresh, err
	}
	it, err := cons.Messages()
	if err != nil {
		return seq, link, fresh, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return seq, link, fresh, err
		}
		md, err := m.Metadata()
		if err != nil {
			return seq, link, fresh, err
		}
		e, err := events.FromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err != nil {
			return seq, link, fresh, err
		}
		c, err := audit.Canonical(e)
		if err != nil {
			return seq, link, fresh, err
		}
		seq, link = md.Sequence.Stream, audit.Next(link, md.Sequence.Stream, c)
		fresh = fresh || e.Type() != events.AuditCheckpoint
		if md.NumPending == 0 {
			return seq, link, fresh, nil
		}
	}
}
