package connector

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"
)

// waitQueued waits until the limiter holds the given numbers of waiting
// channel and repair calls.
func waitQueued(t *testing.T, l *RESTLimiter, channels, repairs int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l.mu.Lock()
		c, r, wake := l.channels, len(l.repairs), l.wake
		l.mu.Unlock()
		if c == channels && r == repairs {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting: %d channel and %d repair calls, want %d and %d", c, r, channels, repairs)
		}
		select {
		case <-wake:
		case <-time.After(10 * time.Millisecond): // a waiter joining does not wake anyone
		}
	}
}

func TestRESTLimiterServesChannelCallsFirst(t *testing.T) {
	l := NewRESTLimiter(600, 1) // a token every 100ms, a bucket of one
	ctx := context.Background()
	repair := WithRESTPriority(ctx, PriorityRepair)
	if _, err := l.Wait(repair); err != nil { // empties the bucket
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []string
	var wg sync.WaitGroup
	call := func(ctx context.Context, name string) {
		wg.Go(func() {
			if _, err := l.Wait(ctx); err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
		})
	}
	for i, name := range []string{"repair1", "repair2", "repair3"} {
		call(repair, name)
		waitQueued(t, l, 0, i+1)
	}
	// The bucket is empty and three repairs wait: the first channel call
	// borrows at once, the second waits for the next token, ahead of them.
	start := time.Now()
	if _, err := l.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	first := time.Since(start)
	waited, err := l.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	before := len(order)
	mu.Unlock()
	wg.Wait()
	if before != 0 {
		t.Fatalf("%d repairs went before the channel calls: %v", before, order)
	}
	if first > 20*time.Millisecond || waited > 250*time.Millisecond {
		t.Fatalf("channel calls waited %s (borrowing) and %s (the next token), want ~0 and ≤ 200ms", first, waited)
	}
	if order[0] != "repair1" || order[1] != "repair2" || order[2] != "repair3" {
		t.Fatalf("repairs served as %v, want the order they asked in", order)
	}
	st := l.Stats()
	if st.ChannelCalls != 2 || st.RepairCalls != 4 {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("channel waits: %s borrowing, %s for the next token; repairs waited %s in all", first, waited, st.RepairWait)
}

func TestRESTLimiterPauseHoldsEveryone(t *testing.T) {
	l := NewRESTLimiter(6000, 10)
	l.Pause(300 * time.Millisecond)
	start := time.Now()
	if _, err := l.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 290*time.Millisecond {
		t.Fatalf("a channel call went %s into a 300ms Retry-After", waited)
	}
	// A canceled waiter leaves the queue.
	ctx, cancel := context.WithCancel(WithRESTPriority(context.Background(), PriorityRepair))
	l.Pause(time.Hour)
	errc := make(chan error, 1)
	go func() { _, err := l.Wait(ctx); errc <- err }()
	waitQueued(t, l, 0, 1)
	cancel()
	if err := <-errc; err != context.Canceled {
		t.Fatalf("canceled wait: %v", err)
	}
	waitQueued(t, l, 0, 0)
}

func TestRESTLimiterRetryAfter(t *testing.T) {
	h := http.Header{}
	if d := retryAfter(h); d != time.Second {
		t.Errorf("none: %s", d)
	}
	h.Set("Retry-After", "7")
	if d := retryAfter(h); d != 7*time.Second {
		t.Errorf("seconds: %s", d)
	}
	h.Set("Retry-After", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	if d := retryAfter(h); d < 59*time.Minute {
		t.Errorf("date: %s", d)
	}
}
