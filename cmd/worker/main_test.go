package main_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
)

// A worker started on a NATS the orchestrator never provisioned exits
// non-zero, naming what is missing and what to do.
func TestWorkerNeedsAProvisionedBus(t *testing.T) {
	srv := natstest.Start(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "worker")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--nats-url", srv.ClientURL(), "--drivers", "fake", "--host-id", "lonely", "--data-dir", filepath.Join(dir, "data"))
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("the worker kept running on an unprovisioned bus")
	}
	if err == nil || !strings.Contains(string(out), "openagent-hosts") || !strings.Contains(string(out), "start one") {
		t.Fatalf("exit %v, said %q; want a failure naming the missing bucket and what to do", err, out)
	}
}
