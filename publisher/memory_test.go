package publisher

import (
	"context"
	"errors"
	"runtime"
	"testing"
	"time"
)

func heapAlloc() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// WithBufferBytes bounds the memory records really take, not only their
// bytes: small records filling the buffer while NATS is down grow the heap
// by little more than the setting, and once they are stored the heap returns
// near where it was.
func TestBufferBytesBoundsHeap(t *testing.T) {
	const limit = 16 << 20
	e := newEnv(t)
	p := newPublisher(t, e.js, WithBufferBytes(limit), withTrimEvery(20*time.Millisecond))
	e.stop(t)
	base := heapAlloc()
	n := 0
	data := make([]byte, 0, 128)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		err := p.Publish(ctx, testRecord(n, data))
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n++
	}
	full := heapAlloc()
	growth := full - base
	t.Logf("%d records buffered, %d bytes counted, heap grew %d bytes", n, p.Stats().BufferedBytes, growth)
	if growth > limit*5/4+2<<20 {
		t.Fatalf("buffer of %d bytes grew the heap by %d bytes (%d records)", limit, growth, n)
	}

	e.restart(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// The records kept for reuse are let go once the outage's peak is past.
	waitFor(t, 10*time.Second, "the free list to shrink after the outage", func() bool {
		return p.freeBytesNow() < limit/8
	})
	// Measured as the start was, with the server down: its caches are not
	// the publisher's.
	e.stop(t)
	after := heapAlloc()

	t.Logf("heap %d bytes above the start after draining", after-base)
	if after-base > limit/4 {
		t.Fatalf("after draining, the heap is %d bytes above the start", after-base)
	}
}

// withTrimEvery shortens the free list's trim period for a test.
func withTrimEvery(d time.Duration) Option {
	return func(o *options) error {
		o.trimEvery = d
		return nil
	}
}
