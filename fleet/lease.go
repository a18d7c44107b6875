package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrHeld is a lease another member holds.
var ErrHeld = errors.New("lease held by another member")

// A lease is a key of the fleet's bucket that one member writes and keeps
// writing. The bucket's MaxAge is the lease's TTL: a key not written for
// that long expires, whoever wrote it last. Per-key TTLs are not used on
// purpose: an Update drops them (the key then never expires).
//
// Who holds a lease is decided only by the answers to Create and Update,
// never by a Get: a follower may answer a read stale.
//
// The holder stops using what the lease guards at its fence, half the TTL
// after the last renewal the server confirmed was sent: the key cannot
// expire before the TTL has passed since that write, so another member can
// take the lease only after the holder has let go, by at least half the
// TTL less the difference in clock rates, whatever the clocks' offsets.
type Lease struct {
	kv    jetstream.KeyValue
	key   string
	value []byte
	ttl   time.Duration

	mu    sync.Mutex // Renew may run on Keep's goroutine while others read the fence
	rev   uint64     // the revision our last write made
	fence time.Time  // monotonic: stop using the lease by then
}

// Acquire takes the lease at key if nobody holds it, or ErrHeld.
func Acquire(ctx context.Context, kv jetstream.KeyValue, key string, value []byte, ttl time.Duration) (*Lease, error) {
	sent := time.Now()
	rev, err := kv.Create(ctx, key, value)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return nil, fmt.Errorf("acquire %s: %w", key, ErrHeld)
	}
	if err != nil {
		return nil, fmt.Errorf("acquire %s: %w", key, err)
	}
	return &Lease{kv: kv, key: key, value: value, ttl: ttl, rev: rev, fence: sent.Add(ttl / 2)}, nil
}

// Key is the lease's key in the bucket.
func (l *Lease) Key() string { return l.key }

// Fence is when the holder must have stopped using what the lease guards
// unless a renewal succeeds before.
func (l *Lease) Fence() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fence
}

// Valid reports whether the lease may still be used.
func (l *Lease) Valid() bool { return time.Now().Before(l.Fence()) }

// Renew writes the lease again, moving its fence and its expiry. A
// revision mismatch is not taken as the lease lost: on replicated buckets
// a correct-revision Update can fail spuriously under load, so the holder
// keeps trying until its fence, and only the fence ends the lease.
func (l *Lease) Renew(ctx context.Context) error {
	l.mu.Lock()
	last := l.rev
	l.mu.Unlock()
	sent := time.Now()
	rev, err := l.kv.Update(ctx, l.key, l.value, last)
	if err != nil {
		return fmt.Errorf("renew %s: %w", l.key, err)
	}
	l.mu.Lock()
	l.rev, l.fence = rev, sent.Add(l.ttl/2)
	l.mu.Unlock()
	return nil
}

// Release gives the lease up at once, if it is still ours.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	l.fence = time.Time{}
	rev := l.rev
	l.mu.Unlock()
	if err := l.kv.Delete(ctx, l.key, jetstream.LastRevision(rev)); err != nil {
		return fmt.Errorf("release %s: %w", l.key, err)
	}
	return nil
}

// Keep renews the lease every interval until ctx ends or the lease passes
// its fence without a renewal, and returns a context that ends with it:
// tie the guarded resource (a Genesys channel) to that context, and it is
// let go before another member can take the lease. The returned release
// ends the keeping and deletes the lease.
func (l *Lease) Keep(ctx context.Context, interval time.Duration) (held context.Context, release func(context.Context) error) {
	held, cancel := context.WithCancelCause(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		fence := time.NewTimer(time.Until(l.Fence()))
		defer fence.Stop()
		for {
			select {
			case <-held.Done():
				return
			case <-fence.C:
				cancel(fmt.Errorf("lease %s: %w", l.key, errFenced))
				return
			case <-tick.C:
				rctx, rcancel := context.WithDeadline(held, l.Fence())
				err := l.Renew(rctx)
				rcancel()
				if err == nil {
					fence.Reset(time.Until(l.Fence()))
				}
			}
		}
	}()
	return held, func(ctx context.Context) error {
		cancel(context.Canceled)
		<-done
		return l.Release(ctx)
	}
}

// errFenced ends a kept lease that could not be renewed in time.
var errFenced = errors.New("not renewed before its fence")

// IsFenced reports whether a kept lease's context ended at its fence.
func IsFenced(held context.Context) bool { return errors.Is(context.Cause(held), errFenced) }
