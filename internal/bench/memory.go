package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// MemoryConfig says how many containers the orchestrator should track.
type MemoryConfig struct {
	Containers int
	Hosts      int
	Clients    int
	// Orchestrator starts the orchestrator as its own process, given the
	// NATS URL, so that its resident memory is its own.
	Orchestrator func(natsURL, credsFile string) *exec.Cmd
}

// MemoryResult is the orchestrator's resident memory, idle and tracking.
type MemoryResult struct {
	Containers   int     `json:"containers"`
	IdleRSSMB    float64 `json:"idle_rss_mb"`
	RSSMB        float64 `json:"rss_mb"`
	RSSAfterList float64 `json:"rss_after_list_mb"`
	CreatePerS   float64 `json:"creates_per_s"`
	Errors       int     `json:"errors"`
}

// Memory creates containers on fake hosts until the orchestrator tracks
// cfg.Containers of them, then reads its resident set size.
func Memory(ctx context.Context, cfg MemoryConfig) (*MemoryResult, error) {
	dir, err := os.MkdirTemp("", "openagent-bench-mem-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sys, err := system.Start(ctx, system.Config{DataDir: dir})
	if err != nil {
		return nil, err
	}
	defer sys.Stop()
	if err := addFakeHosts(ctx, sys, "mem", cfg.Hosts); err != nil {
		return nil, err
	}
	cmd := cfg.Orchestrator(sys.NATSURL, filepath.Join(sys.Credentials, "orchestrator.creds"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }()
	nc, err := nats.Connect(sys.NATSURL, nats.UserCredentials(filepath.Join(sys.Credentials, "admin.creds")))
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	if err := waitHosts(ctx, nc, cfg.Hosts); err != nil {
		return nil, err
	}
	res := &MemoryResult{Containers: cfg.Containers}
	res.IdleRSSMB = rssMB(cmd.Process.Pid)
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	begin := time.Now()
	for range cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := next.Add(1); n <= int64(cfg.Containers) && ctx.Err() == nil; n = next.Add(1) {
				if err := createOne(ctx, nc, fmt.Sprintf("m%d", n)); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res.CreatePerS = float64(cfg.Containers) / time.Since(begin).Seconds()
	res.Errors = int(failures.Load())
	// Wait until the projection holds them all.
	deadline := time.Now().Add(5 * time.Minute)
	for {
		m, err := nc.Request(events.SubjectContainer, []byte(fmt.Sprintf(`{"id":"m%d"}`, cfg.Containers)), 5*time.Second)
		if err == nil && strings.Contains(string(m.Data), `"status":"running"`) {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("bench: the last container never ran")
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	res.RSSMB = rssMB(cmd.Process.Pid)
	// Listing every container is the heaviest query (answered over HTTP
	// for this many; over NATS it is refused as too large).
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, _ = nc.RequestWithContext(lctx, events.SubjectList, []byte(`{"all":true}`))
	cancel()
	res.RSSAfterList = rssMB(cmd.Process.Pid)
	return res, nil
}

func createOne(ctx context.Context, nc *nats.Conn, id string) error {
	e, err := events.New(events.ContainerCreateRequested, "/openagent/bench", api.CreateRequest{ContainerID: id, Driver: "fake", Start: true, Spec: spec})
	if err != nil {
		return err
	}
	m, err := events.ToMsg(events.SubjectRequest, e)
	if err != nil {
		return err
	}
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		return err
	}
	if reply.Header.Get("ce-type") != events.RequestAccepted {
		return fmt.Errorf("bench: %s", reply.Data)
	}
	return nil
}

// rssMB reads a process's resident set size.
func rssMB(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}
