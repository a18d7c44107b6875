package publisher

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
)

// loop is the state of sending, settling and retrying. sendMu guards all
// of it: the run goroutine holds it while it works, Publish while it sends
// a record inline (see sendInline), and Close once run has ended. It is
// made of parts that say what each field is for.
type loop struct {
	// link is the connection in use. Only run replaces it (swap, under
	// sendMu), so run may read it without sendMu; an inline send reads it
	// under sendMu; Healthy, Conn and the asker read cur instead.
	link *link
	sends
	retries
	pacing
	round
	parking // records waiting for the asker, see lookups.go
	dedup   dedupState
	redialState
	// closing: Close is draining the last outcomes: ask the server nothing.
	closing  bool
	lastTrim time.Time // when the free list was last trimmed
	// lazy wakes run to collect the acks that did not wake it (see run)
	// while records are in flight; lazyArmed says it is set.
	lazy      *time.Timer
	lazyArmed bool
	failLog   logLimiter
	retryLog  logLimiter
}

// sends numbers the sends and keeps those awaiting an answer.
type sends struct {
	// inflight holds the records sent and not yet answered, by the send
	// number their answer replies to (see ackInbox). A send that was
	// settled otherwise (timed out, voided by a reconnect, denied) leaves
	// it, so its late answer finds nothing and is ignored.
	inflight map[uint64]*rec
	// oldestSent is the lowest send number that may still be in flight:
	// sends are numbered in time order, so the record there is the next
	// to time out.
	oldestSent uint64
	// voidUpTo: sends up to this number went out on a connection that
	// dropped since; their answers will never come (see voidInFlight).
	voidUpTo uint64
	// sendN counts sends; ackedSendN is the highest sendN acked. A timeout of
	// a record sent before an acked one is that record's own failure.
	sendN, ackedSendN uint64
}

// retries are the records that failed, to be sent again in acceptance
// order before any new one.
type retries struct {
	retry     []*rec
	retryHead int
	retrySort bool // appended to since sorted
	checkDue  bool // retries were added since the last dedup check
}

// pacing is when sending may go on after failures.
type pacing struct {
	holdUntil    time.Time     // every send waits until then (see pause)
	backoff      time.Duration // the next pause
	jsQuietUntil time.Time     // JetStream did not answer: do not ask again before
}

// round is scratch for one round of settling, kept for reuse.
type round struct {
	finished     []*rec      // acked or given up: to release
	batch        []*rec      // taken to send
	answers      []*nats.Msg // collected from the ack inbox
	refused      []refusal   // answers that were errors
	spare        []sendError
	spareDenials []denial
	// leaderless: the subjects answered no responders, with the latest
	// such send (see voidLeaderless).
	leaderless map[string]uint64
	// overtaken: the subjects whose acks overtook an earlier send still
	// unanswered, with the latest such send (see resendOvertaken).
	overtaken map[string]uint64
}

// redialState is a redial in progress (see watchLink).
type redialState struct {
	redialing    bool
	redialCancel context.CancelFunc
}

func (l *loop) init(o options) {
	l.inflight = make(map[uint64]*rec, o.maxInFlight)
	l.oldestSent = 1
	l.backoff = o.backoffMin
	l.leaderless = make(map[string]uint64)
	l.overtaken = make(map[string]uint64)
	l.parked = make(map[question][]*rec)
	l.noStreamAt = make(map[string]time.Time)
	l.dedup.init()
	l.failLog.every = time.Second
	l.retryLog.every = 5 * time.Second
	l.lastTrim = time.Now()
}

// lazyAckWait bounds how long an ack may wait in the inbox for the run
// goroutine while nothing waits for it (see run).
const lazyAckWait = 10 * time.Millisecond

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
	var answer *nats.Msg // taken from the ack inbox by the select
	for {
		p.sendMu.Lock()
		p.processResults(answer)
		answer = nil
		p.watchLink()
		var timerC <-chan time.Time
		wait := p.send()
		if trim := p.maybeTrim(); trim > 0 && (wait == 0 || trim < wait) {
			wait = trim
		}
		if due := p.ackDue(); due > 0 && (wait == 0 || due < wait) {
			wait = due
		}
		if due := p.coolDue(); due > 0 && (wait == 0 || due < wait) {
			wait = due
		}
		if wait > 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		p.armLazy()
		p.release()
		ackC := p.ackWakes()
		// Only run replaces p.link, so run reads it unlocked.
		status := p.link.status
		p.sendMu.Unlock()
		select {
		case <-p.wake:
		case answer = <-ackC:
		case st := <-status:
			if st == nats.RECONNECTING {
				p.sendMu.Lock()
				p.voidUpTo = p.sendN
				p.sendMu.Unlock()
			}
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

// ackWakes is the ack inbox when an ack is to wake run, else nil. An ack
// nothing waits for does not: at everyday rates every event would otherwise
// cost one more goroutine woken (a futex wake and a spinning thread, which
// the CPU profile at 1,000 events/s shows as most of the sidecar's cost);
// the lazy timer, or whatever wakes run next, collects it. Acks wake run
// when records wait for room in flight, or a Flush, Close or blocked
// Publish waits for bytes to be released. A refused send wakes it through
// addSendError; an answer that is an error (no responders) waits like an
// ack, as its retry would wait for a backoff anyway. Called with sendMu
// held.
func (p *Publisher) ackWakes() <-chan *nats.Msg {
	if p.waiting.Load() > 0 || p.bufferedN.Load() > int64(len(p.inflight)) {
		return p.link.acks.c
	}
	return nil
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
		len(p.inflight) < p.o.maxInFlight &&
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
	p.inflight[rc.sendN] = rc
	err := p.transmit(rc)
	gen := p.link.gen
	p.inFlightN.Store(int64(len(p.inflight)))
	p.armLazy()
	p.sendMu.Unlock()
	if err != nil {
		p.addSendError(sendError{gen: gen, sendN: rc.sendN, err: err})
	}
}

// transmit publishes rc's message with the reply subject of its send.
func (p *Publisher) transmit(rc *rec) error {
	rc.reply = p.link.acks.appendReply(rc.reply[:0], rc.sendN)
	rc.msg.Reply = bstr(rc.reply)
	return p.link.nc.PublishMsg(&rc.msg)
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
		room := p.o.maxInFlight - len(p.inflight)
		if room <= 0 {
			return 0
		}
		batch := p.next(room)
		if len(batch) == 0 {
			return 0
		}
		p.sendBatch(batch)
	}
}

// sendBatch sends batch, once send has found the connection up. The
// connection can drop while it sends: nats.go then refuses the rest (see
// Connect), rather than hold them for the reconnect.
func (p *Publisher) sendBatch(batch []*rec) {
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
		p.inflight[rc.sendN] = rc
		if err := p.transmit(rc); err != nil {
			delete(p.inflight, rc.sendN)
			p.fail(rc, err)
		}
	}
	clear(batch)
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
