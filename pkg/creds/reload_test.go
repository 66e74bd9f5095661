package creds

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/events"
)

// An external server trusting the server configuration refuses a revoked
// credential once the configuration is written again and the server
// reloads it, the way the operations guide rotates a credential: the keys
// opened again (another process, another day) write a configuration the
// reload takes, the operator unchanged.
func TestRevocationReachesAnExternalServerOnReload(t *testing.T) {
	dir, conf := t.TempDir(), t.TempDir()
	a, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	auth := filepath.Join(conf, "auth.conf")
	writeConf := func(a *Authority) {
		t.Helper()
		f, err := os.Create(auth)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := a.ServerConfig(f); err != nil {
			t.Fatal(err)
		}
	}
	writeConf(a)
	main := filepath.Join(conf, "nats.conf")
	if err := os.WriteFile(main, []byte(fmt.Sprintf("listen: 127.0.0.1:-1\njetstream { store_dir: %q }\ninclude auth.conf\n", filepath.Join(conf, "js"))), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(main)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Shutdown()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("the server did not start")
	}
	creds := filepath.Join(t.TempDir(), "worker.creds")
	if err := a.WriteCreds(creds, events.RoleWorker, "w-1"); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds), nats.MaxReconnects(0))
	if err != nil {
		t.Fatalf("the credential does not connect: %v", err)
	}
	defer nc.Close()

	b, _ := os.ReadFile(creds)
	user, err := User(b)
	if err != nil {
		t.Fatal(err)
	}
	// Another second: a JWT signed again would carry another issue time.
	time.Sleep(1100 * time.Millisecond)
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.operatorJWT != a.operatorJWT || again.systemJWT != a.systemJWT {
		t.Fatal("the keys opened again signed a new operator or system account")
	}
	if err := again.Revoke(user); err != nil {
		t.Fatal(err)
	}
	writeConf(again)
	if err := s.Reload(); err != nil {
		t.Fatalf("the server refuses the configuration written after a revocation: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for nc.IsConnected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if nc.IsConnected() {
		t.Fatal("the revoked credential stays connected after the reload")
	}
	if c, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds)); err == nil {
		c.Close()
		t.Fatal("the revoked credential connects after the reload")
	}
	// Written again (creds init at the next start), the revoked credential
	// is replaced by one that connects.
	if err := again.WriteCreds(creds, events.RoleWorker, "w-1"); err != nil {
		t.Fatal(err)
	}
	c, err := nats.Connect(s.ClientURL(), nats.UserCredentials(creds))
	if err != nil {
		t.Fatalf("the credential written after the revocation does not connect: %v", err)
	}
	c.Close()
}
