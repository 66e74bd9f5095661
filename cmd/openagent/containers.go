package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"text/template"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/openagent/orchestrator/internal/version"
	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// keyValues parses repeated K=V flags.
func keyValues(flag string, in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("invalid: --%s %q is not K=V", flag, kv)
		}
		out[k] = v
	}
	return out, nil
}

func (c *cli) runCmd(start bool) *cobra.Command {
	var (
		drv, name, session, network, user, workdir string
		cpu                                        float64
		memory, disk, pids                         int64
		env, labels, volumes, capAdd, capDrop      []string
		egress, constraints, capabilities          []string
		host, strategy, antiAffinity, reschedule   string
		restart                                    string
		gpus                                       int64
		readOnly                                   bool
		lostAfter                                  time.Duration
	)
	use, short := "run [flags] IMAGE [-- CMD ARGS...]", "Create and start a container; prints its id"
	if !start {
		use, short = "create [flags] IMAGE [-- CMD ARGS...]", "Create a container without starting it; prints its id"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := driver.DefaultConfig()
			spec.Image, spec.Command = args[0], afterDash(args[1:])
			f := cmd.Flags()
			if f.Changed("cpu") {
				spec.Resources.CPU = cpu
			}
			if f.Changed("memory") {
				spec.Resources.MemoryMB = memory
			}
			if f.Changed("disk") {
				spec.Resources.DiskMB = disk
			}
			if f.Changed("pids") {
				spec.Resources.Pids = pids
			}
			if f.Changed("user") {
				spec.Security.User = user
			}
			if f.Changed("read-only") {
				spec.Security.ReadOnlyRoot = readOnly
			}
			if f.Changed("cap-drop") {
				spec.Security.CapDrop = capDrop
			}
			spec.Security.CapAdd = capAdd
			spec.SessionID, spec.Network, spec.WorkingDir = session, network, workdir
			if restart != "" {
				spec.RestartPolicy = driver.RestartPolicy(restart)
			}
			var err error
			if spec.Env, err = keyValues("env", env); err != nil {
				return err
			}
			if spec.Labels, err = keyValues("label", labels); err != nil {
				return err
			}
			if spec.Egress, err = parseEgress(egress); err != nil {
				return err
			}
			for _, v := range volumes {
				m, err := parseVolume(v)
				if err != nil {
					return err
				}
				spec.Volumes = append(spec.Volumes, m)
			}
			cons, exprs, err := parseConstraints(constraints)
			if err != nil {
				return err
			}
			spec.Resources.GPUs = gpus
			req := api.CreateRequest{Name: name, Driver: drv, HostID: host, Constraints: cons, Start: start, Spec: spec}
			if len(exprs) > 0 || strategy != "" || antiAffinity != "" || len(capabilities) > 0 {
				req.Placement = &api.Placement{Strategy: strategy, Expressions: exprs, AntiAffinity: antiAffinity, Capabilities: capabilities}
			}
			if reschedule != "" || lostAfter != 0 {
				req.Reschedule = &api.ReschedulePolicy{Policy: reschedule, LostAfterMs: lostAfter.Milliseconds()}
			}
			ct, err := c.client().Create(cmd.Context(), req)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(ct)
			}
			fmt.Fprintln(c.out, ct.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&drv, "driver", "", "driver: local, fake, docker (default: local for the host image, fake for fake, else docker)")
	f.StringVar(&name, "name", "", "a unique name")
	f.StringVar(&session, "session", "", "session id (default: the container id)")
	f.Float64Var(&cpu, "cpu", driver.DefaultCPU, "cpu cores")
	f.Int64Var(&memory, "memory", driver.DefaultMemoryMB, "memory, MB")
	f.Int64Var(&disk, "disk", driver.DefaultDiskMB, "disk, MB")
	f.Int64Var(&pids, "pids", driver.DefaultPids, "processes")
	f.StringArrayVar(&env, "env", nil, "environment variable K=V (repeatable)")
	f.StringArrayVar(&labels, "label", nil, "label K=V (repeatable)")
	f.StringArrayVar(&volumes, "volume", nil, "mount SRC:DST[:ro|rw]; SRC a host path or a volume name (repeatable)")
	f.StringVar(&host, "host", "", "place it on this host")
	f.StringArrayVar(&constraints, "constraint", nil, "place it on a host whose labels meet this: K=V, K!=V, 'K in A,B', 'K notin A,B', 'K exists' (repeatable, all must hold)")
	f.StringVar(&strategy, "strategy", "", "binpack (default: the host left fullest) or spread (the one left emptiest)")
	f.StringVar(&antiAffinity, "anti-affinity", "", "a label KEY: no host runs two containers with the same value of it")
	f.StringArrayVar(&capabilities, "require", nil, "a capability the host must offer: pause, gpu (repeatable)")
	f.Int64Var(&gpus, "gpus", 0, "GPUs to reserve on the host")
	f.StringVar(&restart, "restart", "", "restart policy, carried out by the host's worker: no, on-failure or always (with a doubling backoff)")
	f.StringVar(&reschedule, "reschedule", "", "when its host is lost: never, on-failure (replaced if it was running) or always (default: what the restart policy implies)")
	f.DurationVar(&lostAfter, "lost-after", 0, "when its host is lost, wait this long for it to return before replacing the container")
	_ = cmd.RegisterFlagCompletionFunc("driver", completeDrivers)
	f.StringVar(&network, "network", "", "network")
	egressFlag(f, &egress)
	f.StringVar(&user, "user", driver.DefaultUser, "user uid[:gid] or name")
	f.BoolVar(&readOnly, "read-only", true, "read-only root filesystem")
	f.StringArrayVar(&capAdd, "cap-add", nil, "capability to add (repeatable)")
	f.StringArrayVar(&capDrop, "cap-drop", []string{"ALL"}, "capability to drop (repeatable)")
	f.StringVar(&workdir, "workdir", "", "working directory")
	f.SetInterspersed(false)
	return cmd
}

// parseConstraints reads --constraint values: K=V into the labels the host
// must have, the forms with operators into expressions.
func parseConstraints(values []string) (map[string]string, []api.Expression, error) {
	eq := map[string]string{}
	var exprs []api.Expression
	for _, v := range values {
		if f := strings.Fields(v); len(f) >= 2 {
			switch op := f[1]; {
			case op == "exists" && len(f) == 2:
				exprs = append(exprs, api.Expression{Key: f[0], Op: "exists"})
				continue
			case (op == "in" || op == "notin") && len(f) >= 3:
				exprs = append(exprs, api.Expression{Key: f[0], Op: op, Values: strings.Split(strings.Join(f[2:], ""), ",")})
				continue
			}
		}
		if k, val, ok := strings.Cut(v, "!="); ok && k != "" {
			exprs = append(exprs, api.Expression{Key: k, Op: "!=", Values: []string{val}})
			continue
		}
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" {
			return nil, nil, fmt.Errorf("invalid: --constraint %q: K=V, K!=V, 'K in A,B', 'K notin A,B' or 'K exists'", v)
		}
		eq[k] = val
	}
	if len(eq) == 0 {
		eq = nil
	}
	return eq, exprs, nil
}

// egressFlag is --egress, the same for containers, sessions and pools.
func egressFlag(f *pflag.FlagSet, rules *[]string) {
	f.StringArrayVar(rules, "egress", nil, "what the sandbox may reach: ADDRESS, CIDR or HOST, with :PORT[,PORT...] for those ports only (repeatable; nothing without one)")
}

// parseEgress reads --egress values: TO or TO:PORT[,PORT...].
func parseEgress(values []string) ([]driver.EgressRule, error) {
	var out []driver.EgressRule
	for _, v := range values {
		rule := driver.EgressRule{To: v}
		if to, ports, ok := strings.Cut(v, ":"); ok {
			rule.To = to
			for _, p := range strings.Split(ports, ",") {
				n, err := strconv.Atoi(p)
				if err != nil || n < 1 || n > 65535 {
					return nil, fmt.Errorf("invalid: --egress %q: port %q is not 1-65535", v, p)
				}
				rule.Ports = append(rule.Ports, n)
			}
		}
		if rule.To == "" {
			return nil, fmt.Errorf("invalid: --egress %q: no address, CIDR or host name", v)
		}
		out = append(out, rule)
	}
	return out, nil
}

// cores prints a cpu amount to the millicore, without the residue of
// summing binary fractions (0.30000000000000004).
func cores(v float64) string {
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

// statuses a container can be listed in.
var statuses = []api.Status{api.StatusPending, api.StatusCreated, api.StatusRunning, api.StatusExited, api.StatusStopped, api.StatusFailed, api.StatusLost}

func joinStatuses() string {
	names := make([]string, len(statuses))
	for i, st := range statuses {
		names[i] = string(st)
	}
	return strings.Join(names, ", ")
}

// printTemplate prints each item with a Go template, a line each, as
// docker's --format does.
func printTemplate[T any](w io.Writer, format string, items []T) error {
	tmpl, err := template.New("format").Funcs(template.FuncMap{"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	}}).Parse(format)
	if err != nil {
		return fmt.Errorf("invalid: --format: %w", err)
	}
	for _, it := range items {
		if err := tmpl.Execute(w, it); err != nil {
			return fmt.Errorf("invalid: --format: %w", err)
		}
		fmt.Fprintln(w)
	}
	return nil
}

// flagsAfterID reads the flags between a command's id and the "--" that
// starts the command it runs (exec ID -o json -- cmd), as flags: the
// command line stops being parsed at the id so that a command without
// "--" (exec ID ls -l) keeps its own flags. It returns the command.
func flagsAfterID(cmd *cobra.Command, rest []string) ([]string, error) {
	dash := slices.Index(rest, "--")
	if dash < 0 {
		return rest, nil
	}
	if dash > 0 {
		flags := rest[:dash]
		if err := cmd.Flags().Parse(flags); err != nil {
			return nil, fmt.Errorf("invalid: %w", err)
		}
		if extra := cmd.Flags().Args(); len(extra) > 0 {
			return nil, fmt.Errorf("invalid: %q before --: only flags go between the id and --", extra[0])
		}
	}
	return rest[dash+1:], nil
}

// afterDash drops the "--" that separates a command from the CLI's own
// arguments.
func afterDash(args []string) []string {
	if len(args) > 0 && args[0] == "--" {
		return args[1:]
	}
	return args
}

func parseVolume(s string) (driver.VolumeMount, error) {
	parts := strings.Split(s, ":")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw" {
		return driver.VolumeMount{}, fmt.Errorf("invalid: --volume %q is not SRC:DST[:ro|rw]", s)
	}
	m := driver.VolumeMount{Type: driver.MountBind, Source: parts[0], Target: parts[1], ReadOnly: len(parts) == 3 && parts[2] == "ro"}
	if !strings.HasPrefix(m.Source, "/") {
		m.Type = driver.MountVolume
	}
	return m, nil
}

func (c *cli) showContainer(ct *api.Container) error {
	if c.json() {
		return c.emit(ct)
	}
	return c.pretty(ct)
}

// pretty prints indented JSON, for people.
func (c *cli) pretty(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.out, string(b))
	return err
}

// each runs op on every container named (an id, a unique prefix or a
// name), as docker does: it goes on past a failure, says what failed, and
// fails if any did.
func (c *cli) each(ids []string, op func(id string) (string, any, error)) error {
	failed := 0
	for _, id := range ids {
		out, v, err := op(id)
		if err != nil && len(ids) == 1 {
			return err
		}
		if err != nil {
			failed++
			fmt.Fprintf(c.errOut, "openagent: %s: %s\n", id, describe(err))
			continue
		}
		if c.json() {
			if err := c.emit(v); err != nil {
				return err
			}
			continue
		}
		fmt.Fprintln(c.out, out)
	}
	if failed > 0 {
		return &exitError{code: 1} // each failure said already
	}
	return nil
}

func (c *cli) startCmd() *cobra.Command {
	return &cobra.Command{Use: "start ID...", Short: "Start containers", Args: cobra.MinimumNArgs(1), ValidArgsFunction: c.completeContainers,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.each(args, func(id string) (string, any, error) {
				ct, err := c.client().Start(cmd.Context(), id)
				if err != nil {
					return "", nil, err
				}
				return ct.ID, ct, nil
			})
		}}
}

func (c *cli) stopCmd() *cobra.Command {
	var timeout time.Duration
	var force bool
	cmd := &cobra.Command{Use: "stop [--timeout DURATION] [--force] ID...", Short: "Stop containers: SIGTERM, then SIGKILL after the timeout",
		Args: cobra.MinimumNArgs(1), ValidArgsFunction: c.completeContainers, RunE: func(cmd *cobra.Command, args []string) error {
			return c.each(args, func(id string) (string, any, error) {
				ct, err := c.client().Stop(cmd.Context(), id, timeout, force)
				if err != nil {
					return "", nil, err
				}
				return ct.ID, ct, nil
			})
		}}
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "grace period before SIGKILL")
	cmd.Flags().BoolVar(&force, "force", false, "SIGKILL at once")
	return cmd
}

func (c *cli) rmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{Use: "rm [--force] ID...", Short: "Remove containers", Args: cobra.MinimumNArgs(1), ValidArgsFunction: c.completeContainers,
		RunE: func(cmd *cobra.Command, args []string) error {
			return c.each(args, func(id string) (string, any, error) {
				if err := c.client().Remove(cmd.Context(), id, force); err != nil {
					return "", nil, err
				}
				return id, map[string]string{"id": id, "status": "removed"}, nil
			})
		}}
	cmd.Flags().BoolVar(&force, "force", false, "kill a running container first")
	return cmd
}

// completeContainers completes container ids and names, for the shells'
// dynamic completion (openagent completion bash|zsh|fish).
func (c *cli) completeContainers(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	list, err := c.client().List(cmd.Context(), client.ListOptions{All: true})
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []string
	for _, ct := range list {
		for _, ref := range []string{ct.ID, ct.Name} {
			if ref != "" && strings.HasPrefix(ref, toComplete) {
				out = append(out, ref+"\t"+string(ct.Status)+" "+ct.Image)
			}
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}

// completeDrivers completes --driver.
func completeDrivers(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{"local\thost processes, confined", "docker\tthe Docker Engine", "fake\tscripted, for tests"}, cobra.ShellCompDirectiveNoFileComp
}

func (c *cli) psCmd() *cobra.Command {
	var all, quiet bool
	var session, status, format string
	var labels []string
	cmd := &cobra.Command{Use: "ps [--all] [--session ID] [--label K=V]... [--status STATUS] [-q] [--format TEMPLATE]", Short: "List running containers, or with --all every one not removed",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			lbls, err := keyValues("label", labels)
			if err != nil {
				return err
			}
			if status != "" && !slices.Contains(statuses, api.Status(status)) {
				return fmt.Errorf("invalid: --status %q: one of %s", status, joinStatuses())
			}
			list, err := c.client().List(cmd.Context(), client.ListOptions{All: all, Session: session, Status: status, Labels: lbls})
			if err != nil {
				return err
			}
			switch {
			case quiet:
				for _, ct := range list {
					fmt.Fprintln(c.out, ct.ID)
				}
				return nil
			case format == "json" || c.json():
				return emitEach(c, list)
			case format != "":
				return printTemplate(c.out, format, list)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tDRIVER\tHOST\tSTATUS\tCREATED")
			for _, ct := range list {
				status := string(ct.Status)
				switch {
				case ct.Status == api.StatusExited || ct.Status == api.StatusStopped:
					status += fmt.Sprintf(" (%d)", ct.ExitCode)
				case ct.Status == api.StatusRunning && !ct.Ready:
					status += " (not ready)" // its readiness probe has not passed
				}
				if ct.Restarts > 0 {
					status += fmt.Sprintf(", %d restarts", ct.Restarts)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(ct.ID), ct.Name, ct.Image, ct.Driver, ct.Host, status, ago(ct.CreatedAt))
			}
			return tw.Flush()
		}}
	f := cmd.Flags()
	f.BoolVarP(&all, "all", "a", false, "every container not removed")
	f.StringVar(&session, "session", "", "only this session's")
	f.StringVar(&status, "status", "", "only in this status: "+joinStatuses())
	f.BoolVarP(&quiet, "quiet", "q", false, "print ids only")
	f.StringVar(&format, "format", "", "print each container with a Go template ({{.ID}} {{.Name}} {{.Status}} ...), or json")
	f.StringArrayVar(&labels, "label", nil, "only with label K=V (repeatable, all must match)")
	return cmd
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return time.Since(t).Round(time.Second).String() + " ago"
}

func (c *cli) inspectCmd() *cobra.Command {
	return &cobra.Command{Use: "inspect ID", Short: "Show a container", Args: cobra.ExactArgs(1), ValidArgsFunction: c.completeContainers, RunE: func(cmd *cobra.Command, args []string) error {
		ct, err := c.client().Get(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.showContainer(ct)
	}}
}

func (c *cli) logsCmd() *cobra.Command {
	var follow, timestamps bool
	var tail int
	var since time.Duration
	cmd := &cobra.Command{Use: "logs [--follow] [--tail N] [--timestamps] [--since DURATION] ID", Short: "Print a container's output", ValidArgsFunction: c.completeContainers,
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			opts := client.LogOptions{Follow: follow, Tail: tail, Timestamps: timestamps}
			if since > 0 {
				opts.Since = time.Now().Add(-since)
			}
			for e, err := range c.client().Logs(cmd.Context(), args[0], opts) {
				if err != nil {
					return err
				}
				if c.json() {
					if err := c.emit(e); err != nil {
						return err
					}
					continue
				}
				w := c.out
				if e.Stream == driver.Stderr {
					w = c.errOut
				}
				if timestamps {
					fmt.Fprintf(w, "%s %s\n", e.Time.Format(time.RFC3339Nano), e.Line)
				} else {
					fmt.Fprintln(w, e.Line)
				}
			}
			return nil
		}}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container stops")
	f.IntVar(&tail, "tail", 0, "only the last N lines")
	f.BoolVarP(&timestamps, "timestamps", "t", false, "prefix each line with its time")
	f.DurationVar(&since, "since", 0, "only output of the last DURATION")
	return cmd
}

func (c *cli) execCmd() *cobra.Command {
	var timeout time.Duration
	var env []string
	var workdir string
	cmd := &cobra.Command{Use: "exec [--timeout DURATION] [--env K=V]... ID -- CMD ARGS...", Short: "Run a command in a running container; exits with its code", ValidArgsFunction: c.completeContainers,
		Args: cobra.MinimumNArgs(2), RunE: func(cmd *cobra.Command, args []string) error {
			command, err := flagsAfterID(cmd, args[1:])
			if err != nil {
				return err
			}
			e, err := keyValues("env", env)
			if err != nil {
				return err
			}
			if len(command) == 0 {
				return fmt.Errorf("invalid: exec needs a command after the id")
			}
			res, err := c.client().Exec(cmd.Context(), args[0], api.ExecRequest{Command: command, Env: e, WorkingDir: workdir, TimeoutMs: timeout.Milliseconds()})
			if err != nil {
				return err
			}
			if c.json() {
				if err := c.emit(res); err != nil {
					return err
				}
			} else {
				fmt.Fprint(c.out, res.Stdout)
				fmt.Fprint(c.errOut, res.Stderr)
				if res.TimedOut {
					fmt.Fprintf(c.errOut, "openagent: timeout: the command ran past %s and was killed\n", timeout)
				}
			}
			return exitOf(res)
		}}
	f := cmd.Flags()
	f.DurationVar(&timeout, "timeout", 0, "kill the command after DURATION (exit code 124)")
	f.StringArrayVar(&env, "env", nil, "environment variable K=V (repeatable)")
	f.StringVar(&workdir, "workdir", "", "working directory")
	f.SetInterspersed(false)
	return cmd
}

func (c *cli) hostsCmd() *cobra.Command {
	var disable bool
	drain := &cobra.Command{Use: "drain [--disable] HOST", Short: "Drain a host: nothing new goes there, and its containers move elsewhere by their reschedule policy",
		Long: "Drain a host (the admin's): placement passes it by at once, and each container on it whose reschedule policy is not\n" +
			"never is replaced on another host, once, then stopped and removed on it when its replacement runs. What may not move stays:\n" +
			"stop it, or wait for it. When `openagent ps --all` shows nothing active on the host, stop its worker.\n" +
			"--disable ends the drain: placement uses the host again.",
		Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
			h, err := c.client().Drain(cmd.Context(), args[0], !disable)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(h)
			}
			fmt.Fprintf(c.out, "%s %s\n", h.ID, hostState(*h))
			return nil
		}}
	drain.Flags().BoolVar(&disable, "disable", false, "end the drain")
	hosts := &cobra.Command{Use: "hosts", Short: "List registered hosts; drain one", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		hosts, err := c.client().Hosts(cmd.Context())
		if err != nil {
			return err
		}
		if c.json() {
			return emitEach(c, hosts)
		}
		tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tDRIVERS\tCPU\tMEMORY MB\tCONTAINERS\tSTATE\tLAST SEEN")
		for _, h := range hosts {
			var names []string
			for _, d := range h.Drivers {
				name := d.Name
				if d.Breaker != "" && d.Breaker != "closed" {
					name += "(" + d.Breaker + ")" // its breaker fails what comes at once
				}
				names = append(names, name)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%d/%d\t%d\t%s\t%s\n", h.ID, strings.Join(names, ","), cores(h.Allocated.CPU), cores(h.Capacity.CPU),
				h.Allocated.Memory, h.Capacity.Memory, h.Containers, hostState(h), ago(h.LastSeen))
		}
		return tw.Flush()
	}}
	hosts.AddCommand(drain)
	return hosts
}

// hostState says in a word how a host is: live, draining, quarantined,
// silent (not heard from within its TTL, not yet lost) or lost.
func hostState(h api.Host) string {
	switch {
	case !h.LostAt.IsZero():
		return "lost"
	case !h.Live:
		return "silent"
	case !h.DrainingSince.IsZero():
		return "draining"
	case h.QuarantinedUntil.After(time.Now()):
		return "quarantined"
	}
	return "live"
}

func (c *cli) eventsCmd() *cobra.Command {
	var follow bool
	var typ, container, session, since, from string
	var limit int
	cmd := &cobra.Command{Use: "events [--follow] [--type PREFIX] [--container ID] [--session ID] [--since DURATION|TIME | --from SEQ|TIME] [--limit N]", Short: "Print events of the audit log",
		Long: "Print events of the audit log, oldest first, each with its sequence number in the events stream (first on the line;\n" +
			"\"streamseq\" with -o json): --from SEQ resumes after a reader's last one, --from TIME starts at a time.",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			f := client.EventFilter{Follow: follow, Type: typ, Container: container, Session: session}
			if from != "" {
				if since != "" {
					return fmt.Errorf("invalid: --from and --since: give one cursor")
				}
				if seq, err := strconv.ParseUint(from, 10, 64); err == nil && seq > 0 {
					f.From = seq
				} else if t, err := time.Parse(time.RFC3339Nano, from); err == nil {
					f.Since = t
				} else {
					return fmt.Errorf("invalid: --from %q: neither a sequence number (1 or more) nor a time (RFC 3339)", from)
				}
			}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				f.Since = t
			}
			if limit < 0 {
				return fmt.Errorf("invalid: --limit %d: must be 0 (no limit) or more", limit)
			}
			n := 0
			for e, err := range c.client().Events(cmd.Context(), f) {
				if err != nil {
					return err
				}
				if n++; limit > 0 && n > limit {
					return nil
				}
				if c.json() {
					if err := c.emit(e); err != nil {
						return err
					}
					continue
				}
				about := ""
				for _, ext := range []string{"containerid", "hostid"} {
					if v, ok := e.Extensions()[ext]; ok {
						about += fmt.Sprintf(" %s=%v", strings.TrimSuffix(ext, "id"), v)
					}
				}
				fmt.Fprintf(c.out, "%d  %s  %s%s\n", events.StreamSeq(e), e.Time().Format(time.RFC3339Nano), strings.TrimPrefix(e.Type(), "io.openagent."), about)
			}
			return nil
		}}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	f.StringVar(&typ, "type", "", "only types starting with PREFIX (e.g. container. or io.openagent.request.)")
	f.StringVar(&container, "container", "", "only this container's")
	f.StringVar(&session, "session", "", "only this session's")
	f.StringVar(&since, "since", "", "only events of the last DURATION (10m), or since TIME (RFC 3339)")
	f.StringVar(&from, "from", "", "start at this sequence number of the events stream (a reader's last plus one), or at TIME (RFC 3339)")
	f.IntVar(&limit, "limit", 0, "print at most N events, oldest first from --since")
	_ = cmd.RegisterFlagCompletionFunc("container", c.completeContainers)
	return cmd
}

// parseSince reads a duration back from now, or a time.
func parseSince(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("invalid: --since %s: a duration back from now must not be negative", s)
		}
		return time.Now().Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("invalid: --since %q is neither a duration (10m) nor a time (2026-12-01T10:00:00Z)", s)
}

func (c *cli) versionCmd() *cobra.Command {
	return &cobra.Command{Use: "version", Short: "Print the CLI's and the orchestrator's versions", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		server := "unreachable"
		if v, err := c.client().Version(cmd.Context()); err == nil {
			server = v
		}
		if c.json() {
			return c.emit(map[string]string{"client": version.Version, "server": server})
		}
		fmt.Fprintf(c.out, "client %s\nserver %s\n", version.Version, server)
		return nil
	}}
}
