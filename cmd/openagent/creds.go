package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/openagent/orchestrator/pkg/audit"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// credsCmd manages the bus's credentials with the keys the orchestrator
// keeps in its data directory: run it on the orchestrator's host, as the
// user the orchestrator runs as.
func (c *cli) credsCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:   "creds",
		Short: "Issue and revoke credentials for the bus (NATS), with the orchestrator's keys",
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", system.DefaultDataDir(), "the orchestrator's data directory, whose credentials/ holds the keys")
	authority := func() (*creds.Authority, error) {
		dir := filepath.Join(dataDir, "credentials")
		if _, err := os.Stat(filepath.Join(dir, "operator.nk")); err != nil {
			return nil, fmt.Errorf("no keys in %s: start the orchestrator once with --data-dir %s, or name its data directory with --data-dir", dir, dataDir)
		}
		return creds.Open(dir)
	}

	var role, host, name string
	issue := &cobra.Command{
		Use:   "issue --role ROLE [--host ID | --session ID]",
		Short: "Print a credential (.creds) for a role to standard output",
		Long: "Print a credential for a role: " + roleNames() + ". A worker's is for one host (--host), an agent's for one session (--session).\n" +
			"Keep it secret: write it to a file of mode 0600 on the machine that uses it, and pass it with --creds.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			auth, err := authority()
			if err != nil {
				return err
			}
			b, user, err := auth.Issue(events.Role(role), host, name)
			if err != nil {
				return fmt.Errorf("--role %s: %w", role, err)
			}
			if _, err = c.out.Write(b); err != nil {
				return err
			}
			// Replies come back only under the credential's own inbox.
			fmt.Fprintf(c.errOut, "user %s; its inbox prefix is %s (nats --inbox-prefix)\n", user, events.InboxPrefix(user))
			return nil
		},
	}
	issue.Flags().StringVar(&role, "role", "", "the role: "+roleNames())
	issue.Flags().StringVar(&host, "host", "", "the worker's host id")
	issue.Flags().StringVar(&host, "session", "", "the agent's session id")
	issue.Flags().StringVar(&name, "name", "", "whom it is for, kept in the credential")
	_ = issue.MarkFlagRequired("role")

	var file, user string
	revoke := &cobra.Command{
		Use:   "revoke (--file CREDS | --user PUBLIC-KEY)",
		Short: "Revoke a credential: it no longer connects, and its connections are closed",
		Long: "Revoke a credential. The embedded server applies it within seconds; for an external cluster, write the\n" +
			"server configuration again (openagent creds server-config) and reload the servers.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (file == "") == (user == "") {
				return fmt.Errorf("name the credential with exactly one of --file and --user")
			}
			if file != "" {
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				if user, err = creds.User(b); err != nil {
					return fmt.Errorf("--file %s: %w", file, err)
				}
			}
			auth, err := authority()
			if err != nil {
				return err
			}
			if err := auth.Revoke(user); err != nil {
				return err
			}
			fmt.Fprintf(c.errOut, "revoked %s\n", user)
			return nil
		},
	}
	revoke.Flags().StringVar(&file, "file", "", "the credential's .creds file")
	revoke.Flags().StringVar(&user, "user", "", "the user's public key (U...)")

	serverConfig := &cobra.Command{
		Use:   "server-config",
		Short: "Print the NATS server configuration that trusts these credentials, for an external server or cluster",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			auth, err := authority()
			if err != nil {
				return err
			}
			return auth.ServerConfig(c.out)
		},
	}
	var out string
	var workers []string
	initCmd := &cobra.Command{
		Use:   "init --out DIR [--worker HOST]...",
		Short: "Make the keys if there are none and write what a cluster needs: the servers' configuration and each role's credential",
		Long: "Make the bus's keys in the data directory if there are none, and write into --out what a deployment hands out:\n" +
			"nats/nats-auth.conf (include it in each NATS server's configuration), orchestrator.creds, admin.creds, service.creds,\n" +
			"auditor.creds and workers/HOST/worker.creds for each --worker; and, in the data directory, the HTTP API's admin.token\n" +
			"and the audit chain's signing key (audit.key, its public half audit.key.pub).\n" +
			"Run again, it keeps the keys and every credential that is still current: it is safe at every start.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return fmt.Errorf("--out: name the directory to write the configuration and credentials to")
			}
			dir := filepath.Join(dataDir, "credentials")
			auth, err := creds.Open(dir)
			if err != nil {
				return err
			}
			tokens, err := creds.OpenTokens(dir)
			if err != nil {
				return err
			}
			if err := tokens.EnsureAdminToken(filepath.Join(dir, "admin.token")); err != nil {
				return err
			}
			// The key that signs the audit chain, one for all the
			// orchestrators sharing these credentials.
			if _, err := audit.OpenKey(filepath.Join(dir, system.AuditKeyFile)); err != nil {
				return err
			}
			var conf strings.Builder
			if err := auth.ServerConfig(&conf); err != nil {
				return err
			}
			files := map[string]events.Role{"orchestrator.creds": events.RoleOrchestrator, "admin.creds": events.RoleAdmin,
				"service.creds": events.RoleService, "auditor.creds": events.RoleAuditor}
			for _, h := range workers {
				if h == "" || strings.ContainsAny(h, "/ .*>") {
					return fmt.Errorf("--worker %q: a host id is a name without '/', ' ', '.', '*' or '>'", h)
				}
			}
			if err := os.MkdirAll(filepath.Join(out, "nats"), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(out, "nats", "nats-auth.conf"), []byte(conf.String()), 0o644); err != nil {
				return err
			}
			for name, role := range files {
				if err := auth.WriteCreds(filepath.Join(out, name), role, ""); err != nil {
					return err
				}
			}
			for _, h := range workers {
				d := filepath.Join(out, "workers", h)
				if err := os.MkdirAll(d, 0o700); err != nil {
					return err
				}
				if err := auth.WriteCreds(filepath.Join(d, "worker.creds"), events.RoleWorker, h); err != nil {
					return err
				}
			}
			fmt.Fprintf(c.errOut, "wrote the servers' configuration and %d credentials to %s\n", len(files)+len(workers), out)
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "the directory to write nats/nats-auth.conf and the credentials to")
	initCmd.Flags().StringArrayVar(&workers, "worker", nil, "a worker's host id; repeat for each")
	cmd.AddCommand(initCmd, issue, revoke, serverConfig)
	return cmd
}

func roleNames() string {
	var names []string
	for _, r := range events.Roles {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}

// tokenCmd manages the HTTP API's bearer tokens, kept beside the bus's
// keys in the orchestrator's data directory.
func (c *cli) tokenCmd() *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{Use: "token", Short: "Create and revoke the HTTP API's bearer tokens"}
	cmd.PersistentFlags().StringVar(&dataDir, "data-dir", system.DefaultDataDir(), "the orchestrator's data directory, whose credentials/ holds the tokens")
	store := func() (*creds.Tokens, error) {
		dir := filepath.Join(dataDir, "credentials")
		if _, err := os.Stat(dir); err != nil {
			return nil, fmt.Errorf("no credentials in %s: start the orchestrator once with --data-dir %s, or name its data directory with --data-dir", dir, dataDir)
		}
		return creds.OpenTokens(dir)
	}
	var role, name string
	create := &cobra.Command{
		Use:   "create --role ROLE --name NAME",
		Short: "Print a new token: admin, service (sessions are their creator's) or auditor (reads only)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tokens, err := store()
			if err != nil {
				return err
			}
			t, err := tokens.Create(creds.Principal{Name: name, Role: events.Role(role)})
			if err != nil {
				return err
			}
			fmt.Fprintln(c.out, t)
			return nil
		},
	}
	create.Flags().StringVar(&role, "role", "service", "admin, service or auditor")
	create.Flags().StringVar(&name, "name", "", "the principal the token names: who owns the sessions it creates")
	_ = create.MarkFlagRequired("name")
	revoke := &cobra.Command{
		Use:   "revoke --name NAME",
		Short: "Revoke every token of a principal; the API refuses them within a second",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			tokens, err := store()
			if err != nil {
				return err
			}
			n, err := tokens.Revoke(name)
			if err != nil {
				return err
			}
			if n == 0 {
				return fmt.Errorf("no token names %q", name)
			}
			fmt.Fprintf(c.errOut, "revoked %d token(s) of %s\n", n, name)
			return nil
		},
	}
	revoke.Flags().StringVar(&name, "name", "", "the principal whose tokens to revoke")
	_ = revoke.MarkFlagRequired("name")
	cmd.AddCommand(create, revoke)
	return cmd
}
