package system_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// A secret reaches the runtime and nothing else writes it down: not the
// events stream, not the containers bucket, not the API's view.
func TestSecretsReachOnlyTheRuntime(t *testing.T) {
	drv := fake.New()
	e := newEnvWith(t, system.Config{}, "secret-host", drv)
	const value = "s3cr3t-value-do-not-log"
	req := fakeSpec("--forever")
	req.Start, req.ContainerID = true, "with-secret"
	req.Spec.Secrets = map[string]string{"API_KEY": value}
	ct, err := e.c.Create(e.ctx, req)
	if err != nil || ct.Status != api.StatusRunning {
		t.Fatalf("create: %+v, %v", ct, err)
	}
	got, err := drv.Get(e.ctx, ct.ID)
	if err != nil || got.Config.Env["API_KEY"] != value {
		t.Fatalf("the runtime got env %v (%v); want the secret", got.Config.Env, err)
	}

	// The API's view.
	hreq, _ := http.NewRequest(http.MethodGet, e.sys.HTTPURL+"/v1/containers/"+ct.ID, nil)
	hreq.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), value) {
		t.Fatalf("the API shows the secret: %s", body)
	}
	// Every event of the audit log.
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{}) {
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ev)
		if strings.Contains(string(b), value) {
			t.Fatalf("event %s holds the secret", ev.Type())
		}
		if ev.Type() == events.ContainerPlaced {
			var d events.PlacedData
			if events.Data(ev, &d) == nil && d.Spec.Secrets["API_KEY"] != driver.RedactedSecret {
				t.Fatalf("placed keeps secrets %v; want the name with %q", d.Spec.Secrets, driver.RedactedSecret)
			}
		}
	}
	// The containers bucket, once written behind.
	time.Sleep(500 * time.Millisecond)
	kv, err := e.sys.JS.KeyValue(e.ctx, events.BucketContainers)
	if err != nil {
		t.Fatal(err)
	}
	entry, err := kv.Get(context.Background(), ct.ID)
	if err != nil {
		t.Fatalf("the record: %v", err)
	}
	if strings.Contains(string(entry.Value()), value) {
		t.Fatal("the containers bucket holds the secret")
	}
	// A secret named in env too is refused, naming the field.
	both := fakeSpec("--forever")
	both.Spec.Env, both.Spec.Secrets = map[string]string{"X": "1"}, map[string]string{"X": "2"}
	if _, err := e.c.Create(e.ctx, both); err == nil || !strings.Contains(err.Error(), "secrets.X") {
		t.Fatalf("a variable in env and secrets: %v; want refused naming secrets.X", err)
	}
}
