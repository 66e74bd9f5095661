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
// more than its own last checkpoint.
func (o *Orchestrator) checkpoints(ctx context.Context) error {
	if o.auditKey == nil {
		return nil
	}
	seq, link, own := o.lastCheckpoint(ctx)
	t := time.NewTicker(o.checkpointEvery)
	defer t.Stop()
	for {
		next, nextLink, err := o.fold(ctx, seq, link)
		switch {
		case err != nil && ctx.Err() == nil:
			o.log.Warn("orchestrator: fold the audit chain", "from", seq+1, "err", err)
		case next > seq && next != own:
			d := audit.Sign(o.auditKey, next, nextLink)
			ack, err := o.pub.Publish(ctx, o.stamp(events.AuditCheckpoint, d, events.WithID(events.DeriveID(d.Key, "checkpoint "+strconv.FormatUint(next, 10)))))
			if err != nil {
				if ctx.Err() == nil {
					o.log.Warn("orchestrator: publish an audit checkpoint", "seq", next, "err", err)
				}
				break
			}
			seq, link, own = next, nextLink, ack.Sequence
		default:
			seq, link = next, nextLink
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// stamp makes an event of this term, as publish does, for a caller that
// needs the ack's sequence.
func (o *Orchestrator) stamp(typ string, data any, opts ...events.Option) events.Event {
	t := o.leading()
	if t != nil {
		opts = append(opts, events.WithLeaderToken(t.token))
	}
	e, _ := events.New(typ, o.source, data, opts...)
	return e
}

// lastCheckpoint is where the chain resumes: the last checkpoint this
// key signed (its sequence, link, and its own place in the stream), or
// the start of the stream.
func (o *Orchestrator) lastCheckpoint(ctx context.Context) (seq uint64, link audit.Link, own uint64) {
	m, err := o.events.GetLastMsgForSubject(ctx, checkpointSubject)
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			o.log.Warn("orchestrator: read the last audit checkpoint; folding the chain from the start", "err", err)
		}
		return 0, audit.Genesis, 0
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
		return 0, audit.Genesis, 0
	}
	return d.Seq, link, m.Sequence
}

// fold reads the events after seq, as far as the stream holds now, into
// the chain.
func (o *Orchestrator) fold(ctx context.Context, seq uint64, link audit.Link) (uint64, audit.Link, error) {
	cons, err := o.js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1})
	if err != nil {
		return seq, link, err
	}
	info, err := cons.Info(ctx)
	if err != nil || info.NumPending == 0 {
		return seq, link, err
	}
	it, err := cons.Messages()
	if err != nil {
		return seq, link, err
	}
	defer it.Stop()
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return seq, link, err
		}
		md, err := m.Metadata()
		if err != nil {
			return seq, link, err
		}
		e, err := events.FromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
		if err != nil {
			return seq, link, err
		}
		c, err := audit.Canonical(e)
		if err != nil {
			return seq, link, err
		}
		seq, link = md.Sequence.Stream, audit.Next(link, md.Sequence.Stream, c)
		if md.NumPending == 0 {
			return seq, link, nil
		}
	}
}
