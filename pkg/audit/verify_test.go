package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/openagent/orchestrator/pkg/events"
)

// history makes n events as the stream holds them, with a checkpoint
// signed by key after every fifth, each carrying its sequence as served.
func history(t *testing.T, key ed25519.PrivateKey, n int) []events.Event {
	t.Helper()
	var out []events.Event
	link := Genesis
	add := func(e events.Event) {
		seq := uint64(len(out) + 1)
		c, err := Canonical(e)
		if err != nil {
			t.Fatal(err)
		}
		link = Next(link, seq, c)
		e.SetExtension(events.ExtStreamSeq, strconv.FormatUint(seq, 10))
		out = append(out, e)
	}
	for i := range n {
		e, err := events.New(events.ContainerStarted, "/tests", events.StartedData{ContainerID: "c" + strconv.Itoa(i), HostID: "h"},
			events.WithContainer("c"+strconv.Itoa(i)), events.WithHost("h"))
		if err != nil {
			t.Fatal(err)
		}
		add(e)
		if (i+1)%5 == 0 {
			cp, err := events.New(events.AuditCheckpoint, "/tests", Sign(key, uint64(len(out)), link))
			if err != nil {
				t.Fatal(err)
			}
			add(cp)
		}
	}
	return out
}

func verify(trusted ed25519.PublicKey, es []events.Event) Report {
	v := &Verifier{Trusted: trusted}
	for _, e := range es {
		if !v.Add(e) {
			break
		}
	}
	return v.Report()
}

// A history as stored verifies; each way of tampering with a copy of it is
// found, and named, at its first place.
func TestVerifierFindsEachTampering(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	es := history(t, key, 20) // 24 events, checkpoints at 6, 12, 18, 24
	if r := verify(pub, es); r.Problem != "" || r.Checkpoints != 4 || r.Verified != 23 || r.Events != 24 {
		t.Fatalf("the history as stored: %+v", r)
	}

	changed := clone(es)
	e := changed[8].Clone()
	e.SetSource("/attacker")
	changed[8] = e
	if r := verify(pub, changed); !strings.HasPrefix(r.Problem, "changed:") || r.Seq != 6 {
		t.Errorf("an event changed: %+v; want changed, after the checkpoint vouching for 5", r)
	}

	dropped := append(clone(es[:9]), es[10:]...)
	if r := verify(pub, dropped); !strings.HasPrefix(r.Problem, "dropped:") || r.Seq != 10 {
		t.Errorf("an event dropped: %+v; want dropped at 10", r)
	}

	inserted := append(clone(es[:10]), es[9:]...)
	if r := verify(pub, inserted); !strings.HasPrefix(r.Problem, "inserted:") || r.Seq != 10 {
		t.Errorf("an event inserted: %+v; want inserted at 10", r)
	}

	reordered := clone(es)
	reordered[13], reordered[14] = reordered[14], reordered[13]
	if r := verify(pub, reordered); !strings.HasPrefix(r.Problem, "reordered:") || r.Seq != 14 {
		t.Errorf("two events swapped: %+v; want 14 reported reordered", r)
	}

	// Renumbered after a drop: the order holds, the chain does not.
	renumbered := append(clone(es[:9]), clone(es[10:])...)
	for i := 9; i < len(renumbered); i++ {
		e := renumbered[i].Clone()
		e.SetExtension(events.ExtStreamSeq, strconv.Itoa(i+1))
		renumbered[i] = e
	}
	if r := verify(pub, renumbered); !strings.HasPrefix(r.Problem, "changed:") {
		t.Errorf("an event dropped and the rest renumbered: %+v; want the chain broken", r)
	}

	// A history rewritten and signed again by another key is refused by
	// the trusted one; without a trusted key, it names the key.
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	forged := history(t, other, 20)
	if r := verify(pub, forged); !strings.Contains(r.Problem, "not by the trusted key") {
		t.Errorf("a history signed by another key: %+v", r)
	}
	if r := verify(nil, forged); r.Problem != "" || len(r.Keys) != 1 || r.Keys[0] != KeyID(other.Public().(ed25519.PublicKey)) {
		t.Errorf("without a trusted key: %+v; want it verified and the key named", r)
	}

	// A reading from the middle (an export from a time) is anchored at its
	// first checkpoint whose following events it holds.
	if r := verify(pub, es[8:]); r.Problem != "" || r.First != 9 || r.Unanchored != 3 || r.Verified != 23 {
		t.Errorf("a reading from 9: %+v; want verified from the checkpoint at 12 on, 9 to 11 unanchored", r)
	}
	mid := clone(es[8:])
	e = mid[10].Clone()
	e.SetSource("/attacker")
	mid[10] = e // sequence 19, after the anchor
	if r := verify(pub, mid); !strings.HasPrefix(r.Problem, "changed:") {
		t.Errorf("a reading from 9 with 19 changed: %+v", r)
	}
}

func clone(es []events.Event) []events.Event { return append([]events.Event(nil), es...) }

// A key is made once and read back the same, its public half beside it.
func TestOpenKey(t *testing.T) {
	path := t.TempDir() + "/audit.key"
	k1, err := OpenKey(path)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := OpenKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("opened again: %v, the same key %v", err, k1.Equal(k2))
	}
	if _, err := ParseKey(KeyID(k1.Public().(ed25519.PublicKey))); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseKey("ed25519:abc"); err == nil {
		t.Fatal("a short key parsed")
	}
	// Two orchestrators starting at once with one directory: one key.
	shared := t.TempDir() + "/audit.key"
	keys := make(chan ed25519.PrivateKey, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, err := OpenKey(shared)
			if err != nil {
				t.Error(err)
			}
			keys <- k
		}()
	}
	wg.Wait()
	close(keys)
	first := <-keys
	for k := range keys {
		if !k.Equal(first) {
			t.Fatal("openers at once ended with different keys")
		}
	}
}
