package system_test

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/system"
)

// role reads an orchestrator's role from its health.
func role(t *testing.T, url string) (role, leader string) {
	t.Helper()
	resp, err := http.Get(url + "/healthz")
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var h struct{ Role, Leader string }
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h.Role, h.Leader
}

// Two orchestrators on one bus: one leads, the other follows. The
// follower answers reads from its own projection and hands container
// requests to the leader; sessions it refuses, naming the leader. When
// the leader stops, the follower takes over within the lease, and what
// the first placed is still there.
func TestTwoOrchestrators(t *testing.T) {
	e := newEnv(t)
	b, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, HTTPAddr: "127.0.0.1:0", TokensDir: e.tokens, ID: "orch-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop() })
	cb := client.New(b.HTTPURL, client.WithToken(b.AdminToken()))
	if r, _ := role(t, e.sys.HTTPURL); r != "leader" {
		t.Fatalf("the first orchestrator is %q, want the leader", r)
	}
	if r, l := role(t, b.HTTPURL); r != "follower" || l != e.sys.Orchestrator.ID() {
		t.Fatalf("the second orchestrator is %q following %q, want a follower of %s", r, l, e.sys.Orchestrator.ID())
	}

	// A create through the follower is carried out by the leader.
	req := fakeSpec("--forever")
	req.Start, req.Name = true, "through-follower"
	c, err := cb.Create(e.ctx, req)
	if err != nil {
		t.Fatalf("create through the follower: %v", err)
	}
	if c.Status != api.StatusRunning {
		t.Fatalf("created through the follower: %s, want running", c.Status)
	}
	if got, err := e.c.Get(e.ctx, c.ID); err != nil || got.Host != c.Host {
		t.Fatalf("the leader does not know the container the follower created: %v %v", got, err)
	}

	// Sessions are the leader's: the follower says where it is.
	code, hdr, body := callURL(t, b, "POST", "/v1/sessions", `{"driver":"fake"}`)
	if code != http.StatusServiceUnavailable || hdr.Get("OpenAgent-Leader") != e.sys.HTTPURL || !strings.Contains(string(body), e.sys.Orchestrator.ID()) {
		t.Fatalf("a session on the follower: %d %q %s; want 503 naming the leader at %s", code, hdr.Get("OpenAgent-Leader"), body, e.sys.HTTPURL)
	}

	// The leader goes away; the follower takes over.
	stopped := time.Now()
	e.sys.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if r, _ := role(t, b.HTTPURL); r == "leader" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the follower did not take over within 10s of the leader's stop")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the follower leads %v after the leader stopped", time.Since(stopped).Round(time.Millisecond))
	if got, err := cb.Get(e.ctx, c.ID); err != nil || got.Status != api.StatusRunning {
		t.Fatalf("after the failover the container is %v (%v), want running", got, err)
	}
	req.Name = "after-failover"
	if c2, err := cb.Create(e.ctx, req); err != nil || c2.Status != api.StatusRunning {
		t.Fatalf("create after the failover: %v %v", c2, err)
	}
	sess, err := cb.CreateSession(e.ctx, api.SessionRequest{Driver: "fake"})
	if err != nil {
		t.Fatalf("a session on the new leader: %v", err)
	}
	if _, err := cb.CloseSession(e.ctx, sess.ID); err != nil {
		t.Fatal(err)
	}
	// The name is taken once, whoever led when it was.
	req.Name = "through-follower"
	if _, err := cb.Create(e.ctx, req); !errors.Is(err, driver.ErrConflict) {
		t.Fatalf("a name used under the former leader: %v, want a conflict", err)
	}
}

// callURL calls a system's HTTP API as its admin.
func callURL(t *testing.T, s *system.System, method, path, body string) (int, http.Header, []byte) {
	t.Helper()
	r, err := http.NewRequest(method, s.HTTPURL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+s.AdminToken())
	r.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf strings.Builder
	_, _ = io.Copy(&buf, resp.Body)
	return resp.StatusCode, resp.Header, []byte(buf.String())
}

// A leader that does not know it was superseded (paused, or cut off,
// while another took the lease) writes with its old token after its
// successor's proclamation. Every reader refuses those writes: the worker
// refuses its command, and its outcome is not given as standing. The
// leader steps down on finding the later proclamation and hands the
// request on; the next term (its own again here) carries it out, once.
func TestSupersededLeaderIsFenced(t *testing.T) {
	e := newEnv(t)
	token, leading := e.sys.Orchestrator.Token()
	if !leading || token == 0 {
		t.Fatalf("the orchestrator leads %v with token %d", leading, token)
	}
	// A successor proclaims itself; the lease of the orchestrator still
	// says it leads.
	if _, err := events.Proclaim(e.ctx, e.sys.JS, e.sys.Validator, events.LeaderElectedData{Holder: "successor", Token: token + 1, Since: time.Now()}, "/test"); err != nil {
		t.Fatal(err)
	}
	req := fakeSpec("--forever")
	req.Start = true
	ev := createEvent(t, req)
	out, err := e.sys.Orchestrator.Handle(e.ctx, ev)
	if err != nil || out.Type() != events.RequestAccepted {
		t.Fatalf("the request: %v %v", out.Type(), err)
	}
	if got := events.LeaderToken(out); got <= token+1 {
		t.Fatalf("the outcome given carries token %d: the superseded term's (%d), not a later one's", got, token)
	}
	cid := events.ContainerIDFor(events.RequestKey(ev))
	// The superseded term's command reached the worker, which refused it.
	e.eventually("the worker refuses the former leader's command", func() bool {
		for _, r := range e.eventsOf(cid, events.ContainerCommandRefused) {
			var d events.CommandRefusedData
			if events.Data(r, &d) == nil && strings.Contains(d.Reason, "former leader") {
				return true
			}
		}
		return false
	})
	e.waitStatus(cid, api.StatusRunning)
	if n := len(e.eventsOf(cid, events.ContainerStarted)); n != 1 {
		t.Fatalf("the container started %d times, want once", n)
	}
	if n := len(e.eventsOf(cid, events.ContainerCreated)); n != 1 {
		t.Fatalf("the container was created %d times, want once", n)
	}
}

// Request/reply with a follower in the door's queue group: the requests
// it gets it hands to the leader, and every one is accepted.
func TestRequestReplyThroughFollower(t *testing.T) {
	e := newEnv(t)
	b, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, TokensDir: e.tokens, ID: "orch-b"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Stop() })
	// Each door answers some of the requests: all of them must be accepted.
	for range 6 {
		req := fakeSpec("--forever")
		req.Start = true
		out := e.ask(createEvent(t, req))
		if out.Type() != events.RequestAccepted {
			t.Fatalf("a create by request/reply with a follower listening: %s %s", out.Type(), out.Data())
		}
	}
}
