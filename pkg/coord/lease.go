// Package coord coordinates the processes of a control plane through
// JetStream key-value: leases, and the leader election built on them.
//
// A lease is a key of a bucket whose entries live for the lease's time to
// live (the bucket's TTL, kept by the server's clock, not the holders'):
// the holder keeps it by writing it again before it ages out, with the
// revision it last wrote (compare-and-set), and loses it the moment another
// writes the key. Taking a lease nobody holds is a create, which succeeds
// once only. The fencing token of a holding is the revision its create
// was stored at: it only grows, so a holder that was paused past its lease
// and carries on finds a later token in the key, and anything that checks
// tokens refuses its writes.
package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// DefaultTTL is a lease's time to live; a holder renews at a third of it.
const DefaultTTL = 3 * time.Second

// ErrHeld is the error of acquiring a lease another holds.
var ErrHeld = errors.New("coord: the lease is held by another")

// ErrLost is the error of renewing a lease another has taken (or that
// aged out and was taken): the holder must stop acting on it.
var ErrLost = errors.New("coord: the lease was lost")

// Holding is what a lease's key says.
type Holding struct {
	Holder  string    `json:"holder"`
	Address string    `json:"address,omitempty"` // where the holder answers, for those who would forward to it
	Since   time.Time `json:"since"`
	Token   uint64    `json:"token"` // the fencing token: the revision of the create
}

// Leases is a bucket of leases.
type Leases struct {
	kv  jetstream.KeyValue
	ttl time.Duration
}

// Open opens (making it if needed) the bucket of leases with time to live
// ttl (DefaultTTL when zero) and the given replicas (1 when zero).
func Open(ctx context.Context, js jetstream.JetStream, bucket string, ttl time.Duration, replicas int) (*Leases, error) {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: bucket, Description: "Leases: who leads, fenced by revision",
		TTL: ttl, History: 1, Storage: jetstream.FileStorage, Replicas: max(replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("coord: bucket %s: %w", bucket, err)
	}
	return &Leases{kv: kv, ttl: ttl}, nil
}

// TTL is the leases' time to live.
func (l *Leases) TTL() time.Duration { return l.ttl }

// Lease is one holder's lease on a key.
type Lease struct {
	leases  *Leases
	key     string
	holder  string
	address string
	rev     uint64 // the revision this holder wrote last
	token   uint64
	since   time.Time
}

// Acquire takes the lease on key for holder, if nobody holds it. It
// returns ErrHeld, with who holds it, when another does.
func (l *Leases) Acquire(ctx context.Context, key, holder string) (*Lease, *Holding, error) {
	return l.acquire(ctx, key, Holding{Holder: holder})
}

func (l *Leases) acquire(ctx context.Context, key string, me Holding) (*Lease, *Holding, error) {
	holder := me.Holder
	if cur, err := l.Current(ctx, key); err == nil {
		return nil, cur, ErrHeld
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, nil, err
	}
	now := time.Now().UTC()
	// The token is the create's revision, known once it is stored: write
	// the holding, then write it again with its token (a compare-and-set
	// on the create's revision, so nobody can have taken it between).
	b, _ := json.Marshal(Holding{Holder: holder, Address: me.Address, Since: now})
	rev, err := l.kv.Create(ctx, key, b)
	if errors.Is(err, jetstream.ErrKeyExists) {
		cur, _ := l.Current(ctx, key)
		return nil, cur, ErrHeld
	}
	if err != nil {
		return nil, nil, fmt.Errorf("coord: acquire %s: %w", key, err)
	}
	lease := &Lease{leases: l, key: key, holder: holder, address: me.Address, rev: rev, token: rev, since: now}
	if err := lease.Renew(ctx); err != nil {
		return nil, nil, err
	}
	return lease, &Holding{Holder: holder, Address: me.Address, Since: now, Token: rev}, nil
}

// Current says who holds the lease on key; jetstream.ErrKeyNotFound when
// nobody does.
func (l *Leases) Current(ctx context.Context, key string) (*Holding, error) {
	e, err := l.kv.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	var h Holding
	if err := json.Unmarshal(e.Value(), &h); err != nil {
		return nil, fmt.Errorf("coord: lease %s: %w", key, err)
	}
	if h.Token == 0 {
		h.Token = e.Revision() // written by its create, its token not yet
	}
	return &h, nil
}

// Renew keeps the lease for another TTL; ErrLost when another took it.
func (le *Lease) Renew(ctx context.Context) error {
	b, _ := json.Marshal(Holding{Holder: le.holder, Address: le.address, Since: le.since, Token: le.token})
	rev, err := le.leases.kv.Update(ctx, le.key, b, le.rev)
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || errors.Is(err, jetstream.ErrKeyNotFound) {
			return ErrLost
		}
		return fmt.Errorf("coord: renew %s: %w", le.key, err)
	}
	le.rev = rev
	return nil
}

// Release gives the lease up, if it is still this holder's.
func (le *Lease) Release(ctx context.Context) error {
	err := le.leases.kv.Delete(ctx, le.key, jetstream.LastRevision(le.rev))
	if err != nil {
		return fmt.Errorf("coord: release %s: %w", le.key, err)
	}
	return nil
}

// Token is the holding's fencing token.
func (le *Lease) Token() uint64 { return le.token }

// Fenced says whether a token is older than the lease's current holding:
// a write carrying it comes from a holder that lost the lease.
func (l *Leases) Fenced(ctx context.Context, key string, token uint64) (bool, error) {
	cur, err := l.Current(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return token < cur.Token, nil
}

// Lead campaigns for the lease on key until ctx ends: whenever it takes
// the lease, lead runs with a context that ends when the lease is lost or
// ctx ends, and the lease is renewed every third of its TTL meanwhile.
// The token is the holding's fencing token. A lead that returns by itself
// gives the lease up, and the campaign goes on after a third of the TTL.
func (l *Leases) Lead(ctx context.Context, key string, me Holding, lead func(ctx context.Context, token uint64)) error {
	tick := l.ttl / 3
	for ctx.Err() == nil {
		lease, _, err := l.acquire(ctx, key, me)
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(tick):
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			lead(lctx, lease.Token())
		}()
		t := time.NewTicker(tick)
		renewed := time.Now()
	renewing:
		for {
			select {
			case <-ctx.Done():
				break renewing
			case <-done:
				break renewing
			case <-t.C:
				rctx, rcancel := context.WithTimeout(ctx, tick)
				err := lease.Renew(rctx)
				rcancel()
				switch {
				case err == nil:
					renewed = time.Now()
				case errors.Is(err, ErrLost):
					break renewing
				case time.Since(renewed) > 2*tick:
					// Not renewed for two thirds of the TTL (the bus does
					// not answer): stop before another can take it over.
					break renewing
				}
			}
		}
		t.Stop()
		cancel()
		<-done
		rctx, rcancel := context.WithTimeout(context.Background(), time.Second)
		_ = lease.Release(rctx) // a successor need not wait out the TTL; refused when no longer ours
		rcancel()
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(tick):
			}
		}
	}
	return nil
}
