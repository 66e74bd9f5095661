package policy_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/policy"
)

func spec(edit func(*driver.ContainerConfig)) driver.ContainerConfig {
	s := driver.DefaultConfig()
	s.SessionID, s.Image, s.Command = "s", "openagent/sandbox:python", []string{"python3"}
	if edit != nil {
		edit(&s)
	}
	return s
}

func broken(d policy.Decision) []string {
	var out []string
	for _, v := range d.Violations {
		out = append(out, v.Policy)
	}
	return out
}

// The default pack: each escape vector refused by the policy that names
// it, ordinary requests admitted.
func TestDefaultPack(t *testing.T) {
	params := policy.DefaultParams()
	params.ImageAllowlist = []string{"openagent/sandbox:*", "host", "fake"}
	params.Max.CPU = 8
	e, err := policy.New(policy.Config{Params: params})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*driver.ContainerConfig)
		want []string
	}{
		{"the secure defaults", nil, nil},
		{"a harmless capability", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"NET_BIND_SERVICE"} }, nil},
		{"SYS_ADMIN, in any spelling", func(c *driver.ContainerConfig) { c.Security.CapAdd = []string{"chown", "cap_sys_admin"} }, []string{"no-dangerous-capabilities"}},
		{"the host network", func(c *driver.ContainerConfig) { c.Network = "host" }, []string{"no-host-network"}},
		{"/etc through ..", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: "/srv/../etc", Target: "/x"}}
		}, []string{"no-sensitive-host-paths"}},
		{"the root, written //", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: "//", Target: "/x"}}
		}, []string{"no-sensitive-host-paths"}},
		{"the docker socket", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Source: "/var/run/docker.sock", Target: "/s"}}
		}, []string{"no-sensitive-host-paths"}},
		{"a named volume called etc", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountVolume, Source: "etc", Target: "/data"}}
		}, nil},
		{"an ordinary directory", func(c *driver.ContainerConfig) {
			c.Volumes = []driver.VolumeMount{{Type: driver.MountBind, Source: "/srv/work/", Target: "/w"}}
		}, nil},
		{"root", func(c *driver.ContainerConfig) { c.Security.User = "0:0" }, []string{"no-root-user"}},
		{"root by name", func(c *driver.ContainerConfig) { c.Security.User = "root" }, []string{"no-root-user"}},
		{"an image off the allowlist", func(c *driver.ContainerConfig) { c.Image = "evil/miner" }, []string{"images-on-the-allowlist"}},
		{"too many cores", func(c *driver.ContainerConfig) { c.Resources.CPU = 9 }, []string{"resources-within-maxima"}},
		{"two at once, both named", func(c *driver.ContainerConfig) { c.Network, c.Security.User = "host", "0" }, []string{"no-host-network", "no-root-user"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := e.Admit(policy.Input{Spec: spec(tc.edit), Driver: "docker"})
			if got := broken(d); !slices.Equal(got, tc.want) {
				t.Fatalf("violations %v (%+v); want %v", got, d.Violations, tc.want)
			}
			if d.Allowed != (len(tc.want) == 0) {
				t.Fatalf("allowed %v with violations %v", d.Allowed, tc.want)
			}
		})
	}
	root, err := policy.New(policy.Config{Params: func() policy.Params { p := params; p.AllowRoot = true; return p }()})
	if err != nil {
		t.Fatal(err)
	}
	if d := root.Admit(policy.Input{Spec: spec(func(c *driver.ContainerConfig) { c.Security.User = "0" })}); !d.Allowed {
		t.Fatalf("root refused where allowed: %+v", d.Violations)
	}
}

// Dry run refuses nothing and reports what it would.
func TestDryRun(t *testing.T) {
	e, err := policy.New(policy.Config{Params: policy.DefaultParams(), DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Admit(policy.Input{Spec: spec(func(c *driver.ContainerConfig) { c.Network = "host" })})
	if !d.Allowed || !d.DryRun || !slices.Equal(broken(d), []string{"no-host-network"}) {
		t.Fatalf("dry run: %+v; want allowed, with the violation reported", d)
	}
}

// Policies come from files; a bad one is refused naming it; one that
// cannot be evaluated refuses (fails closed); a secret is never seen.
func TestPolicyFiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.json", `{"name": "labelled", "expression": "has(spec.labels) && 'team' in spec.labels", "message": "a team label is required", "field": "spec.labels"}`)
	write("b.json", `[{"name": "no-missing-key", "expression": "spec.nothere == 1", "message": "never"},
		{"name": "no-secret-peeking", "expression": "!has(spec.secrets) || spec.secrets.all(k, spec.secrets[k] == '(secret)')", "message": "a policy saw a secret"}]`)
	ps, err := policy.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, err := policy.New(policy.Config{Policies: ps})
	if err != nil {
		t.Fatal(err)
	}
	d := e.Admit(policy.Input{Spec: spec(func(c *driver.ContainerConfig) { c.Secrets = map[string]string{"K": "v"} })})
	if got := broken(d); !slices.Equal(got, []string{"labelled", "no-missing-key"}) {
		t.Fatalf("violations %v; want labelled and the unevaluable one", got)
	}
	if !strings.Contains(d.Violations[1].Message, "could not be evaluated") {
		t.Fatalf("an unevaluable policy says %q", d.Violations[1].Message)
	}
	for _, bad := range []string{`{"name": "x", "expression": "spec.", "message": "m"}`, `{"name": "x", "expression": "1 + 1", "message": "m"}`, `{"expression": "true", "message": "m"}`} {
		write("c.json", bad)
		ps, err := policy.Load(dir)
		if err == nil {
			_, err = policy.New(policy.Config{Policies: ps})
		}
		if err == nil {
			t.Fatalf("policy %s compiled", bad)
		}
	}
}
