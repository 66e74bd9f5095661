package docker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"iter"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/openagent/orchestrator/pkg/driver"
)

// Logs implements driver.Driver. The engine's stream is demultiplexed in
// order, with each line's time.
func (d *Driver) Logs(ctx context.Context, id string, opts driver.LogOptions) (iter.Seq2[driver.LogEntry, error], error) {
	if _, err := d.inspect(ctx, "logs", id); err != nil {
		return nil, err
	}
	lo := container.LogsOptions{ShowStdout: true, ShowStderr: true, Timestamps: true, Follow: opts.Follow}
	if opts.Tail > 0 {
		lo.Tail = fmt.Sprint(opts.Tail)
	}
	if !opts.Since.IsZero() {
		lo.Since = fmt.Sprintf("%d.%09d", opts.Since.Unix(), opts.Since.Nanosecond())
	}
	return func(yield func(driver.LogEntry, error) bool) {
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		rc, err := d.cli.ContainerLogs(rctx, name(id), lo)
		if err != nil {
			yield(driver.LogEntry{}, kind("logs", id, err))
			return
		}
		defer rc.Close()
		entries := make(chan driver.LogEntry, 64)
		var copyErr error
		go func() {
			defer close(entries)
			var mu sync.Mutex
			emit := func(s driver.Stream) io.Writer {
				return &lineWriter{emit: func(line string) {
					e := driver.LogEntry{Stream: s, Line: line}
					if ts, rest, ok := strings.Cut(line, " "); ok {
						if t, err := time.Parse(time.RFC3339Nano, ts); err == nil {
							e.Time, e.Line = t, rest
						}
					}
					if !opts.Timestamps {
						e.Time = time.Time{}
					}
					mu.Lock()
					defer mu.Unlock()
					select {
					case entries <- e:
					case <-rctx.Done():
					}
				}}
			}
			_, copyErr = stdcopy.StdCopy(emit(driver.Stdout), emit(driver.Stderr), rc)
		}()
		for e := range entries {
			if !yield(e, nil) {
				return
			}
		}
		if ctx.Err() != nil && opts.Follow {
			yield(driver.LogEntry{}, ctx.Err())
		} else if copyErr != nil && ctx.Err() == nil {
			yield(driver.LogEntry{}, copyErr)
		}
	}, nil
}

// lineWriter calls emit with every complete line written to it. The engine
// frames each line of a container's output whole.
type lineWriter struct {
	emit func(string)
	buf  []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.emit(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}
