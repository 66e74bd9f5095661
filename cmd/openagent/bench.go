package main

import (
	"fmt"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/exec"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/internal/bench"
	"github.com/openagent/orchestrator/pkg/driver/docker"
	"github.com/openagent/orchestrator/pkg/system"
)

func (c *cli) benchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Measure the system"}
	var cfg bench.LifecycleConfig
	var sync string
	var rounds int
	lifecycle := &cobra.Command{
		Use:   "lifecycle [--embedded] [--hosts N] [--clients C] [--requests N] [--sync always|interval] [--telemetry default|off|on|compare]",
		Short: "Request → running latency and throughput through the bus, with bare-bus baselines of the same run",
		Long: `Request → running latency and throughput through the bus, with bare-bus baselines of the same run.

With --embedded, --telemetry says what the system measures itself with: default (its metrics,
no tracing), off (neither), on (metrics, and every span exported by OTLP to a receiver in this
process), or compare: off, default and on taking turns for --rounds rounds, with each mode's
figures pooled and their ratios to off.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			switch sync {
			case "interval":
			case "always":
				cfg.SyncAlways = true
			default:
				return fmt.Errorf("invalid: --sync must be always or interval, not %q", sync)
			}
			if cfg.Telemetry == "compare" {
				return c.benchTelemetry(cmd, cfg, rounds)
			}
			if cfg.Telemetry != bench.TelemetryDefault && !cfg.Embedded {
				return fmt.Errorf("invalid: --telemetry %s needs --embedded: a running system's telemetry is its own", cfg.Telemetry)
			}
			res, err := bench.Lifecycle(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(res)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "requests\t%d (%d clients, %d hosts, sync %s, %d errors)\n", res.Requests, res.Clients, res.Hosts, res.Sync, res.Errors)
			fmt.Fprintf(tw, "request → running\tp50 %.3f ms\tp90 %.3f ms\tp99 %.3f ms\n", res.LatencyP50, res.LatencyP90, res.LatencyP99)
			fmt.Fprintf(tw, "throughput\t%.0f starts/s\n", res.Throughput)
			fmt.Fprintf(tw, "baseline JetStream publish\tp50 %.3f ms\tp99 %.3f ms\n", res.BaselineJSPublish, res.BaselineJSPublish99)
			fmt.Fprintf(tw, "baseline request/reply\tp50 %.3f ms\tp99 %.3f ms\n", res.BaselineReqReply, res.BaselineReqReply99)
			return tw.Flush()
		},
	}
	f := lifecycle.Flags()
	f.BoolVar(&cfg.Embedded, "embedded", false, "start a system in this process with --hosts simulated hosts (fake driver)")
	f.StringVar(&cfg.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS of a running system (without --embedded)")
	f.StringVar(&cfg.CredsFile, "creds", "", "a credential for that NATS (the embedded default writes DATA/credentials/admin.creds)")
	f.IntVar(&cfg.Hosts, "hosts", 100, "simulated hosts (with --embedded)")
	f.IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	f.IntVar(&cfg.Requests, "requests", 10000, "container starts in all")
	f.StringVar(&sync, "sync", "interval", "the embedded server's fsync: always or interval")
	f.StringVar(&cfg.Telemetry, "telemetry", bench.TelemetryDefault, "the embedded system's telemetry: default, off, on or compare")
	f.IntVar(&rounds, "rounds", 3, "with --telemetry compare: the rounds of off, default and on")
	cmd.AddCommand(lifecycle, c.benchMemoryCmd(), benchOrchestratorCmd(), c.benchDockerCmd(), c.benchSessionCmd(), c.benchScheduleCmd(), c.benchFleetCmd())
	return cmd
}

// benchTelemetry runs and prints a comparison of the telemetry modes.
func (c *cli) benchTelemetry(cmd *cobra.Command, cfg bench.LifecycleConfig, rounds int) error {
	res, err := bench.LifecycleTelemetry(cmd.Context(), cfg, rounds)
	if err != nil {
		return err
	}
	if c.json() {
		return c.emit(res)
	}
	tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "telemetry\trequests\terrors\tp50 ms\tp99 ms\tstarts/s\tp50 ×off\tp99 ×off\tstarts/s ×off\tspans exported\n")
	for _, mode := range bench.TelemetryModes {
		m, r := res.Modes[mode], res.Ratios[mode]
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.0f\t%.3f\t%.3f\t%.3f\t%d requests, %d KiB\n", mode, m.Requests, m.Errors,
			m.LatencyP50, m.LatencyP99, m.Throughput, r.P50, r.P99, r.Throughput, m.SpanExports, m.SpanBytes/1024)
	}
	fmt.Fprintf(tw, "(%d rounds of %d requests each, %d clients, %d hosts; latencies pooled, throughput the median)\n", res.Rounds, cfg.Requests, cfg.Clients, cfg.Hosts)
	return tw.Flush()
}

func (c *cli) benchFleetCmd() *cobra.Command {
	var cfg bench.FleetConfig
	cmd := &cobra.Command{
		Use:   "fleet [--hosts N] [--containers N] [--clients C]",
		Short: "A system in this process with N simulated hosts (fake driver), starting M containers: placements/s, time until all run, memory, cpu, heartbeat load",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := bench.Fleet(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(res)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "fleet\t%d hosts, live after %.1f s\n", res.Hosts, res.RegisterSeconds)
			fmt.Fprintf(tw, "containers\t%d (%d errors), all running after %.1f s\n", res.Containers, res.Errors, res.AllRunningSec)
			fmt.Fprintf(tw, "placements\t%.0f/s\trequest → running p50 %.1f ms, p99 %.1f ms\n", res.PlacementsPerSec, res.LatencyP50, res.LatencyP99)
			fmt.Fprintf(tw, "process\t%.0f MB resident at peak\t%.1f cpu-s (%.2f cores)\n", res.RSSMB, res.CPUSeconds, res.CPUCores)
			fmt.Fprintf(tw, "heartbeats\t%.0f/s\t%.0f KB/s\n", res.HeartbeatsPerSec, res.HeartbeatBytes/1024)
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 1000, "simulated hosts")
	f.IntVar(&cfg.Containers, "containers", 50000, "containers started")
	f.IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	return cmd
}

func (c *cli) benchScheduleCmd() *cobra.Command {
	var cfg bench.ScheduleConfig
	cmd := &cobra.Command{
		Use:   "schedule [--hosts N] [--placements N] [--sample K]",
		Short: "Placements per second over N hosts on one core, sampled and exhaustive, and what sampling costs in how full the fleet gets",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Hosts < 1 {
				return fmt.Errorf("invalid: --hosts %d: at least one", cfg.Hosts)
			}
			res := bench.Schedule(cfg)
			if c.json() {
				return c.emit(res)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "hosts\t%d (best of %d fit hosts)\n", res.Hosts, res.Sample)
			fmt.Fprintf(tw, "sampled\t%.0f placements/s\tp50 %.2f µs\tp99 %.2f µs\n", res.PerSecond, res.P50, res.P99)
			fmt.Fprintf(tw, "every host\t%.0f placements/s\tp50 %.2f µs\tp99 %.2f µs\n", res.ExhaustivePerSecond, res.ExhaustiveP50, res.ExhaustiveP99)
			for _, f := range []struct {
				name string
				f    bench.Fill
			}{{"fill, sampled", res.Sampled}, {"fill, every host", res.Exhaustive}} {
				fmt.Fprintf(tw, "%s\t%d placed before the first refusal\t%d hosts used\t%.2f%% of cpu left free\n", f.name, f.f.Placed, f.f.HostsUsed, 100*f.f.FreeCPU)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	f.IntVar(&cfg.Hosts, "hosts", 1000, "hosts in the fleet")
	f.IntVar(&cfg.Placements, "placements", 100000, "placements timed")
	f.IntVar(&cfg.Sample, "sample", 0, "fit hosts weighed per placement (default the scheduler's)")
	return cmd
}

func (c *cli) benchMemoryCmd() *cobra.Command {
	var cfg bench.MemoryConfig
	var pprofAddr string
	cmd := &cobra.Command{
		Use:   "memory [--containers N] [--hosts N]",
		Short: "The orchestrator's resident memory while it tracks N containers (it runs as its own process)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			self, err := os.Executable()
			if err != nil {
				return err
			}
			cfg.Orchestrator = func(natsURL, credsFile string) *exec.Cmd {
				return exec.Command(self, "bench", "orchestrator", "--nats-url", natsURL, "--creds", credsFile, "--pprof", pprofAddr)
			}
			res, err := bench.Memory(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(res)
			}
			fmt.Fprintf(c.out, "orchestrator RSS: %.1f MB idle, %.1f MB tracking %d containers (%.0f creates/s, %d errors)\n",
				res.IdleRSSMB, res.RSSMB, res.Containers, res.CreatePerS, res.Errors)
			return nil
		},
	}
	cmd.Flags().IntVar(&cfg.Containers, "containers", 100000, "containers to track")
	cmd.Flags().IntVar(&cfg.Hosts, "hosts", 10, "simulated hosts (fake driver)")
	cmd.Flags().IntVar(&cfg.Clients, "clients", 64, "concurrent clients")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "have the orchestrator serve net/http/pprof on this address")
	return cmd
}

// benchOrchestratorCmd runs an orchestrator alone, for bench memory.
func benchOrchestratorCmd() *cobra.Command {
	var natsURL, credsFile, pprofAddr string
	cmd := &cobra.Command{
		Use:    "orchestrator --nats-url URL --creds FILE",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if pprofAddr != "" {
				go http.ListenAndServe(pprofAddr, nil) // net/http/pprof's handlers
			}
			sys, err := system.Start(cmd.Context(), system.Config{NATSURL: natsURL, CredsFile: credsFile, Orchestrator: true})
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			return sys.Stop()
		},
	}
	cmd.Flags().StringVar(&natsURL, "nats-url", "", "NATS server")
	cmd.Flags().StringVar(&credsFile, "creds", "", "the orchestrator's credential")
	cmd.Flags().StringVar(&pprofAddr, "pprof", "", "serve net/http/pprof on this address, to profile")
	return cmd
}

func (c *cli) benchDockerCmd() *cobra.Command {
	var cfg bench.DockerConfig
	cmd := &cobra.Command{
		Use:   "docker [--image IMAGE] [--runs N]",
		Short: "The lifecycle create, start, exec true, stop, remove: direct engine calls, the driver, and the whole system, in one run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Runs <= 0 {
				return fmt.Errorf("invalid: --runs must be positive")
			}
			res, err := bench.Docker(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(res)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "medians, ms (%d runs of %s)\tcreate\tstart\texec\tstop\tremove\tlifecycle p50\tp99\n", res.Runs, res.Image)
			for _, r := range []struct {
				name string
				s    bench.Steps
			}{{"direct engine calls", res.Direct}, {"driver", res.Driver}, {"whole system", res.System}} {
				fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\n", r.name, r.s.Create, r.s.Start, r.s.Exec, r.s.Stop, r.s.Remove, r.s.Lifecycle, r.s.P99)
			}
			fmt.Fprintf(tw, "driver/direct %.2f, system/direct %.2f\n", res.DriverOverDirect, res.SystemOverDirect)
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&cfg.Image, "image", "openagent/sandbox:shell", "image to run")
	cmd.Flags().IntVar(&cfg.Runs, "runs", 20, "lifecycles of each kind")
	return cmd
}

func (c *cli) imagesCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "images [--force]",
		Short: "Build the sandbox images (openagent/sandbox:shell and :python) on this host's Docker Engine, from this host's files",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := docker.New(cmd.Context(), docker.Config{})
			if err != nil {
				return err
			}
			defer d.Close()
			if !force {
				return docker.EnsureImages(cmd.Context(), d.Client(), c.out)
			}
			for _, img := range []string{docker.ImageShell, docker.ImagePython} {
				if err := docker.BuildImage(cmd.Context(), d.Client(), img, c.out); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "build even the images that exist")
	return cmd
}

func (c *cli) benchSessionCmd() *cobra.Command {
	var cfg bench.SessionConfig
	cmd := &cobra.Command{
		Use:   "session [--embedded] [--driver D] [--warm N] [--runs N]",
		Short: "Session create → ready, cold and from a warm pool, and print(1) in Python, in one run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.Server, cfg.Token = c.server, c.token()
			res, err := bench.Session(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(res)
			}
			fmt.Fprintf(c.out, "%s (%s), %d runs: ready cold p50 %.1f ms p99 %.1f; warm p50 %.1f ms p99 %.1f; print(1) p50 %.1f ms p99 %.1f\n",
				res.Driver, res.Image, res.Runs, res.ColdReady, res.ColdReady99, res.WarmReady, res.WarmReady99, res.Exec, res.Exec99)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&cfg.Embedded, "embedded", false, "start a system in this process (else use --server)")
	f.StringVar(&cfg.Driver, "driver", "local", "local or docker")
	f.IntVar(&cfg.Warm, "warm", 2, "the warm pool's size")
	f.IntVar(&cfg.Runs, "runs", 20, "measurements of each kind")
	return cmd
}
