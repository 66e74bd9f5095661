package layout

import (
	"encoding/json"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/openagent/orchestrator/"

// layers lists the packages from the top down; a package may import those
// of its own row and those below it. A path names a package and every
// package under it.
var layers = [][]string{
	{"cmd"},
	{"pkg/system"},
	{"pkg/gateway"},
	{"pkg/web"},
	{"pkg/sessions"},
	{"pkg/orchestrator"},
	{"pkg/orchestrator/projection"},
	{"pkg/policy"},
	{"pkg/audit"},
	{"pkg/telemetry"},
	{"pkg/worker"},
	{"pkg/coord"},
	{"pkg/scheduler"},
	{"pkg/creds"},
	{"pkg/client", "pkg/api"},
	{"pkg/events"},
	{"pkg/driver"},
	{"schemas"},
}

// rank is the row of a package: that of the longest path it falls under;
// internal packages are tools, free of the order.
func rank(pkg string) (int, bool) {
	best, row := -1, -1
	for i, paths := range layers {
		for _, p := range paths {
			if (pkg == p || strings.HasPrefix(pkg, p+"/")) && len(p) > best {
				best, row = len(p), i
			}
		}
	}
	return row, row >= 0
}

type listed struct {
	ImportPath string
	Imports    []string
	Deps       []string
}

func list(t *testing.T, args ...string) []listed {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = "../.."
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []listed
	dec := json.NewDecoder(out)
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list: %v", err)
		}
		p.ImportPath = strings.TrimPrefix(p.ImportPath, module)
		pkgs = append(pkgs, p)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("go list: %v", err)
	}
	return pkgs
}

// Every package imports only what stands at or below its own row.
func TestLayers(t *testing.T) {
	for _, p := range list(t, "./...") {
		from, ok := rank(p.ImportPath)
		if !ok {
			if !strings.HasPrefix(p.ImportPath, "internal/") {
				t.Errorf("%s has no place in the layers; add it to the table (and to the design)", p.ImportPath)
			}
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module) {
				continue
			}
			imp = strings.TrimPrefix(imp, module)
			to, ok := rank(imp)
			if ok && to < from {
				t.Errorf("%s imports %s, which stands above it", p.ImportPath, imp)
			}
		}
	}
}

// The worker's binary links the worker and the drivers, never the control
// plane: a host runs what it is told and decides nothing.
func TestWorkerLinksNoControlPlane(t *testing.T) {
	pkgs := list(t, "-deps", "./cmd/worker")
	for _, p := range pkgs {
		for _, banned := range []string{"pkg/system", "pkg/gateway", "pkg/sessions", "pkg/orchestrator"} {
			if p.ImportPath == banned || strings.HasPrefix(p.ImportPath, banned+"/") {
				t.Errorf("cmd/worker links %s", p.ImportPath)
			}
		}
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found nothing for cmd/worker")
	}
}
