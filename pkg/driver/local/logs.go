package local

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"iter"
	"os"
	"path/filepath"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Logs implements driver.Driver. Output is read from the container's log
// file, which the shim writes, so it survives worker restarts.
func (d *Driver) Logs(ctx context.Context, id string, opts driver.LogOptions) (iter.Seq2[driver.LogEntry, error], error) {
	s, err := d.load("logs", id)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.dir, logFile)
	return func(yield func(driver.LogEntry, error) bool) {
		f, err := os.Open(path)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			yield(driver.LogEntry{}, err)
			return
		}
		if f != nil {
			defer f.Close()
		}
		var r *bufio.Reader
		if f != nil {
			r = bufio.NewReader(f)
		}
		var partial []byte
		// next reads the complete lines written so far.
		next := func() []driver.LogEntry {
			if r == nil {
				if f, err = os.Open(path); err != nil {
					return nil
				}
				r = bufio.NewReader(f)
			}
			var out []driver.LogEntry
			for {
				chunk, err := r.ReadBytes('\n')
				partial = append(partial, chunk...)
				if err != nil {
					return out // io.EOF: the rest is not written yet
				}
				var e driver.LogEntry
				if json.Unmarshal(partial, &e) == nil && !e.Time.Before(opts.Since) {
					out = append(out, e)
				}
				partial = partial[:0]
			}
		}
		emit := func(entries []driver.LogEntry) bool {
			for _, e := range entries {
				if !opts.Timestamps {
					e.Time = time.Time{}
				}
				if !yield(e, nil) {
					return false
				}
			}
			return true
		}
		backlog := next()
		if opts.Tail > 0 && len(backlog) > opts.Tail {
			backlog = backlog[len(backlog)-opts.Tail:]
		}
		if !emit(backlog) || !opts.Follow {
			return
		}
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			// Check the state before reading, so that lines written just
			// before the end are read after it is seen.
			snap, err := loadSnapshot(s.dir)
			running := err == nil && snap.container().Status == driver.StatusRunning || err == nil && snap.container().Status == driver.StatusPaused
			if !emit(next()) {
				return
			}
			if !running {
				return
			}
			select {
			case <-ctx.Done():
				yield(driver.LogEntry{}, ctx.Err())
				return
			case <-t.C:
			}
		}
	}, nil
}
