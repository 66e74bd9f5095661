package worker

import (
	"context"
	"fmt"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

func (w *Worker) reapLoop(ctx context.Context) error {
	every := min(w.cfg.ReapAfter/2, 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := w.reap(ctx); err != nil && ctx.Err() == nil {
				w.log.Warn("worker: reap", "err", err)
			}
		}
	}
}

// reap removes the containers made by a worker (they carry the container
// id label) that the orchestrator has not known for ReapAfter: the events
// stream has nothing of them, or says last that they were removed or lost.
func (w *Worker) reap(ctx context.Context) error {
	for _, drv := range w.cfg.Drivers {
		list, err := drv.List(ctx, driver.Filter{})
		if err != nil {
			return err
		}
		for _, ct := range list {
			if ct.Labels[LabelContainerID] != ct.ID || time.Since(ct.CreatedAt) < w.cfg.ReapAfter {
				continue
			}
			last, err := w.lastEvent(ctx, ct.ID)
			if err != nil {
				return err
			}
			if last.id != "" && last.typ != events.ContainerRemoved && last.typ != events.ContainerLost {
				continue
			}
			reason := fmt.Sprintf("reaped: unknown to the orchestrator %s after it was made", w.cfg.ReapAfter)
			log := w.log.With("container_id", ct.ID, "driver", drv.Name())
			if w.cfg.ReapDryRun {
				log.Info("worker: would reap (dry run)", "reason", reason)
				continue
			}
			if err := drv.Remove(ctx, ct.ID, driver.RemoveOptions{Force: true}); err != nil {
				log.Warn("worker: reap", "err", err)
				continue
			}
			log.Info("worker: reaped", "reason", reason)
			if err := w.emit(ctx, events.ContainerRemoved, ct.ID, derive(ct.ID, "reaped", ct.CreatedAt.UnixNano()),
				events.RemovedData{ContainerID: ct.ID, HostID: w.cfg.HostID, Reason: reason}, nil); err != nil {
				return err
			}
		}
	}
	return nil
}
