package main

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/orchestrator/projection"
	"github.com/openagent/orchestrator/pkg/system"
)

// auditCmd verifies and exports the audit log: the events stream, whose
// hash chain the leader signs (package audit).
func (c *cli) auditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Verify and export the audit log"}
	var file, key string
	verify := &cobra.Command{Use: "verify [--file EXPORT] [--key ed25519:HEX]", Short: "Check the events stream, or an export of it, against the signed checkpoints of its hash chain",
		Long: "Fold the hash chain over the live events stream (or --file, an export) and hold each checkpoint against it.\n" +
			"Reports the first event changed, dropped, inserted or reordered, and exits 1; or what was verified.\n" +
			"The checkpoints must be signed by --key, by default the key in DATA/credentials/audit.key.pub when the\n" +
			"embedded default's data directory is here; without either, the key the checkpoints name is reported, not trusted.",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			v := &audit.Verifier{}
			if key == "" {
				if b, err := os.ReadFile(filepath.Join(system.DefaultDataDir(), "credentials", system.AuditKeyFile+".pub")); err == nil {
					key = strings.TrimSpace(string(b))
				}
			}
			if key != "" {
				pub, err := audit.ParseKey(key)
				if err != nil {
					return fmt.Errorf("invalid: --key: %w", err)
				}
				v.Trusted = pub
			}
			read := func(yield func(events.Event, error) bool) {
				for e, err := range c.client().Events(cmd.Context(), client.EventFilter{From: 1}) {
					if !yield(e, err) {
						return
					}
				}
			}
			if file != "" {
				read = func(yield func(events.Event, error) bool) { readExport(file, yield) }
			}
			for e, err := range read {
				if err != nil {
					return err
				}
				if !v.Add(e) {
					break
				}
			}
			return c.auditReport(v.Report(), v.Trusted)
		}}
	verify.Flags().StringVar(&file, "file", "", "an export (openagent audit export) instead of the live stream")
	verify.Flags().StringVar(&key, "key", "", "the public key the checkpoints must be signed by (ed25519:HEX, as audit.key.pub holds it)")

	var since, until, out string
	export := &cobra.Command{Use: "export [--since TIME] [--until TIME] -o FILE", Short: "Write the events stream, or a span of it, as JSON lines that audit verify --file checks",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			f := client.EventFilter{From: 1}
			if since != "" {
				t, err := parseSince(since)
				if err != nil {
					return err
				}
				f.From, f.Since = 0, t
			}
			var end time.Time
			if until != "" {
				t, err := parseSince(until)
				if err != nil {
					return fmt.Errorf("invalid: --until: %w", err)
				}
				end = t
			}
			if out == "" {
				return fmt.Errorf("invalid: -o: name the file to write (- for standard output)")
			}
			w := c.out
			if out != "-" {
				fh, err := os.OpenFile(out, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer fh.Close()
				w = fh
			}
			bw := bufio.NewWriter(w)
			n := 0
			for e, err := range c.client().Events(cmd.Context(), f) {
				if err != nil {
					return err
				}
				if !end.IsZero() && e.Time().After(end) {
					break
				}
				b, err := json.Marshal(e)
				if err != nil {
					return err
				}
				bw.Write(append(b, '\n'))
				n++
			}
			if err := bw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "exported %d events\n", n)
			return nil
		}}
	export.Flags().StringVar(&since, "since", "", "from this TIME (RFC 3339) or DURATION ago; default the start")
	export.Flags().StringVar(&until, "until", "", "up to this TIME (RFC 3339) or DURATION ago; default now")
	export.Flags().StringVarP(&out, "output", "o", "", "the file to write, - for standard output")
	var at string
	var all bool
	state := &cobra.Command{Use: "state [--at TIME] [--all]", Short: "Rebuild what existed at a time from the audit log, with the control plane's own fold",
		Long: "Fold the events stream's events up to --at (RFC 3339, or a DURATION ago; default now) with the projection the\n" +
			"orchestrator keeps, and print the containers as they then stood (--all: with those removed by then) and the hosts\n" +
			"lost or draining. What a superseded leader wrote after its successor's election is left out, as the control plane leaves it.",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			when := time.Now()
			if at != "" {
				t, err := parseSince(at)
				if err != nil {
					return fmt.Errorf("invalid: --at: %w", err)
				}
				when = t
			}
			m := projection.New()
			for e, err := range c.client().Events(cmd.Context(), client.EventFilter{From: 1}) {
				if err != nil {
					return err
				}
				if !e.Time().After(when) {
					projection.Apply(m, events.StreamSeq(e), e)
				}
			}
			var list []*projection.Record
			for _, r := range m.Containers {
				if all || r.Status != api.StatusRemoved {
					list = append(list, r)
				}
			}
			slices.SortFunc(list, func(a, b *projection.Record) int { return a.CreatedAt.Compare(b.CreatedAt) })
			if c.json() {
				for _, r := range list {
					if err := c.emit(r.Container); err != nil {
						return err
					}
				}
				return nil
			}
			fmt.Fprintf(c.out, "as of %s (events to %d):\n", when.UTC().Format(time.RFC3339), m.Seq)
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tIMAGE\tHOST\tSTATUS")
			for _, r := range list {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", short(r.ID), r.Name, r.Image, r.Host, r.Status)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			for _, h := range slices.Sorted(maps.Keys(m.LostHosts)) {
				fmt.Fprintf(c.out, "host %s lost since %s\n", h, m.LostHosts[h].UTC().Format(time.RFC3339))
			}
			for _, h := range slices.Sorted(maps.Keys(m.DrainingHosts)) {
				fmt.Fprintf(c.out, "host %s draining since %s\n", h, m.DrainingHosts[h].UTC().Format(time.RFC3339))
			}
			return nil
		}}
	state.Flags().StringVar(&at, "at", "", "the TIME (RFC 3339) or DURATION ago to rebuild; default now")
	state.Flags().BoolVar(&all, "all", false, "list the containers removed by then too")
	cmd.AddCommand(verify, export, state)
	return cmd
}

// readExport yields the events of an export, one JSON line each.
func readExport(path string, yield func(events.Event, error) bool) {
	f, err := os.Open(path)
	if err != nil {
		yield(events.Event{}, err)
		return
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for line := 1; ; line++ {
		b, err := r.ReadBytes('\n')
		if len(strings.TrimSpace(string(b))) > 0 {
			var e events.Event
			if jerr := json.Unmarshal(b, &e); jerr != nil {
				yield(events.Event{}, fmt.Errorf("invalid: %s line %d: not an event: %v", path, line, jerr))
				return
			}
			if !yield(e, nil) {
				return
			}
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			yield(events.Event{}, err)
			return
		}
	}
}

// auditReport prints what a verification found; a break, or nothing
// vouched for, is an error.
func (c *cli) auditReport(r audit.Report, trusted ed25519.PublicKey) error {
	if r.Problem != "" {
		return fmt.Errorf("audit: %s", r.Problem)
	}
	if r.Events == 0 {
		return fmt.Errorf("audit: no events to verify")
	}
	if r.Checkpoints == 0 {
		return fmt.Errorf("audit: %d events (%d to %d) and no checkpoint that vouches for them", r.Events, r.First, r.Last)
	}
	by := strings.Join(r.Keys, ", ")
	if trusted == nil {
		by += " (not trusted: pass --key to require it)"
	}
	fmt.Fprintf(c.out, "verified: events %d to %d, %d checkpoints hold, signed by %s\n", r.First, r.Verified, r.Checkpoints, by)
	if r.Unanchored > 0 {
		fmt.Fprintf(c.out, "  %d events before the first checkpoint this reading covers are not vouched for\n", r.Unanchored)
	}
	if n := r.Awaiting(); n > 0 {
		fmt.Fprintf(c.out, "  %d events after %d await the next checkpoint\n", n, r.Verified)
	}
	return nil
}
