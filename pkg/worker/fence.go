package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/events"
)

// Fencing. Every command carries the generation of the container's desired
// state it carries out (events.ExtGeneration), and every state event the
// generation of what caused it. A worker refuses a command older than the
// newest generation it carried out for the container, with a
// command.refused event: a replayed start does not revive a stopped
// container, nor a replayed create a removed one.
//
// What a worker carried out it keeps in memory, removed containers
// included. A command for a container it does not know is either about a
// new container or older than the worker's memory: only then, for a
// command of a generation at or below the worker's watermark, does it read
// the generation of the container's last event on the events stream, the
// log of everything that happened to it. The watermark starts at the
// worker's start less maxClockSkew (generations come from the
// orchestrator's clock), and rises when old entries are dropped to bound
// the memory.

// errRefused says a command was refused, and the refusal published.
var errRefused = errors.New("worker: command refused by its generation")

// fenceError says the fence could not be read; the command is tried again.
type fenceError struct{ err error }

func (e *fenceError) Error() string { return e.err.Error() }
func (e *fenceError) Unwrap() error { return e.err }

// admitCommand decides whether a command may be carried out; when it is
// refused, the refusal is published. An error means the decision could
// not be made and the command should be tried again.
func (w *Worker) admitCommand(ctx context.Context, e events.Event, c *command) (refused bool, err error) {
	id := c.ContainerID
	if refused, err := w.admitLeader(ctx, e, c); refused || err != nil {
		return refused, err
	}
	g := events.Generation(e)
	cur, err := w.generation(ctx, id, g)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	cur = max(cur, w.fence[id])
	if g == 0 || g >= cur {
		w.remember(id, max(g, cur))
		w.mu.Unlock()
		return false, nil
	}
	w.mu.Unlock()
	data := events.CommandRefusedData{ContainerID: id, HostID: w.cfg.HostID, CommandID: e.ID(), CommandType: e.Type(), Generation: g, Current: cur,
		Reason: fmt.Sprintf("the command's generation %d is older than %d, which this container's host carried out", g, cur)}
	return true, w.emit(ctx, events.ContainerCommandRefused, id, derive(e.ID(), "refused"), data, &e)
}

// admitLeader refuses a command from a former leader: one whose token is
// older than the last leader's proclamation in the events stream, read
// now, and that was stored after it. A command stored before its leader
// was superseded passes, as the decisions it followed from do: the log
// holds them before the successor's proclamation, and the successor acts
// on them. The two streams' store times are compared: one server's clock
// on one machine, the stream leaders' (kept by NTP) in a cluster, where a
// former leader's writes come a lease's time after its last renewal.
func (w *Worker) admitLeader(ctx context.Context, e events.Event, c *command) (refused bool, err error) {
	id := c.ContainerID
	t := events.LeaderToken(e)
	if t == 0 {
		return false, nil
	}
	last, err := events.LastLeader(ctx, w.events, events.Election)
	if err != nil {
		return false, &fenceError{err}
	}
	if t >= last.Token || !c.stored.IsZero() && c.stored.Before(last.Time) {
		return false, nil
	}
	data := events.CommandRefusedData{ContainerID: id, HostID: w.cfg.HostID, CommandID: e.ID(), CommandType: e.Type(), Generation: events.Generation(e),
		Current: w.generationOf(id, nil), Reason: fmt.Sprintf("the command comes from a former leader (token %d); the control plane's leader is %d", t, last.Token)}
	w.log.Warn("worker: refused a command from a former leader", "container_id", id, "command_id", e.ID(), "token", t, "leader", last.Token)
	return true, w.emit(ctx, events.ContainerCommandRefused, id, derive(e.ID(), "refused"), data, &e)
}

// generation returns the newest generation carried out for a container:
// what this worker knows, else what the container's last event says.
func (w *Worker) generation(ctx context.Context, id string, g uint64) (uint64, error) {
	w.mu.Lock()
	cur := w.fence[id]
	w.mu.Unlock()
	if w.remembers(id, g) {
		return cur, nil
	}
	last, err := w.lastEvent(ctx, id)
	return last.generation, err
}

// remembers reports whether the worker's memory decides a command of
// generation g for a container: it knows the container, or the command is
// newer than anything it may have forgotten.
func (w *Worker) remembers(id string, g uint64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.fence[id]
	return ok || g > w.watermark
}

// maxClockSkew bounds how far the orchestrator's clock, which makes the
// generations, and a worker's may differ.
const maxClockSkew = 5 * time.Minute

// maxFences bounds the generations a worker keeps; past it, those of
// containers it no longer has are dropped and the watermark raised over
// them.
const maxFences = 100_000

// remember records a generation carried out; w.mu must be held.
func (w *Worker) remember(id string, g uint64) {
	w.fence[id] = g
	if len(w.fence) <= maxFences {
		return
	}
	for cid, cg := range w.fence {
		if _, owned := w.owner[cid]; !owned {
			w.watermark = max(w.watermark, cg)
			delete(w.fence, cid)
		}
	}
}

// lastEvent is what the events stream holds last about a container.
type lastEvent struct {
	id, typ    string
	generation uint64
}

// lastEvent reads the last event about a container; the zero value when
// there is none.
func (w *Worker) lastEvent(ctx context.Context, id string) (lastEvent, error) {
	msg, err := w.events.GetLastMsgForSubject(ctx, events.ContainerFilter(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return lastEvent{}, nil
	}
	if err != nil {
		return lastEvent{}, fmt.Errorf("worker: read container %s's last event: %w", id, err)
	}
	g, _ := strconv.ParseUint(msg.Header.Get("ce-"+events.ExtGeneration), 10, 64)
	return lastEvent{id: msg.Header.Get("ce-id"), typ: msg.Header.Get("ce-type"), generation: g}, nil
}

// generationOf is the generation a state event about a container carries:
// its cause's, or what the worker carried out last.
func (w *Worker) generationOf(id string, cause *events.Event) uint64 {
	w.mu.Lock()
	g := w.fence[id]
	w.mu.Unlock()
	if cause != nil {
		g = max(g, events.Generation(*cause))
	}
	return g
}
