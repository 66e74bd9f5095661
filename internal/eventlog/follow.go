// Package eventlog reads the whole events stream as a checker does: from
// its first event, in order, for as long as it runs, whatever the servers
// do meanwhile.
package eventlog

import (
	"context"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/events"
)

// Follow hands each event of the events stream to fn with its sequence,
// from the first, until ctx ends. Its consumer is made again after the
// last sequence read whenever a server restart or failover ends it; a
// message that is no event goes to bad.
func Follow(ctx context.Context, js jetstream.JetStream, fn func(e events.Event, seq uint64), bad func(seq uint64, err error)) {
	var next uint64 = 1
	for ctx.Err() == nil {
		cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next})
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		it, err := cons.Messages()
		if err != nil {
			time.Sleep(200 * time.Millisecond)
			continue
		}
		stop := context.AfterFunc(ctx, it.Stop)
		for {
			m, err := it.Next()
			if err != nil {
				break
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			next = md.Sequence.Stream + 1
			e, err := events.FromMsg(&nats.Msg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			if err != nil {
				bad(md.Sequence.Stream, err)
				continue
			}
			fn(e, md.Sequence.Stream)
		}
		stop()
	}
}
