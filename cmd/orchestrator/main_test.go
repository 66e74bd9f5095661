package main_test

import (
	"bufio"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The embedded default runs as a built binary: it says where it serves,
// answers, and shuts down cleanly on SIGTERM.
func TestEmbeddedDefault(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "orchestrator")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "--data-dir", filepath.Join(dir, "data"), "--http", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--drivers", "fake")
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	var httpURL string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "HTTP" && f[1] == "API" {
			httpURL = f[2]
			break
		}
	}
	if !strings.HasPrefix(httpURL, "http://127.0.0.1:") {
		t.Fatalf("no HTTP address printed (got %q)", httpURL)
	}
	go func() {
		for sc.Scan() {
		}
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodGet, httpURL+"/v1/hosts", nil)
		if b, err := os.ReadFile(filepath.Join(dir, "data", "credentials", "admin.token")); err == nil {
			req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(b)))
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var body strings.Builder
			bufio.NewReader(resp.Body).WriteTo(&body)
			resp.Body.Close()
			if strings.Contains(body.String(), `"fake"`) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the embedded worker never registered")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit 20s after SIGTERM")
	}
}
