package events

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Leadership on the log. A leader proclaims itself with a leader.elected
// event, stored only if no other was stored since the one it read
// (compare-and-set on the subject's last sequence) and only if that one's
// token is older than its own. Everything the leader decides then carries
// its token (ExtLeaderToken); what an earlier leader writes after the
// proclamation carries an older token and is refused by whoever reads it
// in order: the projection's fold and the workers. A leader confirms a
// write by reading that the last proclamation is still its own once the
// write is stored: then the write precedes any later one.

// Election is the name of the control plane's election, the lease key and
// the CloudEvents subject of its leader.elected events.
const Election = "orchestrator"

// LeaderSubject is where an election's leader.elected events are stored.
func LeaderSubject(election string) string {
	return EventsRoot + ".leader." + election + ".leader.elected"
}

// ErrSuperseded says a later leader proclaimed itself: the one asking
// must stop acting as leader.
var ErrSuperseded = errors.New("events: a later leader was elected")

// Proclamation is a leader.elected event as stored.
type Proclamation struct {
	Seq   uint64    // its sequence in the events stream
	Time  time.Time // when the stream stored it
	Token uint64
	Event Event
}

// LastLeader reads the last leader.elected of an election; the zero value
// when none was stored.
func LastLeader(ctx context.Context, stream jetstream.Stream, election string) (Proclamation, error) {
	msg, err := stream.GetLastMsgForSubject(ctx, LeaderSubject(election))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Proclamation{}, nil
	}
	if err != nil {
		return Proclamation{}, fmt.Errorf("events: read the last leader of %s: %w", election, err)
	}
	token, _ := strconv.ParseUint(msg.Header.Get("ce-"+ExtLeaderToken), 10, 64)
	return Proclamation{Seq: msg.Sequence, Time: msg.Time, Token: token}, nil
}

// Proclaim stores a leader's leader.elected event for its token, unless a
// later leader proclaimed itself (ErrSuperseded). It returns the
// proclamation as stored: its sequence is the point from which the
// leader's decisions count.
func Proclaim(ctx context.Context, js jetstream.JetStream, v *Validator, d LeaderElectedData, source string) (Proclamation, error) {
	stream, err := js.Stream(ctx, StreamEvents)
	if err != nil {
		return Proclamation{}, err
	}
	e, err := New(LeaderElected, source, d, WithSubject(Election), WithLeaderToken(d.Token),
		WithID(DeriveID(Election, "leader "+strconv.FormatUint(d.Token, 10))))
	if err != nil {
		return Proclamation{}, err
	}
	if err := v.Validate(e); err != nil {
		return Proclamation{}, err
	}
	for {
		last, err := LastLeader(ctx, stream, Election)
		if err != nil {
			return Proclamation{}, err
		}
		switch {
		case last.Token > d.Token:
			return Proclamation{}, fmt.Errorf("%w: token %d, after %d", ErrSuperseded, last.Token, d.Token)
		case last.Token == d.Token:
			return last, nil // stored before; the ack was lost
		}
		m, err := ToMsg(LeaderSubject(Election), e)
		if err != nil {
			return Proclamation{}, err
		}
		m.Header.Set(jetstream.MsgIDHeader, e.ID())
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(last.Seq, 10))
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ack, err := js.PublishMsg(actx, m)
		cancel()
		var apiErr *jetstream.APIError
		switch {
		case err == nil:
			return Proclamation{Seq: ack.Sequence, Token: d.Token, Event: e}, nil
		case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
			continue // another proclaimed meanwhile: read again
		case ctx.Err() != nil:
			return Proclamation{}, ctx.Err()
		case retryablePublish(err):
			continue
		}
		return Proclamation{}, fmt.Errorf("events: proclaim leader %d: %w", d.Token, err)
	}
}
