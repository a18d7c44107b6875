package adaptprocs

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

func TestPolicy(t *testing.T) {
	const backlog = -1
	p := policy{raiseAt: 0.5, lowerAt: 0.25, quietFor: 3}
	for _, tc := range []struct {
		name string
		used []float64
		want []move
	}{
		{"quiet intervals lower after quietFor", []float64{0.1, 0.1, 0.1, 0.1}, []move{stay, stay, lower, stay}},
		{"a busy interval restarts the count", []float64{0.1, 0.1, 0.3, 0.1, 0.1, 0.1}, []move{stay, stay, stay, stay, stay, lower}},
		{"one busy interval raises at once", []float64{0, 0, 0, 0.2, 0.6}, []move{stay, stay, lower, stay, raise}},
		{"between the thresholds nothing moves", []float64{0, 0, 0, 0.4, 0.4, 0.3, 0.3, 0.3}, []move{stay, stay, lower, stay, stay, stay, stay, stay}},
		{"after a raise quiet is counted anew", []float64{0, 0, 0, 1, 0, 0, 0}, []move{stay, stay, lower, raise, stay, stay, lower}},
		// backlog: a backlog reported instead of an interval's CPU
		{"a backlog raises at once", []float64{0, 0, 0, backlog, 0, 0, 0}, []move{stay, stay, lower, raise, stay, stay, lower}},
		{"a backlog restarts the quiet count", []float64{0, 0, backlog, 0, 0, 0}, []move{stay, stay, stay, stay, stay, lower}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s state
			for i, u := range tc.used {
				var got move
				if u == backlog {
					got = s.backlog()
				} else {
					got = s.observe(p, u)
				}
				if got != tc.want[i] {
					t.Fatalf("interval %d (%.2f cores): got %v, want %v", i, u, got, tc.want[i])
				}
			}
		})
	}
}

func TestFixedByEnvironment(t *testing.T) {
	t.Setenv("GOMAXPROCS", "2")
	if Fixed() == "" {
		t.Fatal("Fixed says it adapts although GOMAXPROCS is set")
	}
	before := runtime.GOMAXPROCS(0)
	done := make(chan struct{})
	go func() { Run(t.Context(), WithInterval(time.Millisecond)); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return at once with GOMAXPROCS set")
	}
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS %d, was %d", got, before)
	}
}

// TestFollowsTheLoad runs the controller on this test process: idle, it
// drops to one P; a goroutine that spins brings the default back; idle
// again, one P; and when Run ends the default is restored.
func TestFollowsTheLoad(t *testing.T) {
	if why := Fixed(); why != "" {
		t.Skip(why)
	}
	def := runtime.GOMAXPROCS(0)
	changes := make(chan Change, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		Run(ctx, WithInterval(20*time.Millisecond), WithOnChange(func(c Change) { changes <- c }))
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })

	next := func(want int) Change {
		t.Helper()
		select {
		case c := <-changes:
			if c.To != want {
				t.Fatalf("GOMAXPROCS went %d → %d at %.2f cores, want → %d", c.From, c.To, c.Used, want)
			}
			if got := runtime.GOMAXPROCS(0); got != want {
				t.Fatalf("reported a change to %d, GOMAXPROCS is %d", want, got)
			}
			return c
		case <-time.After(30 * time.Second):
			t.Fatalf("no change to %d GOMAXPROCS in 30 s (now %d)", want, runtime.GOMAXPROCS(0))
		}
		return Change{}
	}

	if c := next(1); c.Used >= defaultLowerAt {
		t.Fatalf("lowered at %.2f cores", c.Used)
	}

	var spin atomic.Bool
	spin.Store(true)
	spun := make(chan struct{})
	go func() {
		defer close(spun)
		for spin.Load() {
		}
	}()
	c := next(def)
	spin.Store(false)
	<-spun
	if c.Used < defaultRaiseAt {
		t.Fatalf("raised at %.2f cores", c.Used)
	}

	next(1)
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != def {
		t.Fatalf("GOMAXPROCS %d after Run ended, want the default %d", got, def)
	}
}

// A backlog raises GOMAXPROCS at once, though the process uses no CPU to
// speak of, and holds it until quiet intervals follow.
func TestBacklogRaisesAtOnce(t *testing.T) {
	if why := Fixed(); why != "" {
		t.Skip(why)
	}
	def := runtime.GOMAXPROCS(0)
	changes := make(chan Change, 16)
	backlog := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		Run(ctx, WithInterval(20*time.Millisecond), WithBacklog(backlog), WithOnChange(func(c Change) { changes <- c }))
		close(done)
	}()
	t.Cleanup(func() { cancel(); <-done })
	next := func() Change {
		t.Helper()
		select {
		case c := <-changes:
			return c
		case <-time.After(30 * time.Second):
			t.Fatalf("no change of GOMAXPROCS in 30 s (now %d)", runtime.GOMAXPROCS(0))
		}
		return Change{}
	}
	if c := next(); c.To != 1 {
		t.Fatalf("first change to %d, want 1 while idle", c.To)
	}
	backlog <- struct{}{}
	if c := next(); c.To != def || !c.Backlog {
		t.Fatalf("after a backlog: %+v, want a raise to %d by the backlog", c, def)
	}
	if c := next(); c.To != 1 || c.Backlog {
		t.Fatalf("after quiet intervals: %+v, want one P again", c)
	}
}
