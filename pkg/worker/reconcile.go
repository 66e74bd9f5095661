package worker

import (
	"context"
	"encoding/json"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// reconcile adopts the containers the drivers still have, without
// restarting any, and publishes what changed while no worker watched:
// containers that exited, and running ones the orchestrator does not know
// as running. What the orchestrator already knows is not published again.
func (w *Worker) reconcile(ctx context.Context) error {
	for _, drv := range w.cfg.Drivers {
		var list []*driver.Container
		var err error
		if r, ok := drv.(driver.Reattacher); ok {
			list, err = r.Reattach(ctx)
		} else {
			list, err = drv.List(ctx, driver.Filter{})
		}
		if err != nil {
			return err
		}
		for _, ct := range list {
			if ct.Labels[LabelContainerID] != ct.ID {
				continue // not made by a worker
			}
			w.mu.Lock()
			w.owner[ct.ID] = drv
			w.mu.Unlock()
			known := w.known(ctx, ct.ID)
			switch ct.Status {
			case driver.StatusRunning, driver.StatusPaused:
				if known.Status != api.StatusRunning || !known.StartedAt.Equal(ct.StartedAt) {
					if err := w.emit(ctx, events.ContainerStarted, ct.ID, derive(ct.ID, "started", ct.StartedAt.UnixNano()),
						map[string]any{"startedAt": ct.StartedAt}, nil); err != nil {
						return err
					}
				}
				w.watch(drv, ct.ID)
			case driver.StatusExited, driver.StatusStopped:
				if known.Status.Active() {
					if err := w.ended(ctx, ct, nil); err != nil {
						return err
					}
				}
			}
			w.log.Info("worker: adopted container", "container_id", ct.ID, "status", ct.Status)
		}
	}
	return nil
}

// known returns what the orchestrator's projection says of a container.
func (w *Worker) known(ctx context.Context, id string) api.Container {
	var c api.Container
	if entry, err := w.records.Get(ctx, id); err == nil {
		_ = json.Unmarshal(entry.Value(), &c)
	}
	return c
}
