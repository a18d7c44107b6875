package publisher

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// producer publishes one record per millisecond, as events arrive from
// Genesys, until stopped, and remembers every id it handed over.
type producer struct {
	p    *Publisher
	fast bool // no pause between records: many in flight when the server goes
	base int  // the first record's number: producers side by side make distinct records
	stop chan struct{}
	done chan error

	mu  sync.Mutex
	ids map[string]bool
}

func startProducer(p *Publisher, fast bool) *producer {
	pr := &producer{p: p, fast: fast, stop: make(chan struct{}), done: make(chan error, 1), ids: map[string]bool{}}
	go pr.run()
	return pr
}

func (pr *producer) run() {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	data := make([]byte, 0, 256)
	for i := 0; ; i++ {
		var tickC <-chan time.Time
		if !pr.fast {
			tickC = tick.C
		}
		select {
		case <-pr.stop:
			pr.done <- nil
			return
		case <-tickC:
		default:
			if !pr.fast {
				select {
				case <-pr.stop:
					pr.done <- nil
					return
				case <-tickC:
				}
			}
		}
		r := testRecord(pr.base+i, data)
		if err := pr.p.Publish(context.Background(), r); err != nil {
			pr.done <- fmt.Errorf("publish %d: %w", i, err)
			return
		}
		pr.mu.Lock()
		pr.ids[string(r.ID)] = true
		pr.mu.Unlock()
	}
}

func (pr *producer) count() int {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	return len(pr.ids)
}

// waitCount waits until n more records than now have been published.
func (pr *producer) waitMore(t *testing.T, n int) {
	t.Helper()
	target := pr.count() + n
	waitFor(t, 20*time.Second, fmt.Sprintf("%d records published", target), func() bool { return pr.count() >= target })
}

func (pr *producer) finish(t *testing.T) map[string]bool {
	t.Helper()
	close(pr.stop)
	if err := <-pr.done; err != nil {
		t.Fatal(err)
	}
	return pr.ids
}

// outage publishes continuously through a server outage; down runs while the
// server is down. Afterwards every record must be in the stream exactly once.
func outage(t *testing.T, fast bool, down func(pr *producer), opts ...Option) {
	e := newEnv(t)
	p := newPublisher(t, e.js, opts...)
	pr := startProducer(p, fast)

	waitFor(t, 10*time.Second, "first acks", func() bool { return p.Stats().Acked >= 200 })
	e.stop(t)
	down(pr)
	e.restart(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stats %+v, connected %v", p.Stats(), e.nc.IsConnected())
		}
	})
	pr.waitMore(t, 200)
	target := uint64(pr.count())
	waitFor(t, 20*time.Second, "acks after the restart", func() bool { return p.Stats().Acked >= target })
	ids := pr.finish(t)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, e.js, "TEST", ids)
	st := p.Stats()
	if st.Accepted != uint64(len(ids)) || st.Acked != st.Accepted || st.Failed != 0 {
		t.Fatalf("stats %+v for %d records", st, len(ids))
	}
	t.Logf("%d records, stats %+v", len(ids), st)
}

// The server is shut down mid-stream and started again on the same port and
// store: nothing lost, nothing stored twice.
func TestPublishAcrossServerRestart(t *testing.T) {
	// As fast as the publisher takes them, so thousands are in flight when
	// the server goes; a 1 MiB buffer then blocks the producer while down.
	const limit = 1 << 20
	outage(t, true, func(pr *producer) {
		// Records keep arriving while it is down, until the buffer is full
		// and Publish blocks.
		target := pr.count() + 200
		waitFor(t, 20*time.Second, "records to arrive while down", func() bool {
			return pr.count() >= target || pr.p.waiting.Load() > 0
		})
	}, WithBufferBytes(limit))
}

// A 10-second outage, records arriving throughout.
func TestPublishAcrossTenSecondOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s outage")
	}
	outage(t, false, func(pr *producer) {
		start := pr.count()
		<-time.After(10 * time.Second) // the outage itself is the requirement
		if got := pr.count() - start; got < 1000 {
			t.Errorf("only %d records arrived during the outage", got)
		}
	})
}

// Three producers at everyday rates, so that Publish mostly sends records
// itself, through six quick restarts of the server, each with records in
// flight and a small buffer filling while it is down: every record once,
// and nothing left waiting.
func TestConcurrentPublishersAcrossQuickRestarts(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js, WithBufferBytes(64<<10))
	var prs []*producer
	for k := range 3 {
		pr := &producer{p: p, base: k * 10_000_000, stop: make(chan struct{}), done: make(chan error, 1), ids: map[string]bool{}}
		go pr.run()
		prs = append(prs, pr)
	}
	for round := range 6 {
		for _, pr := range prs {
			pr.waitMore(t, 50)
		}
		e.stop(t)
		// The outage's length is the scenario: none, then longer each round.
		time.Sleep(time.Duration(round) * 60 * time.Millisecond)
		e.restart(t)
	}
	for _, pr := range prs {
		pr.waitMore(t, 100)
	}
	ids := map[string]bool{}
	for _, pr := range prs {
		for id := range pr.finish(t) {
			ids[id] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, e.js, "TEST", ids)
	if st := p.Stats(); st.Buffered != 0 || st.InFlight != 0 || st.Failed != 0 {
		t.Fatalf("stats %+v after the flush", st)
	}
}
