package publisher

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// loop is the state of the run goroutine (and of Close once run has ended):
// no lock guards it.
type loop struct {
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
	voidUpTo  uint64
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
	answers           []*nats.Msg // per round: collected from the ack inbox
	refused           []refusal   // per round: answers that were errors
	spare             []sendError
	spareDenials      []denial
	noStream          map[string]bool // per round: no stream covers the subject
	streamAnswers     map[string]bool // per round: JetStream answers for the subject
	jsQuietUntil      time.Time       // JetStream did not answer: do not ask again before
	dedup             dedupState
	closing           bool // Close is draining the last outcomes: ask the server nothing
	lastTrim          time.Time
	redialing         bool
	// lazy wakes run to collect the acks that did not wake it (see run)
	// while records are in flight; lazyArmed says it is set.
	lazy         *time.Timer
	lazyArmed    bool
	redialCancel context.CancelFunc
	failLog      logLimiter
	retryLog     logLimiter
}

func (l *loop) init(o options) {
	l.inflight = make(map[uint64]*rec, o.maxInFlight)
	l.oldestSent = 1
	l.backoff = o.backoffMin
	l.noStream = make(map[string]bool)
	l.streamAnswers = make(map[string]bool)
	l.dedup.init()
	l.failLog.every = time.Second
	l.retryLog.every = 5 * time.Second
	l.lastTrim = time.Now()
}

// lazyAckWait bounds how long an ack may wait in the inbox for the run
// goroutine while nothing waits for it (see run).
const lazyAckWait = 10 * time.Millisecond

// sendError is a send nats.go refused (closed connection, payload too
// large), reported by the Publish call that sent it inline.
type sendError struct {
	gen   uint64 // the link it was sent on: a replaced one's are void
	sendN uint64
	err   error
}

// refusal is an answer that was an error, kept for the end of the round.
type refusal struct {
	rc  *rec
	err error
}

// addSendError hands a failed inline send to the run goroutine and wakes it.
func (p *Publisher) addSendError(e sendError) {
	p.resMu.Lock()
	p.sendErrs = append(p.sendErrs, e)
	p.resMu.Unlock()
	p.signal()
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
		if wait > 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		p.armLazy()
		p.release()
		// An ack nothing waits for does not wake run: at everyday rates
		// every event would otherwise cost one more goroutine woken (a
		// futex wake and a spinning thread, which the CPU profile at 1,000
		// events/s shows as most of the sidecar's cost); the lazy timer,
		// or whatever wakes run next, collects it. Acks wake run when
		// records wait for room in flight, or a Flush, Close or blocked
		// Publish waits for bytes to be released. A refused send wakes it
		// through addSendError; an answer that is an error (no responders)
		// waits like an ack, as its retry would wait for a backoff anyway.
		var ackC <-chan *nats.Msg
		if p.waiting.Load() > 0 || p.bufferedN.Load() > int64(len(p.inflight)) {
			ackC = p.link.acks.c
		}
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

// processResults settles what came back since the last round: the answers
// in the ack inbox (first, if run's select took one), refused sends,
// sends a dropped connection voided, overdue acks and permission
// violations.
func (p *Publisher) processResults(first *nats.Msg) {
	p.resMu.Lock()
	errs, denials := p.sendErrs, p.denials
	p.sendErrs, p.denials = p.spare[:0], p.spareDenials[:0]
	p.resMu.Unlock()
	defer func() {
		clear(errs)
		p.spare = errs[:0]
		clear(denials)
		p.spareDenials = denials[:0]
	}()
	answers := p.collectAnswers(first)
	defer func() {
		clear(answers)
		p.answers = answers[:0]
	}()
	now := time.Now()
	if len(answers) == 0 && len(errs) == 0 && len(denials) == 0 &&
		p.voidUpTo < p.oldestSent && !p.overdue(now) {
		return
	}
	clear(p.noStream)
	clear(p.streamAnswers)
	gen := p.link.gen
	// Acks first: a timeout in the same round as the ack of a record sent
	// after it is still that record's own failure (see ownTimeout).
	refused := p.refused[:0]
	for _, m := range answers {
		n, ok := p.link.acks.sendOf(m)
		rc := p.inflight[n]
		if !ok || rc == nil {
			continue // settled already: timed out, voided or given up
		}
		duplicate, err := parseAck(m)
		if err != nil {
			refused = append(refused, refusal{rc, err})
			continue
		}
		delete(p.inflight, n)
		p.ackedSendN = max(p.ackedSendN, n)
		p.finishAcked(rc, duplicate, now)
	}
	for _, r := range refused {
		if p.inflight[r.rc.sendN] == r.rc {
			delete(p.inflight, r.rc.sendN)
			p.fail(r.rc, r.err)
		}
	}
	clear(refused)
	p.refused = refused[:0]
	for _, e := range errs {
		if rc := p.inflight[e.sendN]; e.gen == gen && rc != nil {
			delete(p.inflight, e.sendN)
			p.fail(rc, e.err)
		}
	}
	p.voidInFlight()
	p.expire(now)
	p.failDenied(denials)
	p.inFlightN.Store(int64(len(p.inflight)))
}

// collectAnswers takes what the ack inbox holds now (more keeps coming; the
// next round takes it).
func (p *Publisher) collectAnswers(first *nats.Msg) []*nats.Msg {
	answers := p.answers[:0]
	if first != nil {
		answers = append(answers, first)
	}
	c := p.link.acks.c
	for range len(c) {
		answers = append(answers, <-c)
	}
	return answers
}

// voidInFlight fails, as disconnected, the sends made on a connection that
// has dropped since: the server may have stored them, but their acks went
// with the connection. They are sent again (the same ids, so JetStream
// drops a copy it has) once the connection is back.
func (p *Publisher) voidInFlight() {
	if p.voidUpTo < p.oldestSent {
		return
	}
	for n, rc := range p.inflight {
		if n <= p.voidUpTo {
			delete(p.inflight, n)
			p.fail(rc, nats.ErrDisconnected)
		}
	}
	p.voidUpTo = 0
}

// overdue reports whether the oldest send in flight has waited its ack
// timeout.
func (p *Publisher) overdue(now time.Time) bool {
	rc := p.oldestInFlight()
	return rc != nil && now.Sub(rc.sentAt) >= p.o.ackTimeout
}

// oldestInFlight moves oldestSent up past settled sends and returns the
// record sent then, or nil with nothing in flight.
func (p *Publisher) oldestInFlight() *rec {
	if len(p.inflight) == 0 {
		p.oldestSent = p.sendN + 1
		return nil
	}
	for ; p.oldestSent <= p.sendN; p.oldestSent++ {
		if rc := p.inflight[p.oldestSent]; rc != nil {
			return rc
		}
	}
	return nil
}

// expire fails the sends whose ack is overdue, oldest first: one deadline
// for the publisher rather than a timer per message.
func (p *Publisher) expire(now time.Time) {
	for {
		rc := p.oldestInFlight()
		if rc == nil || now.Sub(rc.sentAt) < p.o.ackTimeout {
			return
		}
		delete(p.inflight, rc.sendN)
		p.fail(rc, jetstream.ErrAsyncPublishTimeout)
	}
}

// ackDue is how long until the oldest send in flight times out (0: nothing
// is in flight).
func (p *Publisher) ackDue() time.Duration {
	rc := p.oldestInFlight()
	if rc == nil {
		return 0
	}
	return max(time.Until(rc.sentAt.Add(p.o.ackTimeout)), time.Microsecond)
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
		room := p.o.maxInFlight - len(p.inflight)
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
			p.inflight[rc.sendN] = rc
			if err := p.transmit(rc); err != nil {
				delete(p.inflight, rc.sendN)
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
