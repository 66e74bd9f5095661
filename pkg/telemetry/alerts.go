package telemetry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// An alert rule is a CEL expression over a container's or a host's
// figures (see ContainerVars and HostVars), a for-duration it must hold
// for before the alert fires, a severity, and actions: log, event (an
// io.openagent.alert.firing in the events stream, and .resolved when it
// no longer holds) and webhook (the event, HMAC-signed, POSTed to a
// webhook from a durable consumer, with retries).
type Rule struct {
	ID       string   `json:"id"` // a subject token: letters, digits, '-', '_'
	Name     string   `json:"name,omitempty"`
	On       string   `json:"on"` // OnContainer or OnHost
	Expr     string   `json:"expr"`
	For      Duration `json:"for,omitempty"`
	Severity string   `json:"severity"`
	Summary  string   `json:"summary,omitempty"`
	// Actions are what firing and resolving do; log and event when
	// empty. A webhook action names one of the config's webhooks.
	Actions []Action `json:"actions,omitempty"`
}

// What a rule watches.
const (
	OnContainer = "container"
	OnHost      = "host"
)

// Severities, least first.
var Severities = []string{"info", "low", "medium", "high", "critical"}

// Action is one thing an alert does when it fires and when it resolves.
type Action struct {
	Type    string `json:"type"`              // "log", "event" or "webhook"
	Webhook string `json:"webhook,omitempty"` // the webhook's name, for "webhook"
}

// Webhook is an HTTP endpoint alerts are POSTed to, signed with its
// secret (see Sign).
type Webhook struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	// Secret, or the file holding it (SecretFile, read at start), keys the
	// HMAC-SHA256 signature of every delivery.
	Secret     string `json:"secret,omitempty"`
	SecretFile string `json:"secretFile,omitempty"`
	// Resilience is its retries and circuit breaker; the defaults when
	// left out.
	Resilience WebhookResilience `json:"resilience,omitzero"`
}

// AlertsConfig is an alerts file: rules and the webhooks they send to.
type AlertsConfig struct {
	Rules    []Rule    `json:"rules"`
	Webhooks []Webhook `json:"webhooks,omitempty"`
	// Every is how often the rules are evaluated; DefaultEvaluateEvery
	// when zero.
	Every Duration `json:"evaluateEvery,omitempty"`
}

// DefaultEvaluateEvery is how often the leader evaluates the alert rules.
const DefaultEvaluateEvery = 5 * time.Second

// DefaultRules are the rules of a system without an alerts file: log and
// publish, no webhooks.
func DefaultRules() []Rule {
	return []Rule{
		{ID: "host-lost", Name: "Host lost", On: OnHost, Expr: "host.lost", Severity: "critical",
			Summary: "the host stopped reporting; its containers are rescheduled where they allow it"},
		{ID: "driver-breaker-open", Name: "Driver circuit breaker open", On: OnHost, Expr: "host.breakersOpen > 0", For: Duration(30 * time.Second), Severity: "high",
			Summary: "a driver keeps failing on the host; its commands wait for the breaker's trial"},
		{ID: "container-memory-high", Name: "Container memory near its limit", On: OnContainer,
			Expr: "container.memoryLimitBytes > 0 && container.memoryPercent > 90", For: Duration(time.Minute), Severity: "medium",
			Summary: "the container uses more than 90% of its memory limit; it may be killed for it"},
	}
}

// Duration is a time.Duration written as Go writes one ("30s", "1m").
type Duration time.Duration

// UnmarshalJSON reads "30s" or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err := json.Unmarshal(b, &n); err != nil {
			return errors.New(`a duration such as "30s"`)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf(`%q is not a duration such as "30s"`, s)
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes it as "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// LoadAlerts reads an alerts file. An error names the file and what in it
// is wrong.
func LoadAlerts(path string) (*AlertsConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("alerts: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var cfg AlertsConfig
	if err := dec.Decode(&cfg); err != nil {
		return nil, fmt.Errorf("alerts: %s: %w", path, err)
	}
	for i, w := range cfg.Webhooks {
		if w.SecretFile != "" {
			s, err := os.ReadFile(w.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("alerts: %s: webhook %s: %w", path, w.Name, err)
			}
			cfg.Webhooks[i].Secret = strings.TrimSpace(string(s))
		}
	}
	if _, err := NewAlerts(cfg); err != nil {
		return nil, fmt.Errorf("alerts: %s: %w", path, err)
	}
	return &cfg, nil
}

// rule is a compiled rule.
type rule struct {
	Rule
	prg      cel.Program
	log      bool
	event    bool
	webhooks []string
}

// Alerts evaluates the rules and keeps each alert's state: pending while
// its expression holds for less than the rule's for, then firing until it
// no longer holds. It is safe for concurrent use.
type Alerts struct {
	rules    []*rule
	webhooks map[string]Webhook
	every    time.Duration

	mu     sync.Mutex
	state  map[string]*instance // by alert key
	errors map[string]string    // rule id → its last evaluation error
}

type instance struct {
	rule    *rule
	subject Subject
	since   time.Time
	firing  bool
	values  map[string]float64
}

// NewAlerts compiles a config's rules; an error names the rule and what
// is wrong with it. Without rules it takes DefaultRules.
func NewAlerts(cfg AlertsConfig) (*Alerts, error) {
	if cfg.Rules == nil {
		cfg.Rules = DefaultRules()
	}
	env, err := cel.NewEnv(
		cel.Variable(OnContainer, cel.MapType(cel.StringType, cel.DynType)),
		cel.Variable(OnHost, cel.MapType(cel.StringType, cel.DynType)),
		cel.CrossTypeNumericComparisons(true),
		ext.Strings(),
	)
	if err != nil {
		return nil, err
	}
	a := &Alerts{webhooks: map[string]Webhook{}, every: time.Duration(cfg.Every), state: map[string]*instance{}, errors: map[string]string{}}
	if a.every <= 0 {
		a.every = DefaultEvaluateEvery
	}
	for _, w := range cfg.Webhooks {
		switch {
		case !events.ValidToken(w.Name):
			return nil, fmt.Errorf("webhook %q: a name of letters, digits, '-' and '_'", w.Name)
		case a.webhooks[w.Name].Name != "":
			return nil, fmt.Errorf("webhook %s: named twice", w.Name)
		case !strings.HasPrefix(w.URL, "http://") && !strings.HasPrefix(w.URL, "https://"):
			return nil, fmt.Errorf("webhook %s: url %q is not http or https", w.Name, w.URL)
		case w.Secret == "":
			return nil, fmt.Errorf("webhook %s: no secret (secret or secretFile) to sign its deliveries with", w.Name)
		}
		a.webhooks[w.Name] = w
	}
	seen := map[string]bool{}
	for i, r := range cfg.Rules {
		switch {
		case !events.ValidToken(r.ID):
			return nil, fmt.Errorf("rule %d: id %q: letters, digits, '-' and '_'", i, r.ID)
		case seen[r.ID]:
			return nil, fmt.Errorf("rule %s: id used twice", r.ID)
		case r.On != OnContainer && r.On != OnHost:
			return nil, fmt.Errorf("rule %s: on %q: container or host", r.ID, r.On)
		case !slices.Contains(Severities, r.Severity):
			return nil, fmt.Errorf("rule %s: severity %q: one of %s", r.ID, r.Severity, strings.Join(Severities, ", "))
		case r.For < 0:
			return nil, fmt.Errorf("rule %s: for %v: not negative", r.ID, time.Duration(r.For))
		}
		seen[r.ID] = true
		ast, iss := env.Compile(r.Expr)
		if iss.Err() != nil {
			return nil, fmt.Errorf("rule %s: expr: %w", r.ID, iss.Err())
		}
		if ast.OutputType() != cel.BoolType && ast.OutputType() != cel.DynType {
			return nil, fmt.Errorf("rule %s: expr is %s; it must be true or false", r.ID, ast.OutputType())
		}
		if r.On == OnHost && strings.Contains(r.Expr, OnContainer+".") {
			return nil, fmt.Errorf("rule %s: a host's rule has no container to read", r.ID)
		}
		prg, err := env.Program(ast, cel.CostLimit(100000))
		if err != nil {
			return nil, fmt.Errorf("rule %s: %w", r.ID, err)
		}
		cr := &rule{Rule: r, prg: prg}
		if len(r.Actions) == 0 {
			cr.log, cr.event = true, true
		}
		for _, act := range r.Actions {
			switch act.Type {
			case "log":
				cr.log = true
			case "event":
				cr.event = true
			case "webhook":
				if _, ok := a.webhooks[act.Webhook]; !ok {
					return nil, fmt.Errorf("rule %s: webhook %q is not among the config's webhooks", r.ID, act.Webhook)
				}
				cr.event = true // delivered from the event
				cr.webhooks = append(cr.webhooks, act.Webhook)
			default:
				return nil, fmt.Errorf("rule %s: action %q: log, event or webhook", r.ID, act.Type)
			}
		}
		a.rules = append(a.rules, cr)
	}
	return a, nil
}

// Every is how often the rules are to be evaluated.
func (a *Alerts) Every() time.Duration { return a.every }

// Webhook returns a webhook by name.
func (a *Alerts) Webhook(name string) (Webhook, bool) {
	w, ok := a.webhooks[name]
	return w, ok
}

// Webhooks are the webhooks' names.
func (a *Alerts) Webhooks() []string { return slices.Sorted(maps.Keys(a.webhooks)) }

// Rules are the rules, as configured.
func (a *Alerts) Rules() []Rule {
	out := make([]Rule, len(a.rules))
	for i, r := range a.rules {
		out[i] = r.Rule
	}
	return out
}

// Subject is one container or host the rules are evaluated on: its id,
// its host, and the variables its expressions read (ContainerVars,
// HostVars).
type Subject struct {
	On, ID, HostID string
	Vars           map[string]any
}

// Transition is an alert that fired or resolved in an evaluation.
type Transition struct {
	Firing bool
	Log    bool // the rule's actions: log it
	Event  bool // publish it (and deliver it to its webhooks)
	Data   events.AlertData
}

// Evaluate evaluates every rule on every subject at now and returns the
// alerts that fired or resolved. An alert whose subject is gone resolves.
// An expression that fails on a subject counts as not holding; the
// failure is kept for the rule (Errors).
func (a *Alerts) Evaluate(now time.Time, subjects []Subject) []Transition {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	var out []Transition
	errs := map[string]string{}
	for _, r := range a.rules {
		for _, s := range subjects {
			if s.On != r.On {
				continue
			}
			key := AlertKey(r.ID, s.On, s.ID)
			seen[key] = true
			holds, err := r.holds(s.Vars)
			if err != nil {
				errs[r.ID] = fmt.Sprintf("%s %s: %v", s.On, s.ID, err)
			}
			in := a.state[key]
			switch {
			case holds && in == nil:
				in = &instance{rule: r, subject: s, since: now}
				a.state[key] = in
				fallthrough
			case holds && !in.firing:
				in.subject, in.values = s, figures(s.Vars)
				if now.Sub(in.since) >= time.Duration(r.For) {
					in.firing = true
					out = append(out, in.transition(true, ""))
				}
			case holds:
				in.subject, in.values = s, figures(s.Vars)
			case in != nil:
				delete(a.state, key)
				if in.firing {
					in.subject, in.values = s, figures(s.Vars)
					out = append(out, in.transition(false, "the expression no longer holds"))
				}
			}
		}
	}
	for key, in := range a.state {
		if !seen[key] {
			delete(a.state, key)
			if in.firing {
				out = append(out, in.transition(false, fmt.Sprintf("the %s is gone", in.subject.On)))
			}
		}
	}
	a.errors = errs
	return out
}

// Restore marks alerts firing that the events stream says are: a new
// leader goes on from them instead of firing them again, and resolves
// them when they no longer hold. An alert of a rule no longer configured
// is left as it is: nothing evaluates it.
func (a *Alerts) Restore(firing []events.AlertData) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, d := range firing {
		for _, r := range a.rules {
			if r.ID == d.Rule && r.On == d.On {
				a.state[d.Alert] = &instance{rule: r, subject: Subject{On: d.On, ID: d.Subject, HostID: d.HostID}, since: d.Since, firing: true, values: d.Values}
			}
		}
	}
}

// Undo takes back a transition that could not be carried out, so that
// the next evaluation makes it again: a firing alert goes back to pending
// (since as it was), a resolved one to firing.
func (a *Alerts) Undo(t Transition) {
	a.mu.Lock()
	defer a.mu.Unlock()
	d := t.Data
	for _, r := range a.rules {
		if r.ID == d.Rule && r.On == d.On {
			a.state[d.Alert] = &instance{rule: r, subject: Subject{On: d.On, ID: d.Subject, HostID: d.HostID}, since: d.Since, firing: !t.Firing, values: d.Values}
		}
	}
}

// Reset forgets every alert's state, as a term ends.
func (a *Alerts) Reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.state = map[string]*instance{}
}

// Pending are the alerts whose expression holds and whose for has not
// passed yet.
func (a *Alerts) Pending() []events.AlertData {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []events.AlertData
	for _, in := range a.state {
		if !in.firing {
			out = append(out, in.transition(false, "").Data)
		}
	}
	slices.SortFunc(out, func(x, y events.AlertData) int { return strings.Compare(x.Alert, y.Alert) })
	return out
}

// Errors are the rules' last evaluation errors, by rule id.
func (a *Alerts) Errors() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.errors)
}

// AlertKey names an alert: rule/on/subject.
func AlertKey(rule, on, subject string) string { return rule + "/" + on + "/" + subject }

func (r *rule) holds(vars map[string]any) (bool, error) {
	in := map[string]any{OnContainer: map[string]any{}, OnHost: map[string]any{}}
	maps.Copy(in, vars)
	out, _, err := r.prg.Eval(in)
	if err != nil {
		return false, err
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, errors.New("the expression is not true or false")
	}
	return b, nil
}

func (in *instance) transition(firing bool, reason string) Transition {
	r := in.rule
	return Transition{Firing: firing, Log: r.log, Event: r.event, Data: events.AlertData{
		Alert: AlertKey(r.ID, in.subject.On, in.subject.ID), Rule: r.ID, Name: r.Name, Severity: r.Severity, On: r.On,
		Subject: in.subject.ID, HostID: in.subject.HostID, Expr: r.Expr, Summary: r.Summary, Since: in.since.UTC(),
		ForMs: time.Duration(r.For).Milliseconds(), Values: in.values, Webhooks: r.webhooks, Reason: reason}}
}

// figures are the numbers among a subject's variables, which an alert's
// event carries as they were.
func figures(vars map[string]any) map[string]float64 {
	out := map[string]float64{}
	for name, v := range vars {
		m, ok := v.(map[string]any)
		if !ok {
			continue
		}
		for k, x := range m {
			if n, ok := x.(float64); ok {
				out[name+"."+k] = n
			}
		}
	}
	return out
}

// ContainerVars are what a container's rules read as container (and its
// host's as host):
//
//	id, name, host, status, image, driver   strings
//	labels                                  map of strings
//	cpu, cpuLimit                           cores in use at the last sample, and the limit
//	cpuPercent                              cpu as a share of the limit, in percent (0 without a limit)
//	memoryBytes, memoryLimitBytes           at the last sample
//	memoryPercent                           of the limit (0 without one)
//	pids, restarts                          processes at the last sample; restarts by its policy
//	sampled                                 whether there is a sample (a running container's)
//
// Numbers are doubles; comparisons with integers work as written.
func ContainerVars(c api.Container, s *events.ContainerSample) map[string]any {
	v := map[string]any{"id": c.ID, "name": c.Name, "host": c.Host, "status": string(c.Status), "image": c.Image, "driver": c.Driver,
		"labels": labels(c.Labels), "cpu": 0.0, "cpuLimit": c.Resources.CPU, "cpuPercent": 0.0, "memoryBytes": 0.0,
		"memoryLimitBytes": float64(c.Resources.Memory) * (1 << 20), "memoryPercent": 0.0, "pids": 0.0, "restarts": float64(c.Restarts), "sampled": s != nil}
	if s != nil {
		v["cpu"], v["memoryBytes"], v["pids"] = s.CPU, float64(s.MemoryBytes), float64(s.Pids)
		if s.MemoryLimitBytes > 0 {
			v["memoryLimitBytes"] = float64(s.MemoryLimitBytes)
		}
		if c.Resources.CPU > 0 {
			v["cpuPercent"] = 100 * s.CPU / c.Resources.CPU
		}
		if lim := v["memoryLimitBytes"].(float64); lim > 0 {
			v["memoryPercent"] = 100 * float64(s.MemoryBytes) / lim
		}
	}
	return v
}

// HostVars are what a host's rules read as host:
//
//	id                                       string
//	labels                                   map of strings
//	live, lost, draining, quarantined        bools
//	containers                               its active containers
//	cpuCapacity, cpuAllocated, cpuAllocatedPercent          cores placed on it, of what it offers
//	memoryCapacityMB, memoryAllocatedMB, memoryAllocatedPercent
//	breakersOpen                             its drivers whose circuit breaker is open
//	driverErrors                             its drivers' failed calls since its worker started
//	secondsSinceSeen                         since its last heartbeat
func HostVars(h api.Host, now time.Time) map[string]any {
	open, errs := 0.0, 0.0
	for _, d := range h.Drivers {
		if d.Breaker == "open" {
			open++
		}
		for _, n := range d.Errors {
			errs += float64(n)
		}
	}
	pct := func(part, whole float64) float64 {
		if whole <= 0 {
			return 0
		}
		return 100 * part / whole
	}
	return map[string]any{
		"id":                     h.ID,
		"labels":                 labels(h.Labels),
		"live":                   h.Live,
		"lost":                   !h.LostAt.IsZero(),
		"draining":               !h.DrainingSince.IsZero(),
		"quarantined":            h.QuarantinedUntil.After(now),
		"containers":             float64(h.Containers),
		"cpuCapacity":            h.Capacity.CPU,
		"cpuAllocated":           h.Allocated.CPU,
		"cpuAllocatedPercent":    pct(h.Allocated.CPU, h.Capacity.CPU),
		"memoryCapacityMB":       float64(h.Capacity.Memory),
		"memoryAllocatedMB":      float64(h.Allocated.Memory),
		"memoryAllocatedPercent": pct(float64(h.Allocated.Memory), float64(h.Capacity.Memory)),
		"breakersOpen":           open,
		"driverErrors":           errs,
		"secondsSinceSeen":       now.Sub(h.LastSeen).Seconds(),
	}
}

func labels(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
