package bench

import (
	"context"
	"os"
	"strings"
	"testing"
)

func TestDockerSmall(t *testing.T) {
	res, err := Docker(context.Background(), DockerConfig{Image: "openagent/sandbox:shell", Runs: 2})
	if err != nil && strings.Contains(err.Error(), "docker engine") && os.Getenv("OPENAGENT_REQUIRE_DOCKER") == "" {
		t.Skipf("no docker engine here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Direct.Lifecycle <= 0 || res.Driver.Lifecycle <= 0 || res.System.Lifecycle <= 0 || res.Driver.Exec <= 0 {
		t.Fatalf("result %+v", res)
	}
}
