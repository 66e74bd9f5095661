package main

import (
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/sessions"
)

func (c *cli) sessionCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Sandboxes for agents' code: create, exec, cp, extend, rm"}
	cmd.AddCommand(c.sessionCreateCmd(), c.sessionLsCmd(), c.sessionInspectCmd(), c.sessionRmCmd(), c.sessionExtendCmd(),
		c.sessionExecCmd(), c.sessionCpCmd())
	return cmd
}

func (c *cli) showSession(s *api.Session) error {
	if c.json() {
		return c.emit(s)
	}
	fmt.Fprintln(c.out, s.ID)
	return nil
}

func (c *cli) sessionCreateCmd() *cobra.Command {
	var req api.SessionRequest
	var timeout, idle time.Duration
	var labels, egress []string
	cmd := &cobra.Command{
		Use:   "create [--language L]... [--image I] [--driver D] [--cpu C] [--memory MB] [--timeout D] [--idle-timeout D] [--label K=V]... [--egress TO[:PORTS]]...",
		Short: "Create a session; prints its id once it takes code",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if req.Labels, err = keyValues("label", labels); err != nil {
				return err
			}
			if req.Egress, err = parseEgress(egress); err != nil {
				return err
			}
			if cmd.Flags().Changed("timeout") {
				ms := timeout.Milliseconds()
				req.TimeoutMs = &ms
			}
			if cmd.Flags().Changed("idle-timeout") {
				ms := idle.Milliseconds()
				req.IdleTimeoutMs = &ms
			}
			s, err := c.client().CreateSession(cmd.Context(), req)
			if err != nil {
				return err
			}
			return c.showSession(s)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&req.Languages, "language", nil, "python, javascript, bash, sh (repeatable; default python)")
	f.StringVar(&req.Image, "image", "", "image (default by driver and language: host for local, openagent/sandbox:python or :shell for docker)")
	f.StringVar(&req.Driver, "driver", "", "local, docker or fake (default local, docker for an image other than host)")
	f.Float64Var(&req.CPU, "cpu", 0, "cpu cores (default 0.5)")
	f.Int64Var(&req.MemoryMB, "memory", 0, "memory, MB (default 512)")
	f.DurationVar(&timeout, "timeout", 0, "time to live (default 30m; 0 is refused)")
	f.DurationVar(&idle, "idle-timeout", 0, "expire after this long without a run (default 10m; 0 turns it off)")
	f.StringArrayVar(&labels, "label", nil, "label K=V (repeatable)")
	egressFlag(f, &egress)
	return cmd
}

func (c *cli) sessionLsCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{Use: "ls [--all]", Short: "List live sessions, or with --all every one", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := c.client().Sessions(cmd.Context(), all)
			if err != nil {
				return err
			}
			if c.json() {
				return emitEach(c, list)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSTATUS\tLANGUAGES\tDRIVER\tIMAGE\tHOST\tEXPIRES")
			for _, s := range list {
				expires := "-" // an ended session counts down to nothing
				if s.Status == api.SessionReady || s.Status == api.SessionRequested {
					expires = time.Until(s.ExpiresAt).Round(time.Second).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Status, strings.Join(s.Languages, ","), s.Driver, s.Image, s.Host, expires)
			}
			return tw.Flush()
		}}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "ended sessions too")
	return cmd
}

func (c *cli) sessionInspectCmd() *cobra.Command {
	return &cobra.Command{Use: "inspect ID", Short: "Show a session", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		s, err := c.client().Session(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if c.json() {
			return c.emit(s)
		}
		return c.pretty(s)
	}}
}

func (c *cli) sessionRmCmd() *cobra.Command {
	return &cobra.Command{Use: "rm ID", Short: "Close a session; its sandbox is removed", Args: cobra.ExactArgs(1), RunE: func(cmd *cobra.Command, args []string) error {
		s, err := c.client().CloseSession(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		return c.showSession(s)
	}}
}

func (c *cli) sessionExtendCmd() *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{Use: "extend ID --timeout DURATION", Short: "Make a session expire DURATION from now", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("timeout") {
				return fmt.Errorf("invalid: extend needs --timeout")
			}
			s, err := c.client().ExtendSession(cmd.Context(), args[0], timeout)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(s)
			}
			fmt.Fprintf(c.out, "%s expires at %s\n", s.ID, s.ExpiresAt.Format(time.RFC3339))
			return nil
		}}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "the new time to live, from now")
	return cmd
}

func (c *cli) sessionExecCmd() *cobra.Command {
	var req api.RunCodeRequest
	var timeout time.Duration
	var code string
	cmd := &cobra.Command{Use: "exec [--language L] [--timeout DURATION] ID (--code CODE | -)", Short: "Run code in a session; prints its output and exits with its status",
		Args: cobra.RangeArgs(1, 2), RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 2 && args[1] == "-" && !cmd.Flags().Changed("code"):
				b, err := io.ReadAll(os.Stdin)
				if err != nil {
					return err
				}
				req.Code = string(b)
			case len(args) == 1 && cmd.Flags().Changed("code"):
				req.Code = code
			default:
				return fmt.Errorf("invalid: give the code with --code CODE or as - on stdin")
			}
			req.TimeoutMs = timeout.Milliseconds()
			var res *api.ExecResult
			var err error
			if c.json() {
				if res, err = c.client().RunCode(cmd.Context(), args[0], req); err != nil {
					return err
				}
				if err := c.emit(res); err != nil {
					return err
				}
			} else {
				// Output is printed as the code produces it.
				res, err = c.client().RunCodeStream(cmd.Context(), args[0], req, func(stream, data string) {
					if stream == "stderr" {
						fmt.Fprint(c.errOut, data)
					} else {
						fmt.Fprint(c.out, data)
					}
				})
				if err != nil {
					return err
				}
				if res.Truncated {
					fmt.Fprintf(c.errOut, "openagent: the output was cut at %d KiB per stream; the rest was not kept\n", events.MaxExecOutput>>10)
				}
				if res.TimedOut {
					if timeout == 0 {
						timeout = sessions.DefaultCodeTimeout
					}
					fmt.Fprintf(c.errOut, "openagent: timeout: the code ran past %s and was killed\n", timeout)
				}
			}
			return exitOf(res)
		}}
	f := cmd.Flags()
	f.StringVar(&req.Language, "language", "", "the language (default: the session's first)")
	f.DurationVar(&timeout, "timeout", 0, "kill the run after DURATION (default 30s; exit code 124)")
	f.StringVar(&code, "code", "", "the code to run")
	return cmd
}

func (c *cli) sessionCpCmd() *cobra.Command {
	return &cobra.Command{Use: "cp SRC DST", Short: "Copy a file into or out of a session's workspace; one side is SESSION_ID:PATH, the other a file, a directory or - (standard input or output)",
		Args: cobra.ExactArgs(2), RunE: func(cmd *cobra.Command, args []string) error {
			src, dst := args[0], args[1]
			sid, spath, fromSession := strings.Cut(src, ":")
			did, dpath, toSession := strings.Cut(dst, ":")
			switch {
			case fromSession == toSession:
				return fmt.Errorf("invalid: exactly one of SRC and DST is SESSION_ID:PATH")
			case toSession:
				var in io.Reader = os.Stdin
				if src != "-" {
					f, err := os.Open(src)
					if err != nil {
						return err
					}
					defer f.Close()
					in = f
					if dpath == "" || dpath == "." || strings.HasSuffix(dpath, "/") {
						dpath = path.Join(dpath, filepath.Base(src)) // into the directory
					}
				}
				_, err := c.client().WriteFileFrom(cmd.Context(), did, dpath, in)
				return err
			case dst == "-":
				_, err := c.client().ReadFileTo(cmd.Context(), sid, spath, c.out)
				return err
			}
			if fi, err := os.Stat(dst); err == nil && fi.IsDir() || dst == "." || strings.HasSuffix(dst, string(filepath.Separator)) {
				dst = filepath.Join(dst, path.Base(spath))
			}
			// Written beside the destination, then renamed: a copy cut short
			// never stands where the file should be.
			tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".part-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := c.client().ReadFileTo(cmd.Context(), sid, spath, tmp); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			_ = os.Chmod(tmp.Name(), 0o644)
			return os.Rename(tmp.Name(), dst)
		}}
}

func (c *cli) poolCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "pool", Short: "Warm pools: sandboxes kept ready for sessions"}
	var p api.Pool
	var egress []string
	set := &cobra.Command{Use: "set --image I --driver D --size N [--max N] [--cpu C] [--memory MB] [--egress TO[:PORTS]]...", Short: "Create or change a pool; size 0 empties it",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("size") {
				return fmt.Errorf("invalid: pool set needs --size")
			}
			var err error
			if p.Egress, err = parseEgress(egress); err != nil {
				return err
			}
			out, err := c.client().SetPool(cmd.Context(), p)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(out)
			}
			fmt.Fprintf(c.out, "%s %s: size %d, max %d\n", out.Driver, out.Image, out.Size, out.Max)
			return nil
		}}
	f := set.Flags()
	f.StringVar(&p.Image, "image", "", "image")
	f.StringVar(&p.Driver, "driver", "", "driver")
	f.IntVar(&p.Size, "size", 0, "sandboxes kept warm")
	f.IntVar(&p.Max, "max", 0, "the most the pool grows to under demand (default 2 × size)")
	f.Float64Var(&p.CPU, "cpu", 0, "cpu cores of each sandbox")
	f.Int64Var(&p.MemoryMB, "memory", 0, "memory of each sandbox, MB")
	egressFlag(f, &egress)
	var rmPool api.Pool
	var rmEgress []string
	rm := &cobra.Command{Use: "rm --image I --driver D [--cpu C] [--memory MB] [--egress TO[:PORTS]]...", Short: "Remove a pool and its warm sandboxes",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if rmPool.Egress, err = parseEgress(rmEgress); err != nil {
				return err
			}
			return c.client().RemovePool(cmd.Context(), rmPool)
		}}
	rf := rm.Flags()
	rf.StringVar(&rmPool.Image, "image", "", "image")
	rf.StringVar(&rmPool.Driver, "driver", "", "driver")
	rf.Float64Var(&rmPool.CPU, "cpu", 0, "cpu cores of each sandbox")
	rf.Int64Var(&rmPool.MemoryMB, "memory", 0, "memory of each sandbox, MB")
	egressFlag(rf, &rmEgress)
	_ = rm.RegisterFlagCompletionFunc("driver", completeDrivers)
	_ = set.RegisterFlagCompletionFunc("driver", completeDrivers)
	ls := &cobra.Command{Use: "ls", Short: "List pools", Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
		pools, err := c.client().Pools(cmd.Context())
		if err != nil {
			return err
		}
		if c.json() {
			return emitEach(c, pools)
		}
		tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "DRIVER\tIMAGE\tCPU\tMEMORY\tSIZE\tMAX\tTARGET\tWARM\tCREATING")
		for _, p := range pools {
			fmt.Fprintf(tw, "%s\t%s\t%g\t%d\t%d\t%d\t%d\t%d\t%d\n", p.Driver, p.Image, p.CPU, p.MemoryMB, p.Size, p.Max, p.Target, p.Warm, p.Creating)
		}
		return tw.Flush()
	}}
	cmd.AddCommand(set, ls, rm)
	return cmd
}
