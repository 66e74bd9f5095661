package main_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/system"
)

// The audit log verifies, live and as an export; each way of tampering
// with a copy of the export is found and named; a checkpoint must be
// signed by the trusted key.
func TestAudit(t *testing.T) {
	ns := natstest.Start(t)
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, system.Config{NATSURL: ns.ClientURL(), DataDir: data, HTTPAddr: "127.0.0.1:0",
		Orchestrator: true, Worker: true, HostID: "audit-host", Drivers: []string{"fake"},
		Capacity: api.Resources{CPU: 2, Memory: 4096, Pids: 1000}, CheckpointEvery: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	srv := sys.HTTPURL
	tokens.Store(srv, sys.AdminToken())
	pub, err := os.ReadFile(filepath.Join(data, "credentials", system.AuditKeyFile+".pub"))
	if err != nil {
		t.Fatal(err)
	}
	key := strings.TrimSpace(string(pub))
	var ids []string
	for range 3 {
		ids = append(ids, strings.TrimSpace(mustRun(t, srv, "run", "fake", "--", "fake", "--forever")))
	}
	// What existed then, rebuilt from the log once one is gone.
	time.Sleep(100 * time.Millisecond)
	then := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(100 * time.Millisecond)
	mustRun(t, srv, "rm", "--force", ids[0])
	past, now := mustRun(t, srv, "audit", "state", "--at", then), mustRun(t, srv, "audit", "state")
	for _, id := range ids {
		if !strings.Contains(past, id[:12]) || !strings.Contains(past, "running") {
			t.Fatalf("audit state --at %s lacks %s running:\n%s", then, id, past)
		}
	}
	if strings.Contains(now, ids[0][:12]) || !strings.Contains(now, ids[1][:12]) {
		t.Fatalf("audit state now shows the removed %s, or not the others:\n%s", ids[0], now)
	}
	if all := mustRun(t, srv, "audit", "state", "--all"); !strings.Contains(all, ids[0][:12]) || !strings.Contains(all, "removed") {
		t.Fatalf("audit state --all lacks the removed one:\n%s", all)
	}
	// The leader signs what the stream holds within its interval.
	deadline := time.Now().Add(20 * time.Second)
	var r result
	for {
		r = run(t, srv, "audit", "verify", "--key", key)
		if r.code == 0 && !strings.Contains(r.stdout, "await") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit verify: exit %d: %s %s", r.code, r.stdout, r.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(r.stdout, "verified: events 1 to ") || !strings.Contains(r.stdout, key) {
		t.Fatalf("audit verify: %q", r.stdout)
	}

	dir := t.TempDir()
	export := filepath.Join(dir, "audit.jsonl")
	mustRun(t, srv, "audit", "export", "-o", export)
	if out := mustRun(t, srv, "audit", "verify", "--key", key, "--file", export); !strings.Contains(out, "verified: events 1 to ") {
		t.Fatalf("verify the export: %q", out)
	}
	b, err := os.ReadFile(export)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) < 12 {
		t.Fatalf("the export has %d lines", len(lines))
	}
	// A line of a container's event, well before the last checkpoint.
	target := -1
	for i, l := range lines[2 : len(lines)-4] {
		if strings.Contains(l, `"hostid":"audit-host"`) {
			target = i + 2
			break
		}
	}
	if target < 0 {
		t.Fatal("no event of the host to change")
	}
	tampered := func(name string, edit func([]string) []string) string {
		t.Helper()
		path := filepath.Join(dir, name+".jsonl")
		copied := edit(append([]string(nil), lines...))
		if err := os.WriteFile(path, []byte(strings.Join(copied, "")), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct {
		name, want string
		edit       func([]string) []string
	}{
		{"changed", "changed:", func(l []string) []string {
			l[target] = strings.Replace(l[target], `"hostid":"audit-host"`, `"hostid":"elsewhere"`, 1)
			return l
		}},
		{"dropped", "dropped:", func(l []string) []string { return append(l[:target], l[target+1:]...) }},
		{"inserted", "inserted:", func(l []string) []string {
			return append(l[:target+1], append([]string{l[target]}, l[target+1:]...)...)
		}},
		{"reordered", "reordered:", func(l []string) []string {
			l[target], l[target+2] = l[target+2], l[target]
			return l
		}},
	} {
		r := run(t, srv, "audit", "verify", "--key", key, "--file", tampered(tc.name, tc.edit))
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("an export with an event %s: exit %d: %s%s", tc.name, r.code, r.stdout, r.stderr)
		}
	}
	other := "ed25519:" + strings.Repeat("ab", 32)
	if r := run(t, srv, "audit", "verify", "--key", other); r.code != 1 || !strings.Contains(r.stderr, "not by the trusted key") {
		t.Errorf("verify with another key: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, srv, "audit", "verify", "--key", "nonsense"); r.code != 1 || !strings.Contains(r.stderr, "--key") {
		t.Errorf("verify with a bad key: exit %d: %s", r.code, r.stderr)
	}
}

// openagent alerts lists the rules (the built-in ones without an alerts
// file), the alerts and the deliveries, as a table or as JSON.
func TestAlertsCommand(t *testing.T) {
	srv := startSystem(t)
	out := mustRun(t, srv, "alerts")
	for _, want := range []string{"RULE", "host-lost", "critical", "host.lost", "container-memory-high", "1m0s", "log,event", "ALERT", "DELIVERY"} {
		if !strings.Contains(out, want) {
			t.Errorf("openagent alerts lacks %q:\n%s", want, out)
		}
	}
	var a api.Alerts
	if err := json.Unmarshal([]byte(mustRun(t, srv, "alerts", "-o", "json")), &a); err != nil || len(a.Rules) != 3 || a.Firing == nil || a.Deliveries == nil {
		t.Fatalf("alerts -o json: %+v, %v", a, err)
	}
}
