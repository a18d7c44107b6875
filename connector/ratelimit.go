package connector

import (
	"context"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Genesys allows one access token 300 REST calls a minute
// (token.rate.per.minute), channel calls and every other call alike. gcnats
// keeps well under that by default, so a burst (a rollover of every
// channel, a repair after a gap) never meets a 429.
const (
	// DefaultRESTRate is gcnats' default budget of REST calls a minute
	// (GCNATS_REST_RATE).
	DefaultRESTRate = 180
)

// RESTPriority orders the REST calls that wait for the limiter.
type RESTPriority int

const (
	// PriorityChannel is a channel call (create, subscribe, HEAD, list):
	// a socket's recovery waits on it, so it goes first, and when the
	// bucket is empty it may borrow.
	PriorityChannel RESTPriority = iota
	// PriorityRepair is a state read after a gap: it waits for a token
	// while no channel call does, in the order repairs asked.
	PriorityRepair
)

func (p RESTPriority) String() string {
	if p == PriorityRepair {
		return "repair"
	}
	return "channel"
}

type restPriorityKey struct{}

// WithRESTPriority marks the REST calls made under ctx; a call without a
// mark is a channel call.
func WithRESTPriority(ctx context.Context, p RESTPriority) context.Context {
	return context.WithValue(ctx, restPriorityKey{}, p)
}

func restPriorityOf(ctx context.Context) RESTPriority {
	if p, ok := ctx.Value(restPriorityKey{}).(RESTPriority); ok {
		return p
	}
	return PriorityChannel
}

// RESTLimiter is one token bucket for all of a process's REST calls to one
// OAuth client's budget, with two priorities. Channel calls take a token
// whenever one is there, ahead of any waiting repair, and when the bucket
// is empty may borrow up to a burst more (the debt delays repairs, never a
// channel); repair calls take a token only when no channel call waits, one
// at a time in the order they asked. A 429 pauses everyone until its
// Retry-After and empties the bucket: Genesys counted more than we did.
//
// Over any minute at most rate + burst + borrow calls go out: 240 of
// Genesys' 300 at the defaults (180 a minute, bursts of 30).
type RESTLimiter struct {
	rate   float64 // tokens a second
	burst  float64 // the bucket's size
	borrow float64 // how far below empty channel calls may take it
	now    func() time.Time

	mu          sync.Mutex
	tokens      float64
	last        time.Time // when tokens was last brought up to date
	pausedUntil time.Time
	channels    int      // channel calls waiting
	repairs     []uint64 // tickets of waiting repair calls, oldest first
	ticket      uint64
	wake        chan struct{} // closed and replaced on every change
	stats       RESTLimiterStats
}

// RESTLimiterStats counts what a limiter let through.
type RESTLimiterStats struct {
	ChannelCalls, RepairCalls int
	// ChannelWait and RepairWait sum how long calls of each priority
	// waited for a token; MaxChannelWait is the longest one channel call
	// waited.
	ChannelWait, RepairWait, MaxChannelWait time.Duration
	// Paused counts 429s that paused the limiter.
	Paused int
	// Results counts answered and failed calls by priority and result
	// ("ok", "429", "4xx", "5xx", "error" for no answer): the
	// gcnats_rest_calls_total{priority,result} metric.
	Results map[RESTResult]int
}

// RESTResult keys RESTLimiterStats.Results.
type RESTResult struct {
	Priority string // "channel" or "repair"
	Result   string
}

func resultOf(status int, err error) string {
	switch {
	case err != nil:
		return "error"
	case status == http.StatusTooManyRequests:
		return "429"
	case status >= 500:
		return "5xx"
	case status >= 400:
		return "4xx"
	default:
		return "ok"
	}
}

// done records how a call the limiter let through ended, and pauses
// everyone after a 429 until its Retry-After.
func (l *RESTLimiter) done(ctx context.Context, resp *http.Response, err error) {
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	if status == http.StatusTooManyRequests {
		l.Pause(retryAfter(resp.Header))
	}
	key := RESTResult{Priority: restPriorityOf(ctx).String(), Result: resultOf(status, err)}
	l.mu.Lock()
	if l.stats.Results == nil {
		l.stats.Results = map[RESTResult]int{}
	}
	l.stats.Results[key]++
	l.mu.Unlock()
}

// NewRESTLimiter allows perMinute calls a minute (DefaultRESTRate when not
// positive) in bursts of up to burst (a sixth of a minute's when not
// positive); channel calls may borrow another burst.
func NewRESTLimiter(perMinute, burst int) *RESTLimiter {
	if perMinute <= 0 {
		perMinute = DefaultRESTRate
	}
	if burst <= 0 {
		burst = max(perMinute/6, 1)
	}
	l := &RESTLimiter{
		rate:   float64(perMinute) / 60,
		burst:  float64(burst),
		borrow: float64(burst),
		now:    time.Now,
		wake:   make(chan struct{}),
	}
	l.tokens = l.burst
	l.last = l.now()
	return l
}

// Wait takes a token for a call of ctx's priority (WithRESTPriority),
// waiting as long as the priority rules say, and returns how long it
// waited; an error only when ctx ends first.
func (l *RESTLimiter) Wait(ctx context.Context) (time.Duration, error) {
	prio := restPriorityOf(ctx)
	start := l.now()
	l.mu.Lock()
	var ticket uint64
	if prio == PriorityRepair {
		l.ticket++
		ticket = l.ticket
		l.repairs = append(l.repairs, ticket)
	} else {
		l.channels++
	}
	for {
		wait, ok := l.tryLocked(prio, ticket)
		if ok {
			waited := l.now().Sub(start)
			l.countLocked(prio, waited)
			l.leaveLocked(prio, ticket)
			l.mu.Unlock()
			return waited, nil
		}
		wake := l.wake
		l.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			l.mu.Lock()
			l.leaveLocked(prio, ticket)
			l.mu.Unlock()
			return l.now().Sub(start), ctx.Err()
		case <-wake:
		case <-timer.C:
		}
		timer.Stop()
		l.mu.Lock()
	}
}

// tryLocked takes a token if prio may have one now; otherwise it says how
// long until it may (a bound: a change wakes the waiter sooner).
func (l *RESTLimiter) tryLocked(prio RESTPriority, ticket uint64) (time.Duration, bool) {
	now := l.now()
	if now.Before(l.pausedUntil) {
		return l.pausedUntil.Sub(now), false
	}
	l.refillLocked(now)
	floor := 1.0 // a repair needs a whole token
	if prio == PriorityChannel {
		floor = 1 - l.borrow
	} else if l.channels > 0 || l.repairs[0] != ticket {
		// Behind a channel call or an older repair: woken when it takes
		// its token; the timeout only bounds a missed wake.
		return time.Second, false
	}
	if l.tokens >= floor {
		l.tokens--
		return 0, true
	}
	return time.Duration((floor - l.tokens) / l.rate * float64(time.Second)), false
}

func (l *RESTLimiter) refillLocked(now time.Time) {
	if now.After(l.last) {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
	}
}

// leaveLocked takes a call off the waiting lists and wakes the others,
// whose turn it may now be.
func (l *RESTLimiter) leaveLocked(prio RESTPriority, ticket uint64) {
	if prio == PriorityRepair {
		if i := slices.Index(l.repairs, ticket); i >= 0 {
			l.repairs = slices.Delete(l.repairs, i, i+1)
		}
	} else {
		l.channels--
	}
	l.wakeLocked()
}

func (l *RESTLimiter) wakeLocked() {
	close(l.wake)
	l.wake = make(chan struct{})
}

func (l *RESTLimiter) countLocked(prio RESTPriority, waited time.Duration) {
	if prio == PriorityRepair {
		l.stats.RepairCalls++
		l.stats.RepairWait += waited
		return
	}
	l.stats.ChannelCalls++
	l.stats.ChannelWait += waited
	l.stats.MaxChannelWait = max(l.stats.MaxChannelWait, waited)
}

// Pause stops every call until d from now (a 429's Retry-After) and
// empties the bucket: Genesys counted more calls than the bucket did, so
// the budget starts afresh when the pause ends.
func (l *RESTLimiter) Pause(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	until := l.now().Add(d)
	if until.After(l.pausedUntil) {
		l.pausedUntil = until
	}
	l.tokens = min(l.tokens, 0)
	l.last = l.pausedUntil
	l.stats.Paused++
	l.wakeLocked()
}

// Stats returns what the limiter let through so far.
func (l *RESTLimiter) Stats() RESTLimiterStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.stats
	st.Results = maps.Clone(l.stats.Results)
	return st
}

// retryAfter reads a 429's Retry-After (seconds or an HTTP date); a second
// when it has none that can be read.
func retryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return time.Second
}
