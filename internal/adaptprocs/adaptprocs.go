// Package adaptprocs runs a process on one P while it is nearly idle and on
// the Go runtime's default number of Ps while it is busy.
//
// At everyday rates gcnats sleeps between events, so every event (and every
// JetStream ack) wakes the process from idle. With two or more Ps the
// scheduler answers each such wake-up by waking a second thread to spin for
// more work, in case some follows; on a virtual machine a thread wake-up
// costs more than everything else the sidecar does with an event. Measured
// at 1,000 events/s on 2 vCPUs: 4 wake-ups and about 120 µs of CPU an event
// with two Ps, 2 and about 80 µs with one. Under load the second P is worth
// having (an embedded JetStream server shares the process), so Run watches
// the process's CPU time and moves between the two: one P after a few quiet
// intervals, the runtime's default again as soon as an interval is busy, or
// at once when the caller reports a backlog (WithBacklog): a burst after a
// quiet spell then does not spend up to an interval on one P.
//
// Run leaves GOMAXPROCS alone when the environment sets it (the operator
// chose) or when the runtime's default is already one (a CPU limit of a
// core or less).
package adaptprocs

import (
	"context"
	"os"
	"runtime"
	"time"
)

// Defaults of the policy. One P that was busy for half an interval is near
// the point where events queue behind each other, so that raises at once;
// lowering waits for a run of quiet intervals well below it, so that a load
// near either threshold does not flip back and forth (a flip stops the
// world for some microseconds, harmless but not free).
const (
	DefaultInterval = 500 * time.Millisecond
	defaultRaiseAt  = 0.5  // cores used in an interval
	defaultLowerAt  = 0.25 // cores used in an interval
	defaultQuietFor = 4    // intervals (2 s at the default interval)
)

// Option changes how Run adapts.
type Option func(*options)

type options struct {
	interval time.Duration
	policy   policy
	onChange func(Change)
	backlog  <-chan struct{}
}

// WithInterval sets how often Run reads the process's CPU time (default
// DefaultInterval); lowering waits for four quiet intervals.
func WithInterval(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.interval = d
		}
	}
}

// WithBacklog raises GOMAXPROCS at once, when it is one, on each receive
// from ch: the caller sees work queue up (a burst after a quiet spell)
// before an interval's CPU time can say so, up to an interval late. A
// backlog also counts as a busy interval: lowering waits for quiet ones
// after it. Send without blocking, on a buffered channel, when the backlog
// begins rather than for as long as it lasts.
func WithBacklog(ch <-chan struct{}) Option {
	return func(o *options) { o.backlog = ch }
}

// WithOnChange calls f after each change of GOMAXPROCS, from Run's
// goroutine.
func WithOnChange(f func(Change)) Option {
	return func(o *options) { o.onChange = f }
}

// Change is one move of GOMAXPROCS and the load that caused it.
type Change struct {
	From, To int
	// Used is the CPU the process used in the interval that decided, in
	// cores; 0 when a backlog decided.
	Used float64
	// Backlog says a backlog decided (WithBacklog), not an interval's CPU.
	Backlog bool
}

// Fixed says why Run would leave GOMAXPROCS alone in this process, or ""
// when it adapts it. It reads GOMAXPROCS as it is: ask before Run starts.
func Fixed() string {
	if _, set := os.LookupEnv("GOMAXPROCS"); set {
		return "GOMAXPROCS is set in the environment"
	}
	if runtime.GOMAXPROCS(0) <= 1 {
		return "the runtime's default is one P"
	}
	if _, err := processCPU(); err != nil {
		return err.Error()
	}
	return ""
}

// Run adapts GOMAXPROCS until ctx ends, then gives the runtime its default
// back (a shutdown that flushes a full buffer is busy) and returns. It
// returns at once when Fixed says why not to adapt.
func Run(ctx context.Context, opts ...Option) {
	if Fixed() != "" {
		return
	}
	o := options{
		interval: DefaultInterval,
		policy:   policy{raiseAt: defaultRaiseAt, lowerAt: defaultLowerAt, quietFor: defaultQuietFor},
	}
	for _, opt := range opts {
		opt(&o)
	}
	defer runtime.SetDefaultGOMAXPROCS()

	tick := time.NewTicker(o.interval)
	defer tick.Stop()
	var s state
	lastCPU, _ := processCPU()
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.backlog:
			if s.backlog() == raise {
				runtime.SetDefaultGOMAXPROCS()
				o.changed(Change{From: 1, To: runtime.GOMAXPROCS(0), Backlog: true})
			}
		case now := <-tick.C:
			cpu, err := processCPU()
			if err != nil {
				return // cannot happen once processCPU worked; the defer restores the default
			}
			used := (cpu - lastCPU).Seconds() / now.Sub(lastAt).Seconds()
			lastCPU, lastAt = cpu, now
			switch s.observe(o.policy, used) {
			case lower:
				from := runtime.GOMAXPROCS(1)
				o.changed(Change{From: from, To: 1, Used: used})
			case raise:
				runtime.SetDefaultGOMAXPROCS()
				o.changed(Change{From: 1, To: runtime.GOMAXPROCS(0), Used: used})
			}
		}
	}
}

func (o *options) changed(c Change) {
	if o.onChange != nil && c.From != c.To {
		o.onChange(c)
	}
}

// policy is when to move between one P and the default.
type policy struct {
	raiseAt  float64 // cores used in an interval at or above which the default comes back
	lowerAt  float64 // cores used in an interval below which it counts as quiet
	quietFor int     // quiet intervals in a row before one P
}

// state is the controller's state machine: on the default number of Ps
// (counting quiet intervals) or on one.
type state struct {
	onOne bool
	quiet int
}

// move is what an observation asks of GOMAXPROCS.
type move int

const (
	stay move = iota
	lower
	raise
)

// observe takes one interval's CPU use and says what to do.
func (s *state) observe(p policy, used float64) move {
	if s.onOne {
		if used >= p.raiseAt {
			s.onOne, s.quiet = false, 0
			return raise
		}
		return stay
	}
	if used >= p.lowerAt {
		s.quiet = 0
		return stay
	}
	s.quiet++
	if s.quiet < p.quietFor {
		return stay
	}
	s.onOne, s.quiet = true, 0
	return lower
}

// backlog takes a backlog the caller reported: busy, whatever the CPU.
func (s *state) backlog() move {
	s.quiet = 0
	if s.onOne {
		s.onOne = false
		return raise
	}
	return stay
}

func (m move) String() string {
	switch m {
	case lower:
		return "lower"
	case raise:
		return "raise"
	}
	return "stay"
}
