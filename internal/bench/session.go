package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/system"
)

// SessionConfig says what to measure.
type SessionConfig struct {
	Embedded bool   // start a system in this process with a worker of Driver
	Server   string // a running system's HTTP API
	Token    string // a token for it
	Driver   string
	Warm     int // the warm pool's size
	Runs     int
}

// SessionResult holds the latencies of one run, in milliseconds.
type SessionResult struct {
	Driver      string  `json:"driver"`
	Image       string  `json:"image"`
	Runs        int     `json:"runs"`
	ColdReady   float64 `json:"cold_ready_p50_ms"`
	ColdReady99 float64 `json:"cold_ready_p99_ms"`
	WarmReady   float64 `json:"warm_ready_p50_ms"`
	WarmReady99 float64 `json:"warm_ready_p99_ms"`
	Exec        float64 `json:"exec_p50_ms"`
	Exec99      float64 `json:"exec_p99_ms"`
}

// Session measures create → ready, cold and from a warm pool, and running
// print(1) in Python, in one run.
func Session(ctx context.Context, cfg SessionConfig) (*SessionResult, error) {
	if cfg.Runs <= 0 || cfg.Warm <= 0 {
		return nil, errors.New("bench: runs and warm must be positive")
	}
	server, token := cfg.Server, cfg.Token
	if cfg.Embedded {
		dir, err := os.MkdirTemp("", "openagent-bench-session-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		if err := os.Chmod(dir, 0o711); err != nil {
			return nil, err
		}
		sys, err := system.Start(ctx, system.Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", Orchestrator: true, Worker: true,
			HostID: "bench", Drivers: []string{cfg.Driver}})
		if err != nil {
			return nil, err
		}
		defer sys.Stop()
		server, token = sys.HTTPURL, sys.AdminToken()
	}
	c := client.New(server, client.WithToken(token))
	for deadline := time.Now().Add(30 * time.Second); ; {
		if hosts, err := c.Hosts(ctx); err == nil && len(hosts) > 0 && hosts[0].Live {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: no live host at %s", server)
		}
		time.Sleep(50 * time.Millisecond)
	}
	req := api.SessionRequest{Driver: cfg.Driver, Languages: []string{"python"}}
	res := &SessionResult{Driver: cfg.Driver, Runs: cfg.Runs}
	var cold, warm, exec []time.Duration
	for range cfg.Runs {
		begin := time.Now()
		s, err := c.CreateSession(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("bench: cold session: %w", err)
		}
		cold = append(cold, time.Since(begin))
		res.Image = s.Image
		if _, err := c.CloseSession(ctx, s.ID); err != nil {
			return nil, err
		}
	}
	if _, err := c.SetPool(ctx, api.Pool{Driver: cfg.Driver, Image: res.Image, Size: cfg.Warm}); err != nil {
		return nil, err
	}
	// Empty the pool at the end and wait until it is: its sandboxes would
	// outlive the benchmark (containers outlive their workers by design).
	defer func() {
		ctx := context.WithoutCancel(ctx)
		if _, err := c.SetPool(ctx, api.Pool{Driver: cfg.Driver, Image: res.Image, Size: 0}); err != nil {
			return
		}
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			pools, err := c.Pools(ctx)
			if err != nil || len(pools) == 0 || pools[0].Warm != 0 || pools[0].Creating != 0 {
				continue
			}
			// The pool lets go of its sandboxes before they are removed.
			running, err := c.List(ctx, client.ListOptions{})
			if err == nil && !slices.ContainsFunc(running, func(c api.Container) bool { return c.Labels["io.openagent.pool"] != "" }) {
				return
			}
		}
	}()
	waitWarm := func() error {
		for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			pools, err := c.Pools(ctx)
			if err == nil && len(pools) > 0 && pools[0].Warm >= cfg.Warm {
				return nil
			}
		}
		return errors.New("bench: the pool did not fill")
	}
	for range cfg.Runs {
		if err := waitWarm(); err != nil {
			return nil, err
		}
		begin := time.Now()
		s, err := c.CreateSession(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("bench: warm session: %w", err)
		}
		warm = append(warm, time.Since(begin))
		if _, err := c.CloseSession(ctx, s.ID); err != nil {
			return nil, err
		}
	}
	s, err := c.CreateSession(ctx, req)
	if err != nil {
		return nil, err
	}
	defer c.CloseSession(context.WithoutCancel(ctx), s.ID)
	for range cfg.Runs {
		begin := time.Now()
		out, err := c.RunCode(ctx, s.ID, api.RunCodeRequest{Code: "print(1)"})
		if err != nil {
			return nil, err
		}
		if out.Stdout != "1\n" {
			return nil, fmt.Errorf("bench: print(1) printed %q (stderr %q)", out.Stdout, out.Stderr)
		}
		exec = append(exec, time.Since(begin))
	}
	pc, pw, pe := percentiles(cold), percentiles(warm), percentiles(exec)
	res.ColdReady, res.ColdReady99, res.WarmReady, res.WarmReady99, res.Exec, res.Exec99 = pc.P50, pc.P99, pw.P50, pw.P99, pe.P50, pe.P99
	return res, nil
}
