package publisher

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// loop is the state of the run goroutine (and of Close once run has ended):
// no lock guards it.
type loop struct {
	inflight map[*nats.Msg]*rec
	// orphans were given up while nats.go still awaited their ack; their
	// outcome is still to come, and they still count against max in flight
	// as nats.go counts them against its own limit.
	orphans   map[*nats.Msg]struct{}
	retry     []*rec // failed, to be sent again in acceptance order
	retryHead int
	retrySort bool
	checkDue  bool // retries were added since the last dedup check
	holdUntil time.Time
	backoff   time.Duration
	// sendN counts sends; ackedSendN is the highest sendN acked. A timeout of
	// a record sent before an acked one is that record's own failure.
	sendN, ackedSendN uint64
	finished          []*rec
	batch             []*rec
	spare             []result
	spareDenials      []denial
	noStream          map[string]bool // per round: no stream covers the subject
	answers           map[string]bool // per round: JetStream answers for the subject
	jsQuietUntil      time.Time       // JetStream did not answer: do not ask again before
	dedup             dedupState
	closing           bool // Close is draining the last outcomes: ask the server nothing
	lastTrim          time.Time
	redialing         bool
	// lazy wakes run to collect acks that did not wake it (see addResult)
	// while records are in flight; lazyArmed says it is set.
	lazy         *time.Timer
	lazyArmed    bool
	redialCancel context.CancelFunc
	failLog      logLimiter
	retryLog     logLimiter
}

func (l *loop) init(o options) {
	l.inflight = make(map[*nats.Msg]*rec, o.maxInFlight)
	l.orphans = make(map[*nats.Msg]struct{})
	l.backoff = o.backoffMin
	l.noStream = make(map[string]bool)
	l.answers = make(map[string]bool)
	l.dedup.init()
	l.failLog.every = time.Second
	l.retryLog.every = 5 * time.Second
	l.lastTrim = time.Now()
}

// lazyAckBatch and lazyAckWait bound how long an ack may wait for the run
// goroutine: see addResult.
const (
	lazyAckBatch = 128
	lazyAckWait  = 10 * time.Millisecond
)

// addResult queues an outcome for the run goroutine. An ack that nothing
// waits for does not wake it: at everyday rates every event would
// otherwise cost one more goroutine hand-off (a futex wake and a spinning
// thread, which the CPU profile at 1,000 events/s shows as most of the
// sidecar's cost), and the next Publish, or run's lazyAckWait timer while
// records are in flight, picks the acks up anyway. It wakes run at once
// for a failure (a retry or a give-up is due), when records wait for room
// in flight, when a Flush, Close or blocked Publish waits for bytes to be
// released, and every lazyAckBatch outcomes. The ack's latency is taken
// here, as it arrives.
func (p *Publisher) addResult(r result) {
	r.at = time.Now()
	p.resMu.Lock()
	p.results = append(p.results, r)
	n := len(p.results)
	p.resMu.Unlock()
	if r.err != nil || n >= lazyAckBatch || p.waiting.Load() > 0 ||
		p.bufferedN.Load() > p.inFlightN.Load() {
		p.signal()
	}
}

func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Publisher) run() {
	defer close(p.done)
	defer p.lazy.Stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		p.sendMu.Lock()
		p.processResults()
		p.watchLink()
		var timerC <-chan time.Time
		wait := p.send()
		if trim := p.maybeTrim(); trim > 0 && (wait == 0 || trim < wait) {
			wait = trim
		}
		if wait > 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		p.armLazy()
		p.release()
		// Only run replaces p.link, so run reads it unlocked.
		status := p.link.status
		p.sendMu.Unlock()
		select {
		case <-p.wake:
		case <-status:
		case l := <-p.redialed:
			p.sendMu.Lock()
			p.swap(l)
			p.sendMu.Unlock()
		case <-timerC:
		case <-p.lazy.C:
			p.sendMu.Lock()
			p.lazyArmed = false
			p.sendMu.Unlock()
		case <-p.quit:
			p.stopRedial()
			return
		}
		timer.Stop()
	}
}

// armLazy sets the lazy timer while records are in flight and it is not
// set yet; called with sendMu held.
func (p *Publisher) armLazy() {
	if len(p.inflight) > 0 && !p.lazyArmed {
		p.lazy.Reset(lazyAckWait)
		p.lazyArmed = true
	}
}

// canSendInline reports whether Publish may send a record itself: only
// sending is due (no retries, pause, dedup check or room to wait for), so
// the record goes out exactly as run would send it. Called with sendMu and
// mu held.
func (p *Publisher) canSendInline() bool {
	return !p.closing && p.retryHead == len(p.retry) && !p.checkDue &&
		len(p.inflight)+len(p.orphans) < p.o.maxInFlight &&
		!time.Now().Before(p.holdUntil) && p.link.nc.IsConnected()
}

// sendInline sends rc from the Publish call that accepted it, while run
// sleeps, and lets go of sendMu. At everyday rates a hand-off to run per
// event (a futex wake, and a second thread spinning up to take it) costs
// more CPU than all the rest the sidecar does with the event, and adds a
// hop of latency. A send that fails is left to run, as an outcome: its
// handling may ask the server (is any stream there?), which must not hold
// up the socket that called Publish.
func (p *Publisher) sendInline(rc *rec) {
	p.sendN++
	now := time.Now()
	rc.sendN, rc.sentAt, rc.firstSent = p.sendN, now, now
	p.inflight[&rc.msg] = rc
	_, err := p.link.js.PublishMsgAsync(&rc.msg, p.pubOpts...)
	gen := p.link.gen
	p.inFlightN.Store(int64(len(p.inflight)))
	p.armLazy()
	p.sendMu.Unlock()
	if err != nil {
		p.addResult(result{gen: gen, msg: &rc.msg, err: err}) // wakes run
	}
}

func (p *Publisher) processResults() {
	p.resMu.Lock()
	res, denials := p.results, p.denials
	p.results, p.denials = p.spare[:0], p.spareDenials[:0]
	p.resMu.Unlock()
	defer func() {
		clear(res)
		p.spare = res[:0]
		clear(denials)
		p.spareDenials = denials[:0]
	}()
	if len(res) == 0 && len(denials) == 0 {
		return
	}
	clear(p.noStream)
	clear(p.answers)
	gen := p.link.gen
	// Acks first: a timeout that arrived in the same round as the ack of a
	// record sent after it is still that record's own failure.
	for _, r := range res {
		if r.gen == gen && r.err == nil {
			if rc, ok := p.inflight[r.msg]; ok {
				p.ackedSendN = max(p.ackedSendN, rc.sendN)
			}
		}
	}
	for _, r := range res {
		if r.gen != gen {
			continue // a replaced connection's: its records are being sent again
		}
		rc, ok := p.inflight[r.msg]
		if !ok {
			delete(p.orphans, r.msg)
			continue
		}
		delete(p.inflight, r.msg)
		if r.err != nil {
			p.fail(rc, r.err)
			continue
		}
		p.finishAcked(rc, r.ack.Duplicate, r.at)
	}
	p.failDenied(denials)
	p.inFlightN.Store(int64(len(p.inflight)))
}

// finishAcked ends rc stored; at is when its ack arrived.
func (p *Publisher) finishAcked(rc *rec, duplicate bool, at time.Time) {
	p.acked.Add(1)
	if duplicate {
		p.dups.Add(1)
	}
	if p.o.obs.Acked != nil {
		p.o.obs.Acked(at.Sub(rc.accepted), duplicate)
	}
	p.backoff = p.o.backoffMin
	p.finished = append(p.finished, rc)
}

// send publishes retries first, then new records, in acceptance order, while
// connected and not pausing after a failure. It returns how long the pause
// still lasts.
func (p *Publisher) send() time.Duration {
	defer func() { p.inFlightN.Store(int64(len(p.inflight))) }()
	for {
		if wait := time.Until(p.holdUntil); wait > 0 {
			return wait
		}
		if !p.link.nc.IsConnected() {
			return 0 // the CONNECTED status, or a redial, wakes run
		}
		if p.checkDue {
			p.checkStored()
			if wait := time.Until(p.holdUntil); wait > 0 {
				return wait
			}
		}
		room := p.o.maxInFlight - len(p.inflight) - len(p.orphans)
		if room <= 0 {
			return 0
		}
		batch := p.next(room)
		if len(batch) == 0 {
			return 0
		}
		hold := p.holdUntil
		now := time.Now()
		for i, rc := range batch {
			if !p.holdUntil.Equal(hold) {
				// A failure started a pause: the rest waits with the retries,
				// still in order, without counting as retried.
				p.pushRetry(batch[i:]...)
				break
			}
			p.sendN++
			rc.sendN, rc.sentAt = p.sendN, now
			if rc.firstSent.IsZero() {
				rc.firstSent = now
			}
			p.inflight[&rc.msg] = rc
			if _, err := p.link.js.PublishMsgAsync(&rc.msg, p.pubOpts...); err != nil {
				delete(p.inflight, &rc.msg)
				p.fail(rc, err)
			}
		}
		clear(batch)
	}
}

// next takes up to n records to send: the oldest retries first.
func (p *Publisher) next(n int) []*rec {
	p.batch = p.batch[:0]
	if p.retryHead < len(p.retry) {
		if p.retrySort {
			n := copy(p.retry, p.retry[p.retryHead:])
			clear(p.retry[n:])
			p.retry, p.retryHead = p.retry[:n], 0
			slices.SortFunc(p.retry, func(a, b *rec) int { return cmp.Compare(a.seq, b.seq) })
			p.retrySort = false
		}
		k := min(n, len(p.retry)-p.retryHead)
		p.batch = append(p.batch, p.retry[p.retryHead:p.retryHead+k]...)
		clear(p.retry[p.retryHead : p.retryHead+k])
		p.retryHead += k
		if p.retryHead == len(p.retry) {
			p.retry, p.retryHead = p.retry[:0], 0
		}
		return p.batch
	}
	p.mu.Lock()
	for range n {
		rc := p.queue.pop()
		if rc == nil {
			break
		}
		p.batch = append(p.batch, rc)
	}
	p.mu.Unlock()
	return p.batch
}

func (p *Publisher) pushRetry(rcs ...*rec) {
	p.retry = append(p.retry, rcs...)
	p.retrySort = true
	p.checkDue = true
}

// release returns the bytes of finished records, wakes blocked publishers and
// finished flushes, and recycles the records.
func (p *Publisher) release() {
	if len(p.finished) == 0 {
		return
	}
	p.mu.Lock()
	for _, rc := range p.finished {
		p.buffered--
		p.bufBytes -= rc.size
		if rc.failed {
			p.notStored++
		}
		for _, w := range p.flushes {
			if rc.seq <= w.target {
				w.remaining--
			}
		}
	}
	if len(p.flushes) > 0 {
		p.flushes = slices.DeleteFunc(p.flushes, func(w *flushWaiter) bool {
			if w.remaining > 0 {
				return false
			}
			close(w.done)
			return true
		})
	}
	if p.space != nil {
		close(p.space)
		p.space = nil
	}
	p.bufferedN.Store(int64(p.buffered))
	p.bufBytesN.Store(p.bufBytes)
	p.obsBuffered(p.bufBytes)
	p.mu.Unlock()

	for _, rc := range p.finished {
		p.put(rc)
	}
	clear(p.finished)
	p.finished = p.finished[:0]
}

// maybeTrim trims the free list once per trimEvery to the peak the buffer
// reached meanwhile, and says when to come back (0: nothing to trim).
func (p *Publisher) maybeTrim() time.Duration {
	now := time.Now()
	if next := p.lastTrim.Add(p.o.trimEvery); now.Before(next) {
		if p.freeBytesNow() <= 1<<20 {
			return 0
		}
		return next.Sub(now)
	}
	p.lastTrim = now
	p.mu.Lock()
	peak := p.peakBytes
	p.peakBytes = p.bufBytes
	if p.buffered == 0 {
		p.queue.shrink()
	}
	p.mu.Unlock()
	p.trimFree(peak)
	if len(p.retry) == 0 && cap(p.retry) > 4096 {
		p.retry, p.retryHead = nil, 0
	}
	if p.freeBytesNow() <= 1<<20 {
		return 0
	}
	return p.o.trimEvery
}

func (p *Publisher) obsFailed(reason string) {
	if p.o.obs.Failed != nil {
		p.o.obs.Failed(reason)
	}
}

func (p *Publisher) obsBuffered(n int64) {
	if p.o.obs.BufferedBytes != nil {
		p.o.obs.BufferedBytes(n)
	}
}

// logLimiter lets one line through per period and counts the rest.
type logLimiter struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time) (suppressed int, ok bool) {
	if now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return n, true
}
