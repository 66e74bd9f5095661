// Command chaos is the fault suite of the multi-host deployment
// (deploy/compose.yaml), in the manner of Jepsen: under a load of create
// requests it injects one fault per case (kill -9 a worker mid-create, cut
// a worker off the bus past its grace, stop a NATS server, kill the
// leader, SIGSTOP the leader past its lease), heals it, and checks the
// history (what was attempted and acknowledged) against the events stream
// and what the hosts' runtimes really run: nothing acknowledged lost, one
// running container per request, rescheduling exactly once where a host
// was lost and never elsewhere, all within a stated bound of the heal.
//
//	go run ./internal/chaos ready   # wait for the deployment to serve
//	go run ./internal/chaos run [-case NAME]
//
// It ends with "N passed, N failed" and exits 1 on any failure.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/openagent/orchestrator/pkg/events"
)

func main() {
	state := flag.String("state", "deploy/.state", "the deployment's state: its credentials and the workers' driver scopes")
	only := flag.String("case", "", "run only this case")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: chaos [-state DIR] ready | run [-case NAME]\ncases:")
		for _, c := range cases {
			fmt.Fprintf(os.Stderr, " %s", c.name)
		}
		fmt.Fprintln(os.Stderr)
	}
	args := os.Args[1:]
	if len(args) == 0 {
		flag.Usage()
		os.Exit(2)
	}
	verb := args[0]
	_ = flag.CommandLine.Parse(args[1:])
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c, err := dial(ctx, *state)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	defer c.close()
	switch verb {
	case "ready":
		if err := c.ready(ctx, 3*time.Minute); err != nil {
			fmt.Fprintln(os.Stderr, "chaos: the deployment is", err)
			os.Exit(1)
		}
		fmt.Println("the deployment is ready: both orchestrators answer, one leads, both workers are live")
	case "run":
		if !runAll(ctx, c, *only) {
			os.Exit(1)
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

func runAll(ctx context.Context, c *cluster, only string) bool {
	l := newLedger()
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go follow(fctx, c.js, l, func(s string) { fmt.Println("chaos: warning:", s) })
	passed, failed := 0, 0
	for _, tc := range cases {
		if only != "" && tc.name != only {
			continue
		}
		if runCase(ctx, c, l, tc) {
			passed++
		} else {
			failed++
		}
	}
	if passed+failed == 0 {
		fmt.Printf("no case is named %q\n", only)
	}
	fmt.Printf("%d passed, %d failed\n", passed, failed)
	return failed == 0 && passed > 0
}

// runCase runs one case: ready, fault, heal, and the check polled until it
// passes or its bound from the heal runs out; then its containers are
// removed.
func runCase(ctx context.Context, c *cluster, l *ledger, tc testCase) bool {
	start := time.Now()
	fmt.Printf("=== %s\n", tc.name)
	if err := c.ready(ctx, 2*time.Minute); err != nil {
		fmt.Printf("FAIL %s: the deployment is %v\n", tc.name, err)
		return false
	}
	r := &caseRun{c: c, l: l, h: newHistory(), name: tc.name}
	defer r.cleanup(ctx)
	want, err := tc.run(ctx, r)
	if err != nil {
		fmt.Printf("FAIL %s: %v\n", tc.name, err)
		return false
	}
	if r.healed.IsZero() {
		r.healed = time.Now()
	}
	var t tally
	var problems []string
	for {
		rt, err := c.runtimes(ctx)
		if err == nil {
			t, problems = check(r.h.snapshot(), l, rt, want)
		} else {
			problems = []string{err.Error()}
		}
		if len(problems) == 0 || time.Since(r.healed) > tc.bound || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	converged := time.Since(r.healed)
	if len(problems) > 0 {
		fmt.Printf("FAIL %s: not converged within %v of the heal; %v\n", tc.name, tc.bound, t)
		for _, p := range first(problems, 12) {
			fmt.Printf("    %s\n", p)
		}
		return false
	}
	r.timing("converged", converged)
	fmt.Printf("PASS %s in %.0fs: %v\n    %v (bound %v)\n", tc.name, time.Since(start).Seconds(), t, r.timings, tc.bound)
	return true
}

// cleanup undoes what the case changed and removes its containers, so
// that the next case starts with none, and waits for the runtimes to let
// them go.
func (r *caseRun) cleanup(ctx context.Context) {
	for _, undo := range r.undo {
		if err := undo(); err != nil {
			fmt.Printf("chaos: warning: cleaning up: %v\n", err)
		}
	}
	ids := r.containers()
	if err := r.c.remove(ctx, ids); err != nil {
		fmt.Printf("chaos: warning: cleaning up: %v\n", err)
	}
	mine := map[string]bool{}
	for _, id := range ids {
		mine[id] = true
	}
	err := await(ctx, time.Minute, "the case's containers removed", func() bool {
		rt, err := r.c.runtimes(ctx)
		if err != nil {
			return false
		}
		for _, c := range rt {
			if mine[c.id] {
				return false
			}
		}
		return true
	})
	if err != nil {
		fmt.Printf("chaos: warning: %v\n", err)
	}
}

func extContainer(e events.Event) string { return events.Ext(e, events.ExtContainerID) }
