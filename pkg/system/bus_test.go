package system_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// closedBus is the embedded default: NATS with the keys and credentials
// it makes on first start, and a worker that connects with its own
// host's credential.
func closedBus(t *testing.T) (*system.System, context.Context) {
	t.Helper()
	data := localRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	sys, err := system.Start(ctx, system.Config{DataDir: data, HTTPAddr: "127.0.0.1:0", Orchestrator: true, Worker: true,
		HostID: "bus-a", Drivers: []string{"fake"}, Capacity: api.Resources{CPU: 4, Memory: 8192, Pids: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	c := client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if hosts, err := c.Hosts(ctx); err == nil && len(hosts) == 1 && hosts[0].Live {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the embedded worker did not register on its credential")
		}
	}
	return sys, ctx
}

// violations records the permission errors the server sends a connection.
type violations struct {
	mu   sync.Mutex
	seen []string
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.seen = append(v.seen, err.Error())
}

// waitFor waits until the server refused something matching substr.
func (v *violations) waitFor(t *testing.T, substr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		v.mu.Lock()
		for _, s := range v.seen {
			if strings.Contains(s, "Permissions Violation") && strings.Contains(s, substr) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("the server did not refuse %s; it said %v", substr, v.seen)
}

// short is the context of an operation the server is to refuse: a request
// to a subject one may not publish to is never answered.
func short(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// requestMsg is a create request on the request door.
func requestMsg(t *testing.T, id string) *nats.Msg {
	t.Helper()
	req, err := events.New(events.ContainerCreateRequested, "/tests", fakeSpec(), events.WithID(id))
	if err != nil {
		t.Fatal(err)
	}
	msg, err := events.ToMsg(events.SubjectRequest, req)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func connectAs(t *testing.T, sys *system.System, credsFile string) (*nats.Conn, jetstream.JetStream, *violations) {
	t.Helper()
	v := &violations{}
	opts, err := creds.NATSOptions(credsFile)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(sys.NATSURL, append(opts, nats.ErrorHandler(v.handler))...)
	if err != nil {
		t.Fatalf("connect with %s: %v", filepath.Base(credsFile), err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js, v
}

// The embedded default makes its credentials with mode 0600 and takes no
// connection without one; its own worker works on its host's credential.
func TestClosedBusCredentials(t *testing.T) {
	sys, ctx := closedBus(t)
	for _, name := range []string{"admin", "orchestrator", "service", "auditor", "worker-bus-a"} {
		fi, err := os.Stat(filepath.Join(sys.Credentials, name+".creds"))
		if err != nil {
			t.Fatalf("no %s credential: %v", name, err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s.creds has mode %v; want 0600", name, fi.Mode().Perm())
		}
	}
	if _, err := nats.Connect(sys.NATSURL); err == nil {
		t.Fatal("an anonymous connection was taken")
	} else if !errors.Is(err, nats.ErrAuthorization) && !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("an anonymous connection failed with %v; want an authorization error", err)
	}

	// Everything a worker does, done on its credential: create, start, exec
	// with streamed output, logs, a session's code run.
	c := client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	spec := driver.DefaultConfig()
	spec.Image, spec.Command = "fake", []string{"fake", "--stdout", "hello", "--forever"}
	ct, err := c.Create(ctx, api.CreateRequest{Driver: "fake", Start: true, Spec: spec})
	if err != nil || ct.Status != api.StatusRunning {
		t.Fatalf("create on the closed bus: %+v, %v", ct, err)
	}
	res, err := c.Exec(ctx, ct.ID, api.ExecRequest{Command: []string{"fake", "--stdout", "out"}})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("exec: %+v, %v", res, err)
	}
	var lines []string
	for e, err := range c.Logs(ctx, ct.ID, client.LogOptions{}) {
		if err != nil {
			t.Fatalf("logs: %v", err)
		}
		lines = append(lines, e.Line)
	}
	if !strings.Contains(strings.Join(lines, "\n"), "hello") {
		t.Fatalf("logs %q; want hello", lines)
	}
	s, err := c.CreateSession(ctx, api.SessionRequest{Driver: "fake"})
	if err != nil {
		t.Fatalf("session: %v", err)
	}
	var streamed strings.Builder
	if _, err := c.RunCodeStream(ctx, s.ID, api.RunCodeRequest{Code: "streamed"}, func(_, data string) { streamed.WriteString(data) }); err != nil {
		t.Fatalf("run code: %v", err)
	}
	if !strings.Contains(streamed.String(), "streamed") {
		t.Fatalf("streamed output %q", streamed.String())
	}
	if err := c.Remove(ctx, ct.ID, true); err != nil {
		t.Fatalf("remove: %v", err)
	}
}

// What each role must not do, the server refuses.
func TestClosedBusRoles(t *testing.T) {
	sys, ctx := closedBus(t)
	auth := sys.Authority()
	issue := func(role events.Role, id string) string {
		t.Helper()
		path := filepath.Join(t.TempDir(), string(role)+id+".creds")
		if err := auth.WriteCreds(path, role, id); err != nil {
			t.Fatal(err)
		}
		return path
	}
	commands := func(t *testing.T) uint64 {
		s, err := sys.JS.Stream(ctx, events.StreamCommands)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	createCmd, err := events.New(events.CommandCreate, "/attacker", events.CreateCommandData{ContainerID: "evil", HostID: "bus-a", Driver: "fake",
		Spec: driver.DefaultConfig()}, events.WithHost("bus-a"), events.WithContainer("evil"))
	if err != nil {
		t.Fatal(err)
	}
	cmdMsg, err := events.ToMsg(events.CommandsRoot+".bus-a.command.container.create", createCmd)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("service", func(t *testing.T) {
		nc, js, v := connectAs(t, sys, filepath.Join(sys.Credentials, "service.creds"))
		before := commands(t)
		if err := nc.PublishMsg(cmdMsg); err != nil {
			t.Fatal(err)
		}
		v.waitFor(t, events.CommandsRoot)
		if after := commands(t); after != before {
			t.Fatalf("a service's command was stored (%d more)", after-before)
		}
		forged, _ := events.New(events.ContainerRemoved, "/attacker", events.RemovedData{ContainerID: "x", HostID: "bus-a"}, events.WithContainer("x"))
		fm, _ := events.ToMsg(events.EventsRoot+".container.x.container.removed", forged)
		_ = nc.PublishMsg(fm)
		v.waitFor(t, events.EventsRoot+".container.x")
		if err := js.DeleteStream(short(t), events.StreamEvents); err == nil {
			t.Fatal("a service deleted the events stream")
		}
		// What a service is for: a request, answered.
		req, _ := events.New(events.ContainerCreateRequested, "/tests/service", fakeSpec("--forever"), events.WithID("svc-1"))
		m, _ := events.ToMsg(events.SubjectRequest, req)
		reply, err := nc.RequestMsg(m, 10*time.Second)
		if err != nil {
			t.Fatalf("a service's request: %v", err)
		}
		if out, err := events.FromMsg(reply); err != nil || out.Type() != events.RequestAccepted {
			t.Fatalf("a service's request answered %v (%v)", out.Type(), err)
		}
		// Draining a host is the operator's: not on the requests stream,
		// not through the service's door.
		drain, _ := events.New(events.HostDrainRequested, "/tests/service", events.HostDrainRequestedData{HostID: "bus-a", Drain: true}, events.WithID("svc-drain"))
		dm, _ := events.ToMsg(events.RequestsRoot+".host.drain.requested", drain)
		_ = nc.PublishMsg(dm)
		v.waitFor(t, events.RequestsRoot+".host.drain.requested")
		dm, _ = events.ToMsg(events.SubjectRequest, drain)
		reply, err = nc.RequestMsg(dm, 10*time.Second)
		if err != nil {
			t.Fatalf("a service's drain: %v", err)
		}
		var rej events.RejectedData
		if out, err := events.FromMsg(reply); err != nil || out.Type() != events.RequestRejected || events.Data(out, &rej) != nil || rej.Error.Kind != api.KindPermission {
			t.Fatalf("a service's drain through its door answered %v %+v (%v); want it refused", out.Type(), rej, err)
		}
		if hosts := sys.Orchestrator.Hosts(); len(hosts) == 0 || !hosts[0].DrainingSince.IsZero() {
			t.Fatalf("hosts after a service's drains: %+v", hosts)
		}
	})

	t.Run("worker of another host", func(t *testing.T) {
		nc, js, v := connectAs(t, sys, issue(events.RoleWorker, "bus-b"))
		before := commands(t)
		_ = nc.PublishMsg(cmdMsg)
		v.waitFor(t, events.CommandsRoot)
		if after := commands(t); after != before {
			t.Fatal("a worker published a command")
		}
		if _, err := js.CreateOrUpdateConsumer(short(t), events.StreamCommands, events.WorkQueueConsumerConfig("worker-bus-a", events.CommandFilter("bus-a"))); err == nil {
			t.Fatal("a worker took another host's command consumer")
		}
		hb, _ := events.New(events.HostHeartbeat, "/attacker", events.HostHeartbeatData{HostID: "bus-a"}, events.WithHost("bus-a"))
		hm, _ := events.ToMsg(events.EventsRoot+".host.bus-a.host.heartbeat", hb)
		_ = nc.PublishMsg(hm)
		v.waitFor(t, events.EventsRoot+".host.bus-a")
		// Another host's samples, which the alert rules read.
		_ = nc.Publish(events.SamplesSubject("bus-a"), []byte(`{"samples":[{"containerId":"x","cpu":99,"memoryBytes":1,"at":"2026-12-01T00:00:00Z"}]}`))
		v.waitFor(t, events.SamplesSubject("bus-a"))
		kv, err := js.KeyValue(ctx, events.BucketHosts)
		if err != nil {
			t.Fatalf("a worker cannot open the hosts bucket: %v", err)
		}
		if _, err := kv.Put(short(t), "bus-a", []byte(`{}`)); err == nil {
			t.Fatal("a worker wrote another host's record")
		}
		if _, err := kv.Put(ctx, "bus-b", []byte(`{"id":"bus-b"}`)); err != nil {
			t.Fatalf("a worker cannot write its own host's record: %v", err)
		}
		for _, name := range []string{events.StreamEvents, events.StreamCommands, events.StreamRequests} {
			if err := js.DeleteStream(short(t), name); err == nil {
				t.Fatalf("a worker deleted %s", name)
			}
		}
		if _, err := js.CreateStream(short(t), jetstream.StreamConfig{Name: "EVIL", Subjects: []string{"evil.>"}}); err == nil {
			t.Fatal("a worker created a stream")
		}
	})

	t.Run("auditor", func(t *testing.T) {
		nc, js, v := connectAs(t, sys, filepath.Join(sys.Credentials, "auditor.creds"))
		cons, err := js.OrderedConsumer(ctx, events.StreamEvents, jetstream.OrderedConsumerConfig{})
		if err != nil {
			t.Fatalf("an auditor cannot read the events stream: %v", err)
		}
		if _, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil {
			t.Fatalf("an auditor read nothing: %v", err)
		}
		req, _ := events.New(events.ContainerCreateRequested, "/tests/auditor", fakeSpec(), events.WithID("aud-1"))
		m, _ := events.ToMsg(events.SubjectRequest, req)
		_ = nc.PublishMsg(m)
		v.waitFor(t, events.SubjectRequest)
	})

	t.Run("orchestrator", func(t *testing.T) {
		_, js, _ := connectAs(t, sys, filepath.Join(sys.Credentials, "orchestrator.creds"))
		if err := js.DeleteStream(short(t), events.StreamEvents); err == nil {
			t.Fatal("the orchestrator's credential deleted the audit log")
		}
		s, err := js.Stream(ctx, events.StreamEvents)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(short(t)); err == nil {
			t.Fatal("the orchestrator's credential purged the audit log")
		}
		cfg := s.CachedInfo().Config
		cfg.MaxAge = time.Minute
		if _, err := js.UpdateStream(short(t), cfg); err == nil {
			t.Fatal("the orchestrator's credential shortened the audit log's retention")
		}
	})

	t.Run("revoked", func(t *testing.T) {
		path := issue(events.RoleService, "")
		nc, _, _ := connectAs(t, sys, path)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := creds.User(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := auth.Revoke(tok); err != nil {
			t.Fatal(err)
		}
		if err := sys.Revoked(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for nc.IsConnected() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if nc.IsConnected() {
			t.Fatal("a revoked user stays connected")
		}
		if again, err := nats.Connect(sys.NATSURL, nats.UserCredentials(path)); err == nil {
			again.Close()
			t.Fatal("a revoked credential connected again")
		}
	})

	// Replies come back under each credential's own inbox, where no other
	// credential may listen.
	t.Run("inboxes", func(t *testing.T) {
		svc, _, _ := connectAs(t, sys, filepath.Join(sys.Credentials, "service.creds"))
		b, err := os.ReadFile(filepath.Join(sys.Credentials, "service.creds"))
		if err != nil {
			t.Fatal(err)
		}
		user, err := creds.User(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, spy := range []string{"auditor", "worker-bus-a"} {
			nc, _, v := connectAs(t, sys, filepath.Join(sys.Credentials, spy+".creds"))
			for _, subject := range []string{"_INBOX.>", events.InboxPrefix(user) + ".>"} {
				if _, err := nc.SubscribeSync(subject); err != nil {
					t.Fatal(err)
				}
				v.waitFor(t, subject)
			}
		}
		req, _ := events.New(events.ContainerCreateRequested, "/tests/service", fakeSpec("--forever"), events.WithID("svc-inbox"))
		m, _ := events.ToMsg(events.SubjectRequest, req)
		if _, err := svc.RequestMsg(m, 10*time.Second); err != nil {
			t.Fatalf("a service's request under its own inbox: %v", err)
		}
		// The shared inbox is not the service's either: a client that does
		// not use its credential's prefix hears nothing back.
		plain, err := nats.Connect(sys.NATSURL, nats.UserCredentials(filepath.Join(sys.Credentials, "service.creds")))
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		if _, err := plain.RequestMsg(m, time.Second); err == nil {
			t.Fatal("a request was answered on the shared _INBOX")
		}
	})

	// An agent talks on its session's subjects only.
	t.Run("agent", func(t *testing.T) {
		a1, _, _ := connectAs(t, sys, issue(events.RoleAgent, "s1"))
		a1b, _, _ := connectAs(t, sys, issue(events.RoleAgent, "s1"))
		sub, err := a1b.SubscribeSync(events.AgentsRoot + ".s1.inbox")
		if err != nil {
			t.Fatal(err)
		}
		a1b.Flush()
		if err := a1.Publish(events.AgentsRoot+".s1.inbox", []byte("hi")); err != nil {
			t.Fatal(err)
		}
		if msg, err := sub.NextMsg(5 * time.Second); err != nil || string(msg.Data) != "hi" {
			t.Fatalf("an agent's message to its own session: %v, %v", msg, err)
		}
		nc, _, v := connectAs(t, sys, issue(events.RoleAgent, "s1"))
		if _, err := nc.SubscribeSync(events.AgentsRoot + ".s2.>"); err != nil {
			t.Fatal(err)
		}
		v.waitFor(t, events.AgentsRoot+".s2")
		_ = nc.Publish(events.AgentsRoot+".s2.inbox", []byte("x"))
		v.waitFor(t, events.AgentsRoot+".s2.inbox")
		_ = nc.PublishMsg(requestMsg(t, "agent-1"))
		v.waitFor(t, events.SubjectRequest)
	})

	t.Run("admin", func(t *testing.T) {
		_, js, _ := connectAs(t, sys, filepath.Join(sys.Credentials, "admin.creds"))
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SCRATCH", Subjects: []string{"scratch.>"}}); err != nil {
			t.Fatalf("the admin cannot create a stream: %v", err)
		}
		if err := js.DeleteStream(ctx, "SCRATCH"); err != nil {
			t.Fatalf("the admin cannot delete a stream: %v", err)
		}
	})
}

// The HTTP API: no token, 401; X-OpenAgent-User is not trusted; a
// session is its creator's (403 to another, not to the admin); an auditor
// reads only; pools are the admin's; a revoked token stops working.
func TestHTTPTokens(t *testing.T) {
	sys, ctx := closedBus(t)
	tokens := sys.Tokens()
	mint := func(name string, role events.Role) string {
		t.Helper()
		tok, err := tokens.Create(api.Principal{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	alice, bob, audit := mint("alice", events.RoleService), mint("bob", events.RoleService), mint("audit", events.RoleAuditor)
	call := func(method, path, token string, header ...string) int {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, method, sys.HTTPURL+path, strings.NewReader("{}"))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusUnauthorized && resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s: 401 without WWW-Authenticate", method, path)
		}
		return resp.StatusCode
	}
	for _, tc := range []struct {
		what, method, path, token string
		header                    []string
		want                      int
	}{
		{"no token", "GET", "/v1/containers", "", nil, http.StatusUnauthorized},
		{"a made-up user header", "GET", "/v1/sessions", "", []string{"X-OpenAgent-User", "admin"}, http.StatusUnauthorized},
		{"a token never issued", "GET", "/v1/containers", "oat_00", nil, http.StatusUnauthorized},
		{"health, without a token", "GET", "/healthz", "", nil, http.StatusOK},
		{"an auditor reads", "GET", "/v1/containers", audit, nil, http.StatusOK},
		{"an auditor writes", "POST", "/v1/containers", audit, nil, http.StatusForbidden},
		{"a service sets a pool", "PUT", "/v1/pools", alice, nil, http.StatusForbidden},
	} {
		if got := call(tc.method, tc.path, tc.token, tc.header...); got != tc.want {
			t.Errorf("%s: %s %s answered %d; want %d", tc.what, tc.method, tc.path, got, tc.want)
		}
	}

	// alice's session, with a header claiming to be bob: it is alice's.
	ca := client.New(sys.HTTPURL, client.WithToken(alice))
	s, err := ca.CreateSession(ctx, api.SessionRequest{Driver: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Owner != "alice" {
		t.Fatalf("session owner %q; want alice", s.Owner)
	}
	cb := client.New(sys.HTTPURL, client.WithToken(bob))
	if _, err := cb.Session(ctx, s.ID); !errors.Is(err, driver.ErrPermission) {
		t.Fatalf("bob reads alice's session: %v; want a permission error", err)
	}
	if _, err := cb.RunCode(ctx, s.ID, api.RunCodeRequest{Code: "x"}); !errors.Is(err, driver.ErrPermission) {
		t.Fatalf("bob runs code in alice's session: %v; want a permission error", err)
	}
	if _, err := cb.CloseSession(ctx, s.ID); !errors.Is(err, driver.ErrPermission) {
		t.Fatalf("bob closes alice's session: %v; want a permission error", err)
	}
	if list, err := cb.Sessions(ctx, true); err != nil || len(list) != 0 {
		t.Fatalf("bob lists %d sessions (%v); want none of alice's", len(list), err)
	}
	admin := client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	if _, err := admin.Session(ctx, s.ID); err != nil {
		t.Fatalf("the admin reads alice's session: %v", err)
	}
	if _, err := ca.RunCode(ctx, s.ID, api.RunCodeRequest{Code: "mine"}); err != nil {
		t.Fatalf("alice runs code in her session: %v", err)
	}

	if n, err := tokens.Revoke("bob"); err != nil || n != 1 {
		t.Fatalf("revoke bob: %d, %v", n, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for call("GET", "/v1/containers", bob) != http.StatusUnauthorized {
		if time.Now().After(deadline) {
			t.Fatal("a revoked token still works")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A worker's events reach the audit log only through the orchestrator's
// checks: one host cannot remove another's container with a forged event,
// nor store garbage, nor write the events stream itself.
func TestForgedEventsAreRefused(t *testing.T) {
	sys, ctx := closedBus(t)
	c := client.New(sys.HTTPURL, client.WithToken(sys.AdminToken()))
	ct, err := c.Create(ctx, api.CreateRequest{Driver: "fake", Start: true, Spec: fakeSpec("--forever").Spec})
	if err != nil || ct.Status != api.StatusRunning {
		t.Fatalf("create and start: %+v, %v", ct, err)
	}
	path := filepath.Join(t.TempDir(), "bus-b.creds")
	if err := sys.Authority().WriteCreds(path, events.RoleWorker, "bus-b"); err != nil {
		t.Fatal(err)
	}
	nc, _, v := connectAs(t, sys, path)
	forge := func(host, subjectHost string) *nats.Msg {
		e, err := events.New(events.ContainerRemoved, "/openagent/hosts/"+host, events.RemovedData{ContainerID: ct.ID, HostID: host},
			events.WithHost(host), events.WithContainer(ct.ID))
		if err != nil {
			t.Fatal(err)
		}
		m, err := events.ToMsg(events.IngestSubject(subjectHost, events.EventsRoot+".container."+ct.ID+".container.removed"), e)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	// The events stream itself is closed to a worker.
	direct := forge("bus-b", "bus-b")
	direct.Subject = events.EventsRoot + ".container." + ct.ID + ".container.removed"
	_ = nc.PublishMsg(direct)
	v.waitFor(t, events.EventsRoot)
	// Its own subtree: about another host's container, as itself or as the
	// other host; and garbage.
	for _, m := range []*nats.Msg{forge("bus-b", "bus-b"), forge("bus-a", "bus-b"),
		{Subject: events.IngestRoot + ".bus-b.container.x.container.removed", Data: []byte("\x00garbage")}} {
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// Another host's subtree is closed to it.
	_ = nc.PublishMsg(forge("bus-a", "bus-a"))
	v.waitFor(t, events.IngestRoot+".bus-a")

	refused := func() int {
		n := 0
		for e, err := range c.Events(ctx, client.EventFilter{Type: "host.event.refused"}) {
			if err != nil {
				t.Fatal(err)
			}
			var d events.HostEventRefusedData
			if events.Data(e, &d) == nil && d.HostID == "bus-b" && events.Ext(e, events.ExtHostID) == "bus-b" {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(10 * time.Second)
	for refused() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d refusals reported; want 3", refused())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got, err := c.Get(ctx, ct.ID); err != nil || got.Status != api.StatusRunning {
		t.Fatalf("after the forgeries the container is %+v (%v); want running", got, err)
	}
	for e, err := range c.Events(ctx, client.EventFilter{Container: ct.ID}) {
		if err != nil {
			t.Fatal(err)
		}
		if e.Type() == events.ContainerRemoved {
			t.Fatalf("a forged removal is in the audit log: %s from %s", e.ID(), e.Source())
		}
	}
}
