package system_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/url"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/client"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/driver/fake"
	"github.com/openagent/orchestrator/pkg/driver/local"
	"github.com/openagent/orchestrator/pkg/events"
	"github.com/openagent/orchestrator/pkg/sessions"
	"github.com/openagent/orchestrator/pkg/system"
)

func ms(d time.Duration) *int64 { v := d.Milliseconds(); return &v }

func TestSessionRunsCode(t *testing.T) {
	e := newEnv(t)
	alice, err := e.sys.Tokens().Create(api.Principal{Name: "alice", Role: events.RoleService})
	if err != nil {
		t.Fatal(err)
	}
	c := client.New(e.sys.HTTPURL, client.WithToken(alice))
	langs := []string{"python", "sh"}
	if _, err := exec.LookPath("node"); err == nil {
		langs = append(langs, "javascript")
	}
	s, err := c.CreateSession(e.ctx, api.SessionRequest{Languages: langs})
	if err != nil {
		t.Fatal(err)
	}
	if s.Status != api.SessionReady || s.Driver != "local" || s.Image != "host" || s.ContainerID == "" || s.ExpiresAt.Before(time.Now().Add(29*time.Minute)) {
		t.Fatalf("session %+v; want ready on the local driver, expiring in 30 minutes", s)
	}
	res, err := c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print(sum([1,2,3]))"})
	if err != nil || res.Stdout != "6\n" || res.ExitCode != 0 {
		t.Fatalf("python: %+v, %v", res, err)
	}
	if res, err = c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Language: "sh", Code: "echo $((6*7)); exit 3"}); err != nil || res.Stdout != "42\n" || res.ExitCode != 3 {
		t.Fatalf("sh: %+v, %v", res, err)
	}
	if len(langs) == 3 {
		if res, err = c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Language: "javascript", Code: "console.log([1,2,3].reduce((a,b)=>a+b))"}); err != nil || res.Stdout != "6\n" {
			t.Fatalf("javascript: %+v, %v", res, err)
		}
	}
	// An endless loop is killed at its timeout, and the session stays usable.
	begin := time.Now()
	res, err = c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "while True: pass", TimeoutMs: 500})
	if err != nil || !res.TimedOut || time.Since(begin) > 10*time.Second {
		t.Fatalf("endless loop: %+v, %v after %v", res, err, time.Since(begin))
	}
	if res, err = c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print('still here')"}); err != nil || res.Stdout != "still here\n" {
		t.Fatalf("after the timeout: %+v, %v", res, err)
	}
	// Output beyond the cap is cut, and the result says so.
	res, err = c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print('x' * 300000)"})
	if err != nil || !res.Truncated || len(res.Stdout) != 256<<10 {
		t.Fatalf("big output: %d bytes, truncated %v, %v; want 256 KiB, truncated", len(res.Stdout), res.Truncated, err)
	}
	if _, err := c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Language: "ruby", Code: "puts 1"}); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("a language the session lacks: %v", err)
	}
	// Every run is audited: who, the code's hash and size, exit code.
	var audits int
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Session: s.ID, Type: "session.code"}) {
		var d struct {
			By, CodeSha256 string
			CodeBytes      int
			Code           *string
		}
		if err != nil || events.Data(ev, &d) != nil {
			t.Fatal(err)
		}
		if d.By != "alice" || len(d.CodeSha256) != 64 || d.CodeBytes == 0 || d.Code != nil {
			t.Fatalf("audit %+v; want by alice with a hash and size, and no code kept", d)
		}
		audits++
	}
	if audits < 4 {
		t.Fatalf("%d audit events; want one per run", audits)
	}
	// Where configured, the audit keeps the code and its output too.
	if err := e.sys.Stop(); err != nil {
		t.Fatal(err)
	}
	sys, err := system.Start(e.ctx, system.Config{NATSURL: e.nats.ClientURL(), Orchestrator: true, HTTPAddr: "127.0.0.1:0", KeepCode: true, TokensDir: e.tokens})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	c = client.New(sys.HTTPURL, client.WithToken(alice))
	if _, err := c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print('kept')"}); err != nil {
		t.Fatal(err)
	}
	kept := false
	for ev, err := range c.Events(e.ctx, client.EventFilter{Session: s.ID, Type: "session.code"}) {
		var d struct{ Code, Stdout string }
		if err == nil && events.Data(ev, &d) == nil && d.Code == "print('kept')" && d.Stdout == "kept\n" {
			kept = true
		}
	}
	if !kept {
		t.Fatal("with KeepCode the audit does not hold the code and output")
	}
	closed, err := c.CloseSession(e.ctx, s.ID)
	if err != nil || closed.Status != api.SessionClosed {
		t.Fatalf("close: %+v, %v", closed, err)
	}
	e.eventually("the sandbox removed", func() bool {
		_, err := c.Get(e.ctx, s.ContainerID)
		return errors.Is(err, driver.ErrNotFound)
	})
}

func TestSessionTimeouts(t *testing.T) {
	e := newEnv(t)
	if _, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake", TimeoutMs: ms(0)}); !errors.Is(err, driver.ErrInvalid) || !strings.Contains(err.Error(), "timeoutMs") {
		t.Fatalf("a timeout of 0: %v; want refused", err)
	}
	if _, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake", IdleTimeoutMs: ms(-time.Second)}); !errors.Is(err, driver.ErrInvalid) {
		t.Fatalf("a negative idle timeout: %v; want refused", err)
	}
	idle, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake", IdleTimeoutMs: ms(0), TimeoutMs: ms(time.Hour)})
	if err != nil || idle.IdleTimeoutMs != 0 {
		t.Fatalf("idle timeout 0 (off): %+v, %v", idle, err)
	}
	// TTL expiry removes the sandbox, with events saying which timer fired.
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake", TimeoutMs: ms(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	// An orchestrator restart in the middle of the TTL: it still expires on time.
	if err := e.sys.Stop(); err != nil {
		t.Fatal(err)
	}
	e.startOrchestrator()
	e.eventually("the session expired", func() bool {
		got, err := e.c.Session(e.ctx, s.ID)
		return err == nil && got.Status == api.SessionExpired
	})
	late := time.Since(s.ExpiresAt)
	if late > 3*time.Second {
		t.Fatalf("expired %v after its time", late)
	}
	e.eventually("the sandbox removed", func() bool {
		_, err := e.c.Get(e.ctx, s.ContainerID)
		return errors.Is(err, driver.ErrNotFound)
	})
	var types []string
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Session: s.ID, Type: "session."}) {
		if err != nil {
			t.Fatal(err)
		}
		types = append(types, strings.TrimPrefix(ev.Type(), "io.openagent.session."))
		if ev.Type() == events.SessionExpired {
			var d struct{ Timer, Reason string }
			_ = events.Data(ev, &d)
			if d.Timer != "ttl" || !strings.Contains(d.Reason, "time to live") {
				t.Fatalf("expired event %+v", d)
			}
		}
	}
	if got := strings.Join(types, " "); got != "requested ready expiring expired" {
		t.Fatalf("session events %q; want requested ready expiring expired", got)
	}
	// Extending moves the expiry; an idle session expires by its idle timer.
	x, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake", TimeoutMs: ms(time.Hour), IdleTimeoutMs: ms(800 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	ext, err := e.c.ExtendSession(e.ctx, x.ID, 2*time.Hour)
	if err != nil || ext.ExpiresAt.Before(time.Now().Add(119*time.Minute)) {
		t.Fatalf("extend: %+v, %v", ext, err)
	}
	e.eventually("the idle session expired", func() bool {
		got, err := e.c.Session(e.ctx, x.ID)
		return err == nil && got.Status == api.SessionExpired && strings.HasPrefix(got.Reason, "idle")
	})
}

func TestSessionFiles(t *testing.T) {
	e := newEnv(t)
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Languages: []string{"python", "sh"}})
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("line one\nbinary \x00\xff end\n")
	if err := e.c.WriteFile(e.ctx, s.ID, "in/data.bin", data); err != nil {
		t.Fatal(err)
	}
	res, err := e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "print(len(open('in/data.bin','rb').read())); open('out.txt','w').write('made inside')"})
	if err != nil || res.Stdout != "23\n" {
		t.Fatalf("reading the upload in the sandbox: %+v, %v", res, err)
	}
	got, err := e.c.ReadFile(e.ctx, s.ID, "out.txt")
	if err != nil || string(got) != "made inside" {
		t.Fatalf("download: %q, %v", got, err)
	}
	if back, err := e.c.ReadFile(e.ctx, s.ID, "in/data.bin"); err != nil || string(back) != string(data) {
		t.Fatalf("round trip: %q, %v", back, err)
	}
	// Files of every size up to the cap come back whole: those whose
	// base64 passed the exec output's cap once came back cut, with 200.
	for _, size := range []int{194055, 194056, 194560} {
		big := make([]byte, size)
		for i := range big {
			big[i] = byte(i*7 + i/251)
		}
		if err := e.c.WriteFile(e.ctx, s.ID, "sized.bin", big); err != nil {
			t.Fatalf("upload of %d bytes: %v", size, err)
		}
		back, err := e.c.ReadFile(e.ctx, s.ID, "sized.bin")
		if err != nil || !bytes.Equal(back, big) {
			t.Fatalf("a file of %d bytes came back as %d bytes (%v)", size, len(back), err)
		}
	}
	// A symbolic link made inside pointing out of the workspace.
	if _, err := e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Language: "sh", Code: "ln -s /etc escape && ln -s /etc/hostname host"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"../outside", "/etc/passwd", "a/../../b", "escape/passwd", "host", ""} {
		t.Run(p, func(t *testing.T) {
			if _, err := e.c.ReadFile(e.ctx, s.ID, p); err == nil {
				t.Fatalf("read of %q allowed", p)
			}
			if err := e.c.WriteFile(e.ctx, s.ID, p, []byte("x")); err == nil {
				t.Fatalf("write of %q allowed", p)
			} else if !errors.Is(err, driver.ErrInvalid) && !errors.Is(err, driver.ErrPermission) {
				t.Fatalf("write of %q: %v; want invalid or permission", p, err)
			}
		})
	}
	if _, err := e.c.ReadFile(e.ctx, s.ID, "missing.txt"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
}

// Files cross off the event path, in the files store: a large file goes in
// and comes out whole, in bounded memory, its SHA-256 checked at each end
// and on record; a file over the cap is refused, naming it.
func TestSessionLargeFiles(t *testing.T) {
	ld, err := local.New(localRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ld.Teardown(context.Background()) })
	e := newEnvWith(t, system.Config{MaxFileBytes: 300 << 20}, "files-host", ld)
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Languages: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	// Each size goes in and out; the memory it takes is the bus's own
	// buffers (the server's block caches, the client's pending messages),
	// the same for a file four times the size.
	roundTrip := func(size int) (src *pattern, grew uint64) {
		t.Helper()
		src = &pattern{n: size}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		stop := watchHeap()
		in, err := e.c.WriteFileFrom(e.ctx, s.ID, "big/blob.bin", src)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.New()
		out, err := e.c.ReadFileTo(e.ctx, s.ID, "big/blob.bin", sum)
		if err != nil {
			t.Fatal(err)
		}
		peak := stop()
		if in.Size != uint64(size) || out.Size != uint64(size) || in.SHA256 != out.SHA256 || hex.EncodeToString(sum.Sum(nil)) != src.sha256() {
			t.Fatalf("in %+v, out %+v; want %d bytes both ways with the sent hash %s", in, out, size, src.sha256())
		}
		if peak > before.HeapInuse {
			grew = peak - before.HeapInuse
		}
		t.Logf("%d MiB in and out: the live heap peaked %d MiB above the start", size>>20, grew>>20)
		return src, grew
	}
	_, small := roundTrip(64 << 20)
	src, large := roundTrip(256 << 20)
	const size = 256 << 20
	// The bus's buffers are the same whatever the size, up to the client's
	// pending limit (64 MiB), which a loaded machine fills more: a quarter
	// of the larger file's size apart at most, and never the file itself.
	if large > small+96<<20 || large >= size {
		t.Errorf("moving 256 MiB took %d MiB of heap, 64 MiB %d MiB: memory grows with the file", large>>20, small>>20)
	}
	var copied []events.FileCopiedData
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Session: s.ID, Type: "session.file.copied"}) {
		var d events.FileCopiedData
		if err == nil && events.Data(ev, &d) == nil {
			copied = append(copied, d)
		}
	}
	if len(copied) != 4 || copied[2].Direction != "in" || copied[3].Direction != "out" || copied[2].SHA256 != src.sha256() || copied[3].Size != size {
		t.Fatalf("file events %+v; want one in and one out with the path, size and hash", copied)
	}
	if _, err := e.c.WriteFileFrom(e.ctx, s.ID, "too-big.bin", &pattern{n: 301 << 20}); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a file over the cap: %v", err)
	}
	if _, err := e.c.ReadFile(e.ctx, s.ID, "too-big.bin"); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("a refused file was written anyway: %v", err)
	}
}

// pattern is n bytes of a repeating pattern, hashed as they are read.
type pattern struct {
	n, off int
	h      hash.Hash
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.h == nil {
		p.h = sha256.New()
	}
	if p.off >= p.n {
		return 0, io.EOF
	}
	k := min(len(b), p.n-p.off)
	for i := range k {
		b[i] = byte((p.off+i)*31 + (p.off+i)>>12)
	}
	p.off += k
	p.h.Write(b[:k])
	return k, nil
}

func (p *pattern) sha256() string { return hex.EncodeToString(p.h.Sum(nil)) }

// watchHeap samples the live heap until the returned function is called,
// which returns its peak.
func watchHeap() func() uint64 {
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			// What is live, not what awaits collection: memory that grows
			// with the file would show here.
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); return peak.Load() }
}

func TestWarmPool(t *testing.T) {
	e := newEnv(t)
	p, err := e.c.SetPool(e.ctx, api.Pool{Driver: "fake", Size: 2, Max: 3})
	if err != nil || p.Image != "fake" || p.Target != 2 {
		t.Fatalf("set pool: %+v, %v", p, err)
	}
	pool := func() api.Pool {
		ps, err := e.c.Pools(e.ctx)
		if err != nil || len(ps) != 1 {
			t.Fatalf("pools: %+v, %v", ps, err)
		}
		return ps[0]
	}
	e.eventually("the pool filled", func() bool { return pool().Warm == 2 })
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	var warm bool
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Session: s.ID, Type: "session.ready"}) {
		var d struct{ Warm bool }
		if err == nil && events.Data(ev, &d) == nil {
			warm = d.Warm
		}
	}
	if !warm {
		t.Fatal("the session did not take a warm sandbox")
	}
	e.eventually("the pool refilled", func() bool { return pool().Warm == 2 })
	// Demand beyond the pool raises its target, never past its bound.
	for range 6 {
		if _, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake"}); err != nil {
			t.Fatal(err)
		}
		if got := pool(); got.Warm+got.Creating > 3 || got.Target > 3 {
			t.Fatalf("pool %+v exceeds its bound of 3", got)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if got := pool(); got.Warm > 3 {
		t.Fatalf("pool %+v exceeds its bound of 3", got)
	}
	// Idle sandboxes of the pool, counted from the containers themselves.
	taken := map[string]bool{}
	sessions, _ := e.c.Sessions(e.ctx, true)
	for _, s := range sessions {
		taken[s.ContainerID] = true
	}
	idle := 0
	all, _ := e.c.List(e.ctx, client.ListOptions{})
	for _, c := range all {
		if c.Labels["io.openagent.pool"] != "" && !taken[c.ID] {
			idle++
		}
	}
	if idle > 3 || idle < 2 {
		t.Fatalf("%d idle pool sandboxes; want between the size 2 and the bound 3", idle)
	}
}

// Output streams while the code runs: the first line arrives before the
// code has finished.
func TestSessionStreamsOutput(t *testing.T) {
	e := newEnv(t)
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{})
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	var firstAt time.Duration
	streamed := map[string]string{}
	// No flush: Python's output is unbuffered in a session, as people
	// expect of a terminal.
	res, err := e.c.RunCodeStream(e.ctx, s.ID, api.RunCodeRequest{Code: "import time, sys\nprint('first')\ntime.sleep(1.5)\nprint('second')\nsys.stderr.write('err\\n')"},
		func(stream, data string) {
			if firstAt == 0 {
				firstAt = time.Since(begin)
			}
			// Unbuffered, a print may arrive as two chunks (the text,
			// then its newline): what counts is each stream's order.
			streamed[stream] += data
		})
	if err != nil {
		t.Fatal(err)
	}
	total := time.Since(begin)
	if res.Stdout != "first\nsecond\n" || res.Stderr != "err\n" || res.ExitCode != 0 {
		t.Fatalf("result %+v", res)
	}
	if firstAt == 0 || firstAt > total-time.Second {
		t.Fatalf("first output after %v of %v; want it streamed before the 1.5s sleep ended", firstAt, total)
	}
	if streamed["stdout"] != "first\nsecond\n" || streamed["stderr"] != "err\n" {
		t.Fatalf("streamed %q", streamed)
	}
}

// The NATS door: session requests as CloudEvents, answered with the
// outcome event; output chunks on a subject of the caller's.
func TestSessionOverNATS(t *testing.T) {
	e := newEnv(t)
	nc, _ := e.nats.Connect()
	ask := func(typ string, data map[string]any) events.Event {
		t.Helper()
		req, err := events.New(typ, "/agents/bot-7", data)
		if err != nil {
			t.Fatal(err)
		}
		m, err := events.ToMsg(events.SubjectSessions, req)
		if err != nil {
			t.Fatal(err)
		}
		reply, err := nc.RequestMsg(m, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		out, err := events.FromMsg(reply)
		if err != nil {
			t.Fatalf("reply is not a CloudEvent: %v: %s", err, reply.Data)
		}
		if events.Ext(out, events.ExtCorrelationID) != req.ID() {
			t.Fatalf("reply %s is not correlated to the request", out.Type())
		}
		return out
	}
	ready := ask(events.SessionCreateRequested, map[string]any{"languages": []string{"sh"}})
	var d struct {
		SessionID, ContainerID string
		ExpiresAt              time.Time
	}
	if err := events.Data(ready, &d); err != nil || ready.Type() != events.SessionReady || d.SessionID == "" || d.ExpiresAt.IsZero() {
		t.Fatalf("reply %s %s", ready.Type(), ready.Data())
	}
	if s, err := e.c.Session(e.ctx, d.SessionID); err != nil || s.SetBy != "/agents/bot-7" {
		t.Fatalf("session %+v, %v; want set by the request's source", s, err)
	}
	chunks := make(chan *nats.Msg, 16)
	sub, _ := nc.ChanSubscribe("my.output", chunks)
	defer sub.Unsubscribe()
	done := ask(events.SessionExecRequested, map[string]any{"sessionId": d.SessionID, "code": "echo over nats", "streamTo": "my.output"})
	var res api.ExecResult
	if err := events.Data(done, &res); err != nil || done.Type() != events.ExecCompleted || res.Stdout != "over nats\n" {
		t.Fatalf("reply %s %s", done.Type(), done.Data())
	}
	select {
	case m := <-chunks:
		if !strings.Contains(string(m.Data), "over nats") {
			t.Fatalf("chunk %s", m.Data)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no output chunk on the caller's subject")
	}
	rejected := ask(events.SessionExecRequested, map[string]any{"sessionId": "nope", "code": "true"})
	var rd struct{ Error api.Error }
	if _ = events.Data(rejected, &rd); rejected.Type() != events.RequestRejected || rd.Error.Kind != "not_found" {
		t.Fatalf("reply %s %s; want rejected, not_found", rejected.Type(), rejected.Data())
	}
	// Too much code is refused as too large, not as the bus being down.
	big := ask(events.SessionExecRequested, map[string]any{"sessionId": d.SessionID, "code": strings.Repeat("#", sessions.MaxCodeBytes+1)})
	if _ = events.Data(big, &rd); big.Type() != events.RequestRejected || rd.Error.Kind != api.KindTooLarge || rd.Error.Field != "code" {
		t.Fatalf("reply %s %s; want rejected, too_large, naming code", big.Type(), big.Data())
	}
	closed := ask(events.SessionCloseRequested, map[string]any{"sessionId": d.SessionID})
	if closed.Type() != events.SessionClosed {
		t.Fatalf("reply %s", closed.Type())
	}
	// Each answer is the outcome event as the log holds it: same id, same
	// data.
	for _, reply := range []events.Event{ready, done, closed} {
		stored := e.storedEvent(reply)
		if !bytes.Equal(stored.Data(), reply.Data()) || stored.Type() != reply.Type() {
			t.Fatalf("the answer %s %s differs from the stored %s %s", reply.Type(), reply.Data(), stored.Type(), stored.Data())
		}
	}
}

// storedEvent finds the event with reply's id in the log.
func (e *env) storedEvent(reply events.Event) events.Event {
	e.t.Helper()
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{}) {
		if err != nil {
			e.t.Fatal(err)
		}
		if ev.ID() == reply.ID() {
			return ev
		}
	}
	e.t.Fatalf("the answer %s (%s) is not in the log", reply.ID(), reply.Type())
	return events.Event{}
}

// A session whose sandbox is slow to remove delays no other session's
// expiry: each fires at its own time.
func TestSlowRemovalDelaysNoOtherExpiry(t *testing.T) {
	var slow sync.Once
	release := make(chan struct{})
	defer close(release)
	drv := fake.New(fake.WithHook(func(ctx context.Context, op, id string) error {
		if op == "remove" {
			slow.Do(func() {
				select { // the first removal hangs
				case <-release:
				case <-time.After(10 * time.Second):
				case <-ctx.Done():
				}
			})
		}
		return nil
	}))
	e := newEnvWith(t, system.Config{}, "h", drv)
	c, ctx := e.c, e.ctx
	first, err := c.CreateSession(ctx, api.SessionRequest{Driver: "fake", Languages: []string{"sh"}, TimeoutMs: ms(time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.CreateSession(ctx, api.SessionRequest{Driver: "fake", Languages: []string{"sh"}, TimeoutMs: ms(1500 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	e.eventually("the second session expired", func() bool {
		s, err := c.Session(ctx, second.ID)
		return err == nil && s.Status == api.SessionExpired
	})
	s, _ := c.Session(ctx, second.ID)
	if late := s.EndedAt.Sub(s.ExpiresAt); late > 2*time.Second {
		t.Fatalf("the second session ended %v after its expiry, behind the first's slow removal", late)
	}
	if f, _ := c.Session(ctx, first.ID); f.Status != api.SessionExpired {
		t.Fatalf("the first session is %s; want expired (its removal still going on)", f.Status)
	}
}

// A session has no network unless its egress rules give it one: no
// default route inside without rules, one with them; the rules are part
// of the pool's profile; the host says what its driver enforces.
func TestSessionEgress(t *testing.T) {
	e := newEnv(t)
	routes := func(s *api.Session) string {
		t.Helper()
		res, err := e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Language: "sh", Code: `awk 'NR > 1 && $2 == "00000000"' /proc/net/route | wc -l`})
		if err != nil || res.ExitCode != 0 {
			t.Fatalf("routes: %+v, %v", res, err)
		}
		return strings.TrimSpace(res.Stdout)
	}
	closed, err := e.c.CreateSession(e.ctx, api.SessionRequest{Languages: []string{"sh"}})
	if err != nil {
		t.Fatal(err)
	}
	if n := routes(closed); n != "0" {
		t.Errorf("%s default routes in a session without egress rules; want none", n)
	}
	rules := []driver.EgressRule{{To: "198.18.99.0/24", Ports: []int{443}}}
	open, err := e.c.CreateSession(e.ctx, api.SessionRequest{Languages: []string{"sh"}, Egress: rules})
	if err != nil {
		t.Fatal(err)
	}
	if n := routes(open); n != "1" {
		t.Errorf("%s default routes in a session with egress rules; want one", n)
	}
	c, err := e.c.Get(e.ctx, open.ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Egress) != 1 || c.Egress[0].To != "198.18.99.0/24" {
		t.Errorf("the session's container shows egress %+v; want the session's rules", c.Egress)
	}
	// Even allowed everywhere, a session reaches none of the host's own
	// addresses: not the API's port, not NATS's, not a listener on all
	// addresses.
	everywhere, err := e.c.CreateSession(e.ctx, api.SessionRequest{Languages: []string{"sh"}, Egress: []driver.EgressRule{{To: "0.0.0.0/0"}}})
	if err != nil {
		t.Fatal(err)
	}
	probe := hostProbe(t, portOf(t, e.sys.HTTPURL), portOf(t, e.nats.ClientURL()), listenAll(t))
	res, err := e.c.RunCode(e.ctx, everywhere.ID, api.RunCodeRequest{Language: "sh", Code: "python3 -c '" + probe + "'", TimeoutMs: 60000})
	if err != nil || res.ExitCode != 0 || strings.Contains(res.Stdout, "reached") {
		t.Fatalf("from inside a session allowed everywhere: %+v, %v; want none of the host's addresses reached", res, err)
	}
	hosts, err := e.c.Hosts(e.ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, h := range hosts {
		for _, d := range h.Drivers {
			for _, en := range d.Enforcement {
				if d.Name == "local" && en.Setting == "egress" && en.Enforced {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("no host says its local driver enforces egress: %+v", hosts)
	}
}

// listenAll listens on all of the host's addresses, as a control plane
// bound to 0.0.0.0 would, and returns the port.
func listenAll(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().(*net.TCPAddr).Port
}

func portOf(t *testing.T, rawURL string) int {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	p, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatalf("no port in %s", rawURL)
	}
	return p
}

// hostProbe is Python that tries the ports on 127.0.0.1, the Docker
// bridge's gateway and every IPv4 address of the host, and prints
// "reached HOST:PORT" for each that answers (in single quotes nowhere, so
// a shell can quote it).
func hostProbe(t *testing.T, ports ...int) string {
	t.Helper()
	targets := []string{"127.0.0.1", "172.17.0.1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			targets = append(targets, ip.IP.String())
		}
	}
	hosts, _ := json.Marshal(targets)
	list, _ := json.Marshal(ports)
	return fmt.Sprintf(`import socket
for host in %s:
    for port in %s:
        try:
            socket.create_connection((host, port), timeout=1).close()
            print("reached", host, port)
        except Exception:
            pass`, hosts, list)
}

// A pool is refused for a driver no host offers and when its first
// sandbox cannot be made; one that cannot fill backs off instead of
// failing ten times a second; pool rm removes it and its sandboxes.
func TestPoolRefusalsAndBackoff(t *testing.T) {
	e := newEnv(t)
	if _, err := e.c.SetPool(e.ctx, api.Pool{Driver: "docker", Size: 1}); err == nil || !strings.Contains(err.Error(), "no host offers the docker driver") {
		t.Fatalf("a pool of a driver no host offers: %v", err)
	}
	if _, err := e.c.SetPool(e.ctx, api.Pool{Driver: "local", Image: "ubuntu:24.04", Size: 1}); err == nil || !strings.Contains(err.Error(), "first sandbox") {
		t.Fatalf("a pool whose sandboxes cannot be made: %v", err)
	}
	if ps, _ := e.c.Pools(e.ctx); len(ps) != 0 {
		t.Fatalf("a refused pool was kept: %+v", ps)
	}
	// Each host has 4 cpus: the first sandbox fits, the second nowhere
	// but on the other host, the third nowhere at all.
	if _, err := e.c.SetPool(e.ctx, api.Pool{Driver: "fake", CPU: 3, Size: 3, Max: 3}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	rejected := 0
	for ev, err := range e.c.Events(e.ctx, client.EventFilter{Type: "request.rejected"}) {
		if err == nil && strings.Contains(string(ev.Data()), "cpu") {
			rejected++
		}
	}
	// Backing off from one second, doubling: a handful in three seconds,
	// where a pool retried every 100 ms would have made thirty.
	if rejected == 0 || rejected > 6 {
		t.Fatalf("%d rejected sandboxes in 3s; want a few, backing off", rejected)
	}
	if err := e.c.RemovePool(e.ctx, api.Pool{Driver: "fake", CPU: 3}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the pool's sandboxes are removed", func() bool {
		list, _ := e.c.List(e.ctx, client.ListOptions{})
		for _, c := range list {
			if c.Labels["io.openagent.pool"] != "" {
				return false
			}
		}
		return true
	})
	if ps, _ := e.c.Pools(e.ctx); len(ps) != 0 {
		t.Fatalf("pool rm left %+v", ps)
	}
	if err := e.c.RemovePool(e.ctx, api.Pool{Driver: "fake", CPU: 3}); !errors.Is(err, driver.ErrNotFound) {
		t.Fatalf("removing it again: %v; want not found", err)
	}
}

// A session whose sandbox is removed behind its back fails; it does not
// stay ready. Ended sessions show no countdown.
func TestSessionWithoutItsSandboxFails(t *testing.T) {
	e := newEnv(t)
	s, err := e.c.CreateSession(e.ctx, api.SessionRequest{Driver: "fake"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.c.Remove(e.ctx, s.ContainerID, true); err != nil {
		t.Fatal(err)
	}
	e.eventually("the session fails", func() bool {
		got, err := e.c.Session(e.ctx, s.ID)
		return err == nil && got.Status == api.SessionFailed && got.Error != nil && strings.Contains(got.Error.Message, "gone")
	})
	if _, err := e.c.RunCode(e.ctx, s.ID, api.RunCodeRequest{Code: "x"}); err == nil {
		t.Fatal("code ran in a session whose sandbox is gone")
	}
}
