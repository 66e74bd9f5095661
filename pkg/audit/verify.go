package audit

import (
	"crypto/ed25519"
	"fmt"

	"github.com/openagent/orchestrator/pkg/events"
)

// Verifier folds the chain over events in the order read, each with its
// stream sequence (events.StreamSeq), and holds each checkpoint against
// it. It reports the first place the history breaks:
//   - a sequence that comes again: an event inserted;
//   - a sequence lower than the one before: events reordered;
//   - a sequence past the next: events dropped (the events stream allows
//     no deletes; a gap is someone's doing), or reordered when the missing
//     ones come later in the reading;
//   - a checkpoint whose link is not the chain's there: an event changed
//     (or dropped and renumbered) since the last checkpoint that held;
//   - a checkpoint not signed by the trusted key.
//
// A reading that starts in the middle of the stream (an export from a
// time) is verified from its first checkpoint whose sequence it covers
// the events after; what comes before that is counted as unanchored.
type Verifier struct {
	// Trusted is the key checkpoints must be signed by; nil takes the key
	// of each checkpoint (Report names it) and proves only that the
	// history is what that key signed.
	Trusted ed25519.PublicKey

	last     uint64 // the sequence read last
	anchored bool
	link     Link
	links    map[uint64]Link // the chain at each sequence since the last checkpoint that held
	pending  []pendingEvent  // read before the chain was anchored
	gap      *gap            // sequences missing where the reading skipped
	report   Report
}

// gap is a run of sequences a reading skipped: dropped, unless they come
// later.
type gap struct {
	from, to, after uint64
	next            string
}

type pendingEvent struct {
	seq       uint64
	canonical []byte
}

// Report is what a verification found.
type Report struct {
	First, Last uint64 // the sequences read
	Events      int
	Checkpoints int    // checkpoints that held
	Verified    uint64 // the sequence up to which the last checkpoint that held vouches
	Signed      uint64 // the sequence of that checkpoint itself
	Unanchored  int    // events read before the first checkpoint the reading could hold
	Keys        []string
	// Problem is the first break, "" when there is none; Seq is where.
	Problem string
	Seq     uint64
}

// Add reads the next event; it returns false once a problem is found
// (Report says which), after which nothing more is read.
func (v *Verifier) Add(e events.Event) bool {
	if v.report.Problem != "" {
		return false
	}
	seq := events.StreamSeq(e)
	if g := v.gap; g != nil {
		// Past a gap nothing is folded: what is read only tells whether
		// the missing events come later (reordered) or never (dropped).
		if seq >= g.from && seq <= g.to {
			return v.fail(seq, fmt.Sprintf("reordered: sequence %d (%s) comes after %d", seq, e.ID(), g.after))
		}
		return true
	}
	switch {
	case seq == 0:
		return v.fail(v.last+1, fmt.Sprintf("event %s carries no stream sequence (%s)", e.ID(), events.ExtStreamSeq))
	case v.last != 0 && seq == v.last:
		return v.fail(seq, fmt.Sprintf("inserted: a second event at sequence %d (%s)", seq, e.ID()))
	case v.last != 0 && seq < v.last:
		return v.fail(seq, fmt.Sprintf("reordered: sequence %d (%s) comes after %d", seq, e.ID(), v.last))
	case v.last != 0 && seq > v.last+1:
		v.gap = &gap{from: v.last + 1, to: seq - 1, after: seq, next: e.ID()}
		return true
	}
	canonical, err := Canonical(e)
	if err != nil {
		return v.fail(seq, fmt.Sprintf("event %s at %d: %v", e.ID(), seq, err))
	}
	if v.report.First == 0 {
		v.report.First = seq
		if seq == 1 {
			v.anchored, v.link = true, Genesis
			v.links = map[uint64]Link{0: Genesis}
		}
	}
	v.last, v.report.Last = seq, seq
	v.report.Events++
	if v.anchored {
		v.link = Next(v.link, seq, canonical)
		v.links[seq] = v.link
	} else {
		v.pending = append(v.pending, pendingEvent{seq, canonical})
	}
	if e.Type() != events.AuditCheckpoint {
		return true
	}
	var d events.AuditCheckpointData
	if err := events.Data(e, &d); err != nil {
		return v.fail(seq, fmt.Sprintf("checkpoint %s at %d: %v", e.ID(), seq, err))
	}
	if err := Check(d, v.Trusted); err != nil {
		return v.fail(seq, fmt.Sprintf("checkpoint %s at %d: %v", e.ID(), seq, err))
	}
	if !v.anchored && !v.anchor(d) {
		return true
	}
	at, ok := v.links[d.Seq]
	switch {
	case !ok:
		return v.fail(seq, fmt.Sprintf("checkpoint %s at %d vouches for sequence %d, which was not read before it", e.ID(), seq, d.Seq))
	case at.String() != d.Link:
		return v.fail(v.report.Verified+1, fmt.Sprintf("changed: the events after %d up to %d do not hash to the link the checkpoint at %d signed: one of them was changed, or events were dropped and the rest renumbered",
			v.report.Verified, d.Seq, seq))
	}
	v.report.Checkpoints++
	v.report.Verified, v.report.Signed = d.Seq, seq
	if !contains(v.report.Keys, d.Key) {
		v.report.Keys = append(v.report.Keys, d.Key)
	}
	for s := range v.links {
		if s < d.Seq {
			delete(v.links, s)
		}
	}
	return true
}

// anchor starts the chain of a reading begun mid-stream at a checkpoint
// whose following events were all read; false when it cannot yet.
func (v *Verifier) anchor(d events.AuditCheckpointData) bool {
	link, err := ParseLink(d.Link)
	if err != nil || d.Seq+1 < v.report.First {
		return false
	}
	v.anchored, v.link = true, link
	v.links = map[uint64]Link{d.Seq: link}
	for _, p := range v.pending {
		if p.seq <= d.Seq {
			v.report.Unanchored++
			continue
		}
		v.link = Next(v.link, p.seq, p.canonical)
		v.links[p.seq] = v.link
	}
	v.pending = nil
	return true
}

func (v *Verifier) fail(seq uint64, problem string) bool {
	v.report.Problem, v.report.Seq = problem, seq
	return false
}

// Awaiting counts the events read after what the last checkpoint vouches
// for, other than that checkpoint itself.
func (r Report) Awaiting() uint64 {
	if r.Last <= r.Verified {
		return 0
	}
	n := r.Last - r.Verified
	if r.Signed > r.Verified && r.Signed <= r.Last {
		n--
	}
	return n
}

// Report ends the reading and says what was found: a gap still open at
// the end is events dropped.
func (v *Verifier) Report() Report {
	if g := v.gap; g != nil && v.report.Problem == "" {
		v.fail(g.from, fmt.Sprintf("dropped: sequences %d to %d are missing (the next is %s at %d)", g.from, g.to, g.next, g.after))
	}
	r := v.report
	if !v.anchored {
		r.Unanchored = len(v.pending)
	}
	return r
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}
