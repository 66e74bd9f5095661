// Command openagent is the CLI of OpenAgent, built on the Go SDK
// (pkg/client) against the orchestrator's HTTP API.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/system"
)

// exitError ends the CLI with a code and no message of its own (exec
// passes on its command's exit code).
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// The embedded benchmarks run the local driver, whose shims are this
	// program re-executed.
	local.MaybeRunShim()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot(os.Stdout, os.Stderr).ExecuteContext(ctx)
	stop()
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		os.Exit(ee.code)
	case err != nil:
		fmt.Fprintln(os.Stderr, "openagent: "+describe(err))
		os.Exit(1)
	}
}

// describe renders an error as one line naming its kind and the id or
// field concerned.
func describe(err error) string {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return err.Error()
	}
	kind := api.Info(ce.Kind).Text
	msg := kind + ": " + ce.Message
	switch {
	case ce.Field != "" && !strings.Contains(ce.Message, ce.Field):
		msg += " (field " + ce.Field + ")"
	case ce.Field == "" && ce.ID != "" && !strings.Contains(ce.Message, ce.ID):
		msg += " (id " + ce.ID + ")"
	}
	return msg
}

type cli struct {
	server string
	tok    string
	tlsCA  string
	output string
	out    io.Writer
	errOut io.Writer
}

func (c *cli) client() *client.Client {
	opts := []client.Option{client.WithToken(c.token())}
	if c.tlsCA != "" {
		// Read when a command runs: a bad file is that command's error.
		if pem, err := os.ReadFile(c.tlsCA); err == nil {
			pool := x509.NewCertPool()
			if pool.AppendCertsFromPEM(pem) {
				opts = append(opts, client.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}))
			} else {
				fmt.Fprintf(c.errOut, "openagent: --tls-ca %s holds no PEM certificate\n", c.tlsCA)
			}
		} else {
			fmt.Fprintf(c.errOut, "openagent: --tls-ca: %v\n", err)
		}
	}
	return client.New(c.server, opts...)
}

// token is the HTTP API's token: --token, else $OPENAGENT_TOKEN, else the
// admin token the embedded default wrote in its data directory, when this
// user can read it.
func (c *cli) token() string {
	if c.tok != "" {
		return c.tok
	}
	if t := os.Getenv("OPENAGENT_TOKEN"); t != "" {
		return t
	}
	b, err := os.ReadFile(filepath.Join(system.DefaultDataDir(), "credentials", "admin.token"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func (c *cli) json() bool { return c.output == "json" }

// emit writes one JSON object on a line.
func (c *cli) emit(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.out, "%s\n", b)
	return err
}

// exitOf passes a command's ending on as the CLI's: 124 for a timeout (as
// timeout(1) does), else its exit code.
func exitOf(res *api.ExecResult) error {
	switch {
	case res.TimedOut:
		return &exitError{code: 124}
	case res.ExitCode != 0:
		return &exitError{code: res.ExitCode}
	}
	return nil
}

// emitEach writes each item as a JSON object on a line.
func emitEach[T any](c *cli, items []T) error {
	for _, it := range items {
		if err := c.emit(it); err != nil {
			return err
		}
	}
	return nil
}

func newRoot(out, errOut io.Writer) *cobra.Command {
	c := &cli{out: out, errOut: errOut}
	root := &cobra.Command{
		Use:           "openagent",
		Short:         "Run and manage agent sandboxes on an OpenAgent orchestrator",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if c.output != "table" && c.output != "json" {
				return fmt.Errorf("invalid: -o must be table or json, not %q", c.output)
			}
			return nil
		},
	}
	server := os.Getenv("OPENAGENT_SERVER")
	if server == "" {
		server = client.DefaultServer
	}
	root.PersistentFlags().StringVar(&c.server, "server", server, "orchestrator URL (env OPENAGENT_SERVER)")
	root.PersistentFlags().StringVar(&c.tlsCA, "tls-ca", os.Getenv("OPENAGENT_TLS_CA"), "the authorities (PEM) to trust for an https server (env OPENAGENT_TLS_CA)")
	root.PersistentFlags().StringVar(&c.tok, "token", "", "the HTTP API's bearer token (env OPENAGENT_TOKEN; default: the embedded default's admin.token)")
	root.PersistentFlags().StringVarP(&c.output, "output", "o", "table", "output: table or json (one object per line)")
	root.AddCommand(c.runCmd(true), c.runCmd(false), c.startCmd(), c.stopCmd(), c.rmCmd(), c.psCmd(), c.inspectCmd(),
		c.logsCmd(), c.execCmd(), c.hostsCmd(), c.eventsCmd(), c.versionCmd(), c.benchCmd(), c.imagesCmd(), c.sessionCmd(), c.poolCmd(), c.credsCmd(), c.tokenCmd(), c.auditCmd(), c.alertsCmd())
	return root
}
