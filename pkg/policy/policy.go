// Package policy is admission control with CEL: each policy is a CEL
// expression over the request (spec, request, params) that must hold for
// the request to go on. Policies are read from JSON files; without any,
// the default pack applies (defaults/default.json: no dangerous
// capabilities, no host network, no sensitive host paths, no root user
// unless allowed, images on the allowlist, resources within maxima). Every
// policy is evaluated, and a request is refused by the first that does not
// hold, named in the decision; in dry-run mode nothing is refused and the
// violations are only reported.
//
// An expression that fails to evaluate refuses the request: policy fails
// closed.
package policy

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"

	"github.com/openagent/orchestrator/pkg/driver"
)

//go:embed defaults/*.json
var defaults embed.FS

// Policy is one rule.
type Policy struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Expression is CEL over spec (the container's config as in the API),
	// request (driver, hostId, source, id) and params; true admits.
	Expression string `json:"expression"`
	// Message says why a request it refuses is refused.
	Message string `json:"message"`
	// Field is what a refusal names.
	Field string `json:"field,omitempty"`
}

// Params are the values the policies read as params.
type Params struct {
	// ImageAllowlist, when not empty, lists the images that may run; an
	// entry ending in '*' matches any rest.
	ImageAllowlist []string `json:"imageAllowlist"`
	// AllowRoot lets containers run as root.
	AllowRoot bool `json:"allowRoot"`
	// Max bounds one container's resources.
	Max Maxima `json:"max"`
	// DangerousCapabilities and SensitivePaths are what the default pack
	// refuses.
	DangerousCapabilities []string `json:"dangerousCapabilities"`
	SensitivePaths        []string `json:"sensitivePaths"`
}

// Maxima bound one container.
type Maxima struct {
	CPU      float64 `json:"cpu"`
	MemoryMB int64   `json:"memoryMB"`
	Pids     int64   `json:"pids"`
	DiskMB   int64   `json:"diskMB"`
}

// DefaultParams are the params the default pack is meant for.
func DefaultParams() Params {
	return Params{
		Max:                   Maxima{CPU: 64, MemoryMB: 256 << 10, Pids: 65536, DiskMB: 1 << 20},
		DangerousCapabilities: slices.Clone(driver.DangerousCapabilities),
		SensitivePaths:        slices.Clone(driver.SensitivePaths),
	}
}

// Default returns the default pack.
func Default() []Policy {
	b, err := defaults.ReadFile("defaults/default.json")
	if err != nil {
		panic(err) // embedded
	}
	var ps []Policy
	if err := json.Unmarshal(b, &ps); err != nil {
		panic(err)
	}
	return ps
}

// Load reads the policies of every *.json file in dir, in the files'
// order: each file holds one policy or a list.
func Load(dir string) ([]Policy, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy: no *.json policy files in %s", dir)
	}
	slices.Sort(files)
	var out []Policy
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		var list []Policy
		if err := json.Unmarshal(b, &list); err != nil {
			var one Policy
			if err1 := json.Unmarshal(b, &one); err1 != nil {
				return nil, fmt.Errorf("policy: %s: neither a policy nor a list of policies: %w", f, err)
			}
			list = []Policy{one}
		}
		out = append(out, list...)
	}
	return out, nil
}

// Config makes an Engine.
type Config struct {
	Policies []Policy // Default() when nil
	Params   Params
	// DryRun only reports what would be refused.
	DryRun bool
}

type program struct {
	Policy
	prg cel.Program
}

// Engine evaluates compiled policies. It is safe for concurrent use.
type Engine struct {
	programs []program
	params   map[string]any
	dryRun   bool
}

// New compiles the policies; an error names the policy and what is wrong
// with it.
func New(cfg Config) (*Engine, error) {
	if cfg.Policies == nil {
		cfg.Policies = Default()
	}
	env, err := cel.NewEnv(
		cel.Variable("spec", cel.DynType),
		cel.Variable("request", cel.MapType(cel.StringType, cel.StringType)),
		cel.Variable("params", cel.DynType),
		ext.Strings(),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	e := &Engine{dryRun: cfg.DryRun}
	seen := map[string]bool{}
	for i, p := range cfg.Policies {
		switch {
		case p.Name == "":
			return nil, fmt.Errorf("policy %d: no name", i)
		case seen[p.Name]:
			return nil, fmt.Errorf("policy %s: named twice", p.Name)
		case p.Message == "":
			return nil, fmt.Errorf("policy %s: no message to refuse with", p.Name)
		}
		seen[p.Name] = true
		ast, iss := env.Compile(p.Expression)
		if iss.Err() != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Name, iss.Err())
		}
		if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
			return nil, fmt.Errorf("policy %s: the expression is %s; it must be true or false", p.Name, ast.OutputType())
		}
		prg, err := env.Program(ast)
		if err != nil {
			return nil, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		e.programs = append(e.programs, program{p, prg})
	}
	// Lists the policies read are lists, never null.
	for _, l := range []*[]string{&cfg.Params.ImageAllowlist, &cfg.Params.DangerousCapabilities, &cfg.Params.SensitivePaths} {
		if *l == nil {
			*l = []string{}
		}
	}
	params, err := toMap(cfg.Params)
	if err != nil {
		return nil, err
	}
	e.params = params
	return e, nil
}

// Input is what a policy decides on.
type Input struct {
	Spec   driver.ContainerConfig
	Driver string
	HostID string
	Source string
	ID     string
}

// Violation is a policy a request broke.
type Violation struct {
	Policy  string
	Field   string
	Message string
}

func (v Violation) String() string { return fmt.Sprintf("policy %s: %s", v.Policy, v.Message) }

// Decision is what the policies said of a request.
type Decision struct {
	// Allowed is false when a policy refused the request (never in dry-run
	// mode).
	Allowed bool
	// Violations lists every policy that did not hold, in order; the first
	// is the refusal.
	Violations []Violation
	DryRun     bool
}

// Admit evaluates every policy on one request.
func (e *Engine) Admit(in Input) Decision {
	spec := in.Spec.Redacted() // a policy never sees a secret
	spec.Volumes = slices.Clone(spec.Volumes)
	for i, v := range spec.Volumes {
		if v.Type != driver.MountVolume {
			spec.Volumes[i].Source = path.Clean("/" + v.Source)
		}
	}
	d := Decision{Allowed: true, DryRun: e.dryRun}
	specMap, err := toMap(spec)
	if err != nil {
		d.Violations = append(d.Violations, Violation{Policy: "input", Message: err.Error()})
		d.Allowed = e.dryRun
		return d
	}
	vars := map[string]any{"spec": specMap, "params": e.params,
		"request": map[string]string{"driver": in.Driver, "hostId": in.HostID, "source": in.Source, "id": in.ID}}
	for _, p := range e.programs {
		out, _, err := p.prg.Eval(vars)
		if err == nil {
			if ok, isBool := out.Value().(bool); isBool && ok {
				continue
			} else if !isBool {
				err = errors.New("the expression is not true or false")
			}
		}
		msg := p.Message
		if err != nil {
			msg = "could not be evaluated, so the request is refused: " + strings.TrimSpace(err.Error())
		}
		d.Violations = append(d.Violations, Violation{Policy: p.Name, Field: p.Field, Message: msg})
	}
	if len(d.Violations) > 0 && !e.dryRun {
		d.Allowed = false
	}
	return d
}

// toMap turns a value into what CEL reads: its JSON form.
func toMap(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return m, nil
}
