package coord

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/openagent/orchestrator/internal/natstest"
)

func leases(t *testing.T, ttl time.Duration) *Leases {
	t.Helper()
	srv := natstest.Start(t)
	_, js := srv.Connect()
	l, err := Open(context.Background(), js, "test-leases", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// One holder at a time; the holder keeps it by renewing; once it stops,
// the lease ages out and another takes it with a later token; the old
// holder's renewal then fails, and its token is fenced.
func TestLeaseHoldAgeOutTakeOver(t *testing.T) {
	ctx := context.Background()
	l := leases(t, time.Second)
	a, _, err := l.Acquire(ctx, "leader", "orch-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, who, err := l.Acquire(ctx, "leader", "orch-b"); !errors.Is(err, ErrHeld) || who == nil || who.Holder != "orch-a" {
		t.Fatalf("a second acquire: %v, %+v; want ErrHeld naming orch-a", err, who)
	}
	for range 4 { // well past the TTL, renewed
		time.Sleep(300 * time.Millisecond)
		if err := a.Renew(ctx); err != nil {
			t.Fatalf("renew while holding: %v", err)
		}
	}
	if _, _, err := l.Acquire(ctx, "leader", "orch-b"); !errors.Is(err, ErrHeld) {
		t.Fatalf("a renewed lease was taken: %v", err)
	}
	// orch-a pauses past its lease.
	var b *Lease
	deadline := time.Now().Add(5 * time.Second)
	for b == nil {
		if time.Now().After(deadline) {
			t.Fatal("the lease never aged out")
		}
		time.Sleep(100 * time.Millisecond)
		b, _, _ = l.Acquire(ctx, "leader", "orch-b")
	}
	if b.Token() <= a.Token() {
		t.Fatalf("the new holding's token %d is not after the old one's %d", b.Token(), a.Token())
	}
	if err := a.Renew(ctx); !errors.Is(err, ErrLost) {
		t.Fatalf("the paused holder renewed: %v; want ErrLost", err)
	}
	if fenced, err := l.Fenced(ctx, "leader", a.Token()); err != nil || !fenced {
		t.Fatalf("the old token is not fenced: %v, %v", fenced, err)
	}
	if fenced, _ := l.Fenced(ctx, "leader", b.Token()); fenced {
		t.Fatal("the holder's own token is fenced")
	}
	if err := b.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Acquire(ctx, "leader", "orch-c"); err != nil {
		t.Fatalf("after a release the lease could not be taken at once: %v", err)
	}
}

// Of several campaigners one leads at a time; when it stops, another
// leads within the TTL and a little.
func TestLeadFailsOver(t *testing.T) {
	l := leases(t, 900*time.Millisecond)
	var mu sync.Mutex
	leading, active := map[string]int{}, map[string]bool{}
	var overlaps int
	run := func(ctx context.Context, name string) {
		_ = l.Lead(ctx, "leader", Holding{Holder: name}, func(lctx context.Context, token uint64) {
			mu.Lock()
			leading[name]++
			if len(active) > 0 {
				overlaps++
			}
			active[name] = true
			mu.Unlock()
			<-lctx.Done()
			mu.Lock()
			delete(active, name)
			mu.Unlock()
		})
	}
	ctxA, stopA := context.WithCancel(context.Background())
	ctxB, stopB := context.WithCancel(context.Background())
	defer stopB()
	go run(ctxA, "a")
	time.Sleep(200 * time.Millisecond)
	go run(ctxB, "b")
	time.Sleep(time.Second)
	mu.Lock()
	first := len(active)
	mu.Unlock()
	if first != 1 {
		t.Fatalf("%d leaders at once; want one", first)
	}
	stopA()
	begin := time.Now()
	for {
		mu.Lock()
		b := active["b"]
		mu.Unlock()
		if b {
			break
		}
		if time.Since(begin) > 3*time.Second {
			t.Fatal("b did not take over within the TTL and a little")
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("failover after %v", time.Since(begin))
	mu.Lock()
	defer mu.Unlock()
	if overlaps != 0 {
		t.Fatalf("%d times two led at once", overlaps)
	}
}
