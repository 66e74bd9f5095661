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

// creds init writes what a cluster hands out, each credential connecting
// with its role's permissions, and keeps the keys and the credentials
// when it runs again (every start of a deployment runs it).
func TestCredsInit(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	r := run(t, "", "creds", "init", "--data-dir", data, "--out", out, "--worker", "w-1", "--worker", "w-2")
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	conf, worker := read("nats/nats-auth.conf"), read("workers/w-1/worker.creds")
	if !strings.Contains(conf, "resolver_preload") || !strings.Contains(worker, "BEGIN NATS USER JWT") {
		t.Fatalf("init wrote %q and %q", conf, worker)
	}
	for _, name := range []string{"orchestrator.creds", "admin.creds", "service.creds", "auditor.creds", "workers/w-2/worker.creds"} {
		if fi, err := os.Stat(filepath.Join(out, name)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", name, fi, err)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "credentials", "admin.token")); err != nil {
		t.Fatalf("no admin token for the HTTP API: %v", err)
	}
	auditKey := func() string {
		b, err := os.ReadFile(filepath.Join(data, "credentials", "audit.key.pub"))
		if err != nil || !strings.HasPrefix(string(b), "ed25519:") {
			t.Fatalf("no audit key: %q %v", b, err)
		}
		return string(b)
	}
	key := auditKey()
	if r := run(t, "", "creds", "init", "--data-dir", data, "--out", out, "--worker", "w-1", "--worker", "w-2"); r.code != 0 {
		t.Fatalf("init again: exit %d: %s", r.code, r.stderr)
	}
	if read("nats/nats-auth.conf") != conf || read("workers/w-1/worker.creds") != worker || auditKey() != key {
		t.Fatal("init again changed the keys or a current credential")
	}
	// A server trusting the configuration takes the worker's credential.
	sys, err := system.Start(context.Background(), system.Config{DataDir: data, Orchestrator: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	nc, err := nats.Connect(sys.NATSURL, nats.UserCredentials(filepath.Join(out, "workers/w-1/worker.creds")))
	if err != nil {
		t.Fatalf("the worker's credential does not connect: %v", err)
	}
	nc.Close()

	for _, bad := range [][]string{{"--worker", "a.b"}, {"--worker", ""}} {
		args := append([]string{"creds", "init", "--data-dir", data, "--out", t.TempDir()}, bad...)
		if r := run(t, "", args...); r.code == 0 || !strings.Contains(r.stderr, "--worker") {
			t.Fatalf("%v: exit %d: %s", bad, r.code, r.stderr)
		}
	}
	if r := run(t, "", "creds", "init", "--data-dir", data); r.code == 0 || !strings.Contains(r.stderr, "--out") {
		t.Fatalf("no --out: exit %d: %s", r.code, r.stderr)
	}
}
