package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/pkg/events"
)

func (c *cli) alertsCmd() *cobra.Command {
	var limit int
	cmd := &cobra.Command{Use: "alerts [--limit N]", Short: "List the alert rules, the alerts pending and firing, and the webhook deliveries",
		Long: "List the alert rules (CEL over containers' and hosts' figures, with a for-duration and a severity), the webhooks,\n" +
			"the alerts pending (holding for less than their for, as the leader sees them) and firing (as the events stream says),\n" +
			"and the latest webhook deliveries with their attempts. The rules come from the orchestrator's --alerts file.",
		Args: cobra.NoArgs, RunE: func(cmd *cobra.Command, args []string) error {
			a, err := c.client().Alerts(cmd.Context(), limit)
			if err != nil {
				return err
			}
			if c.json() {
				return c.emit(a)
			}
			tw := tabwriter.NewWriter(c.out, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "RULE\tON\tSEVERITY\tFOR\tACTIONS\tEXPR")
			for _, r := range a.Rules {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.On, r.Severity, r.For, strings.Join(r.Actions, ","), r.Expr)
			}
			for _, id := range slices.Sorted(maps.Keys(a.Errors)) {
				fmt.Fprintf(tw, "! %s\tfails to evaluate: %s\n", id, a.Errors[id])
			}
			fmt.Fprintln(tw, "\nALERT\tSTATE\tSEVERITY\tSINCE\tSUMMARY")
			for _, group := range []struct {
				state  string
				alerts []events.AlertData
			}{{"firing", a.Firing}, {"pending", a.Pending}} {
				for _, d := range group.alerts {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Alert, group.state, d.Severity, ago(d.Since), d.Summary)
				}
			}
			if len(a.Webhooks) > 0 {
				fmt.Fprintln(tw, "\nWEBHOOK\tBREAKER\tURL")
				for _, w := range a.Webhooks {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", w.Name, w.Breaker, w.URL)
				}
			}
			fmt.Fprintln(tw, "\nDELIVERY\tWEBHOOK\tALERT\tEVENT\tSTATE\tATTEMPTS\tLAST\tUPDATED")
			for _, d := range a.Deliveries {
				last := ""
				if n := len(d.Attempts); n > 0 {
					at := d.Attempts[n-1]
					last = at.Error
					if at.Status != 0 {
						last = strconv.Itoa(at.Status)
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, d.Webhook, d.Alert, events.Name(d.EventType), d.State, len(d.Attempts), last, ago(d.UpdatedAt))
			}
			return tw.Flush()
		}}
	cmd.Flags().IntVar(&limit, "limit", 20, "how many deliveries, newest first")
	return cmd
}
