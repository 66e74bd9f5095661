package main_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/system"
)

// creds issues a worker's credential for another host that connects,
// refuses an unknown role naming it, writes a server configuration, and
// revokes a credential so that the running embedded server drops it.
func TestCreds(t *testing.T) {
	data := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sys, err := system.Start(ctx, system.Config{DataDir: data, Orchestrator: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })

	r := run(t, "", "creds", "issue", "--data-dir", data, "--role", "worker", "--host", "host-two")
	if r.code != 0 || !strings.Contains(r.stdout, "BEGIN NATS USER JWT") || !strings.Contains(r.stdout, "BEGIN USER NKEY SEED") {
		t.Fatalf("issue: exit %d: %q %s", r.code, r.stdout, r.stderr)
	}
	path := filepath.Join(t.TempDir(), "host-two.creds")
	if err := os.WriteFile(path, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(sys.NATSURL, nats.UserCredentials(path))
	if err != nil {
		t.Fatalf("the issued credential does not connect: %v", err)
	}
	defer nc.Close()

	if r := run(t, "", "creds", "issue", "--data-dir", data, "--role", "root"); r.code == 0 || !strings.Contains(r.stderr, `"root"`) {
		t.Fatalf("an unknown role: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, "", "creds", "issue", "--data-dir", data, "--role", "worker"); r.code == 0 || !strings.Contains(r.stderr, "worker") {
		t.Fatalf("a worker without a host: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, "", "creds", "issue", "--data-dir", t.TempDir(), "--role", "service"); r.code == 0 || !strings.Contains(r.stderr, "no keys") {
		t.Fatalf("a data directory without keys: exit %d: %s", r.code, r.stderr)
	}
	if r := run(t, "", "creds", "server-config", "--data-dir", data); r.code != 0 || !strings.Contains(r.stdout, "operator:") || !strings.Contains(r.stdout, "resolver_preload") {
		t.Fatalf("server-config: exit %d: %q", r.code, r.stdout)
	}

	if r := run(t, "", "creds", "revoke", "--data-dir", data, "--file", path); r.code != 0 {
		t.Fatalf("revoke: exit %d: %s", r.code, r.stderr)
	}
	deadline := time.Now().Add(10 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Fatal("a revoked credential stays connected")
	}
	if again, err := nats.Connect(sys.NATSURL, nats.UserCredentials(path)); err == nil {
		again.Close()
		t.Fatal("a revoked credential connects")
	}
}
