package worker

import (
	"context"
	"errors"
	"fmt"
	"strconv"

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
// What a worker carried out it keeps in memory; a worker that does not know
// a container (it restarted, or its state was lost) reads the generation of
// the container's last event on the events stream, the log of everything
// that happened to it.

// admitCommand decides whether a command may be carried out; when it is
// refused, the refusal is published. An error means the decision could
// not be made and the command should be tried again.
func (w *Worker) admitCommand(ctx context.Context, e events.Event, id string) (refused bool, err error) {
	g := events.Generation(e)
	cur, err := w.generation(ctx, id)
	if err != nil {
		return false, err
	}
	w.mu.Lock()
	cur = max(cur, w.fence[id])
	if g == 0 || g >= cur {
		w.fence[id] = max(g, cur)
		w.mu.Unlock()
		return false, nil
	}
	w.mu.Unlock()
	data := events.CommandRefusedData{ContainerID: id, HostID: w.cfg.HostID, CommandID: e.ID(), CommandType: e.Type(), Generation: g, Current: cur,
		Reason: fmt.Sprintf("the command's generation %d is older than %d, which this container's host carried out", g, cur)}
	return true, w.emit(ctx, events.ContainerCommandRefused, id, derive(e.ID(), "refused"), data, &e)
}

// generation returns the newest generation carried out for a container:
// what this worker knows, else what the container's last event says.
func (w *Worker) generation(ctx context.Context, id string) (uint64, error) {
	w.mu.Lock()
	g, ok := w.fence[id]
	w.mu.Unlock()
	if ok {
		return g, nil
	}
	last, err := w.lastEvent(ctx, id)
	return last.generation, err
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

// forget drops what the worker keeps of a removed container; its removed
// event holds the generation from then on.
func (w *Worker) forget(id string) {
	w.mu.Lock()
	delete(w.fence, id)
	w.mu.Unlock()
}
