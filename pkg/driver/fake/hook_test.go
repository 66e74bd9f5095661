package fake_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
)

// The hook scripts a runtime's misbehaviour: slowness and failures.
func TestHookDelaysAndFails(t *testing.T) {
	ctx := context.Background()
	full := driver.Errorf("start", "", driver.ErrResourceLimit, "host is full")
	d := fake.New(fake.WithHook(func(ctx context.Context, op, id string) error {
		switch op {
		case "create":
			time.Sleep(50 * time.Millisecond)
		case "start":
			if id == "unlucky" {
				return full
			}
		}
		return nil
	}))
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image = "s", "fake"
	begin := time.Now()
	if _, err := d.Create(ctx, "unlucky", cfg); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(begin); took < 50*time.Millisecond {
		t.Fatalf("create took %v; the hook delays it 50ms", took)
	}
	if err := d.Start(ctx, "unlucky"); !errors.Is(err, driver.ErrResourceLimit) {
		t.Fatalf("start: %v; want the scripted resource limit error", err)
	}
	if c, _ := d.Get(ctx, "unlucky"); c.Status != driver.StatusCreated {
		t.Fatalf("a failed start left it %v; want created", c.Status)
	}
}

func TestUnknownProgramArgumentIsInvalid(t *testing.T) {
	cfg := driver.DefaultConfig()
	cfg.SessionID, cfg.Image, cfg.Command = "s", "fake", []string{"fake", "--explode"}
	_, err := fake.New().Create(context.Background(), "c", cfg)
	if !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("got %v; want ErrInvalid", err)
	}
}
