package worker

import (
	"context"
	"slices"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// reconcile adopts the containers the drivers still have, without
// restarting any, and publishes what changed while no worker watched:
// runs that started or ended unreported. What the events stream already
// says last about a container is not published again. Containers a driver
// finds traces of but cannot adopt are stopped and reported lost. Last, the
// host's inventory is published, so that the orchestrator learns what it
// knows on this host that is no longer there.
func (w *Worker) reconcile(ctx context.Context) error {
	found := []string{}
	for _, drv := range w.cfg.Drivers {
		if lf, ok := drv.(driver.LostFinder); ok {
			lost, err := lf.Lost(ctx)
			if err != nil {
				return err
			}
			for _, l := range lost {
				w.log.Warn("worker: a container could not be adopted", "container_id", l.ID, "reason", l.Reason)
				if err := w.emit(ctx, events.ContainerLost, l.ID, derive(l.ID, "lost", w.started.UnixNano()),
					events.LostData{ContainerID: l.ID, HostID: w.cfg.HostID, Reason: l.Reason}, nil); err != nil {
					return err
				}
			}
		}
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
			found = append(found, ct.ID)
			w.mu.Lock()
			w.owner[ct.ID] = drv
			w.mu.Unlock()
			last, err := w.lastEvent(ctx, ct.ID)
			if err != nil {
				return err
			}
			w.mu.Lock()
			w.remember(ct.ID, max(w.fence[ct.ID], last.generation))
			w.mu.Unlock()
			switch ct.Status {
			case driver.StatusRunning, driver.StatusPaused:
				if id := derive(ct.ID, "started", ct.StartedAt.UnixNano()); last.id != id {
					if err := w.emit(ctx, events.ContainerStarted, ct.ID, id, events.StartedData{ContainerID: ct.ID, HostID: w.cfg.HostID, StartedAt: ct.StartedAt}, nil); err != nil {
						return err
					}
				}
				w.watch(ctx, drv, ct.ID)
			case driver.StatusExited, driver.StatusStopped:
				if last.id != derive(ct.ID, "ended", ct.FinishedAt.UnixNano()) {
					if err := w.ended(ctx, ct, nil); err != nil {
						return err
					}
				}
			}
			w.log.Info("worker: adopted container", "container_id", ct.ID, "status", ct.Status)
		}
	}
	slices.Sort(found)
	e, err := events.New(events.HostReconciled, w.source,
		events.HostReconciledData{HostID: w.cfg.HostID, StartedAt: w.started, Containers: found},
		events.WithHost(w.cfg.HostID), events.WithID(derive(w.cfg.HostID, "reconciled", w.started.UnixNano())))
	if err != nil {
		return err
	}
	_, err = w.pub.Publish(ctx, e)
	return err
}
