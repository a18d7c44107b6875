package publisher

import (
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What comes back from the sends, settled by the run goroutine each round:
// JetStream's answers (acks and refusals), sends nats.go refused, sends a
// dropped connection voided, acks overdue, and permission violations.

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
		p.voidUpTo < p.oldestSent && !p.overdue(now) && !p.repliesWaiting() &&
		(len(p.cooling) == 0 || now.Before(p.cooling[0].until)) {
		return
	}
	p.settleAnswers(answers, now)
	gen := p.link.gen
	for _, e := range errs {
		if rc := p.inflight[e.sendN]; e.gen == gen && rc != nil {
			delete(p.inflight, e.sendN)
			p.fail(rc, e.err)
		}
	}
	p.voidLeaderless()
	p.voidInFlight()
	p.expire(now)
	p.failDenied(denials)
	p.resendOvertaken(now)
	if !p.closing {
		p.settleReplies(now)
	}
	p.inFlightN.Store(int64(len(p.inflight)))
}

// settleAnswers ends the records the answers ack, and fails those they
// refuse, after all the acks: a timeout in the same round as the ack of a
// record sent after it is still that record's own failure (see ownTimeout).
func (p *Publisher) settleAnswers(answers []*nats.Msg, now time.Time) {
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
		if old := p.oldestInFlight(); old != nil && old.sendN < n && p.overtaken[rc.msg.Subject] < n {
			p.overtaken[rc.msg.Subject] = n // the string lives until the round's records are released
		}
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
}

// overtakenGrace is how long a send whose answer is overtaken waits
// before it is taken for lost: long enough for what the server reports
// apart from the answers (a permission violation) to come in first.
const overtakenGrace = 200 * time.Millisecond

// resendOvertaken sends again the sends still unanswered when a later send
// to the same subject was acked: a stream answers its sends in order, so
// those went to a leader that is gone (shut down, or stepped down) and
// their answers with it. They are sent again now, with the same ids,
// instead of waiting out the ack timeout; each such send counts as the
// record's own failure (see ownFailure).
func (p *Publisher) resendOvertaken(now time.Time) {
	if len(p.overtaken) == 0 {
		return
	}
	for n, rc := range p.inflight {
		if last, ok := p.overtaken[rc.msg.Subject]; ok && n < last && now.Sub(rc.sentAt) >= overtakenGrace {
			delete(p.inflight, n)
			p.ownFailure(rc, ReasonTimeout, jetstream.ErrAsyncPublishTimeout)
		}
	}
	clear(p.overtaken)
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
