package publisher

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fail handles a failed send of rc: retry it, or give it up if no retry can
// help. A failure whose cause JetStream must be asked about parks the record
// until the asker replies (see lookups.go); the others go on meanwhile.
func (p *Publisher) fail(rc *rec, err error) {
	reason, permanent := classify(err)
	if permanent {
		p.giveUp(rc, reason, err)
		return
	}
	switch {
	case reason == ReasonNoResponders && !p.closing:
		// No stream listens on the subject: its leader is gone (a node
		// down, an election), or no stream covers it.
		if at, ok := p.noStreamAt[rc.msg.Subject]; ok && !rc.sentAt.After(at) {
			p.giveUp(rc, ReasonNoStream, errNoStream(rc.msg.Subject))
			return
		}
		// Sends to it made before this one and still unanswered went to
		// that leader, and their answers will not come either (see
		// voidLeaderless).
		if p.leaderless[rc.msg.Subject] < rc.sendN {
			p.leaderless[rc.msg.Subject] = rc.sendN
		}
		p.countRetry(reason)
		p.cool(rc)
		return
	case reason == ReasonTimeout && p.ackedSendN > rc.sendN:
		// A record sent after it was acked: NATS is fine, this record is
		// not.
		p.ownFailure(rc, reason, err)
		return
	case reason == ReasonTimeout && !p.closing && p.link.nc.IsConnected() && !time.Now().Before(p.jsQuietUntil):
		// Nothing acked since: is JetStream there for the subject?
		p.park(question{askAnswers, rc.msg.Subject}, rc)
		return
	}
	p.countRetry(reason)
	p.pushRetry(rc)
	p.pause(reason, err)
}

// ownFailure handles a record's own missing ack while JetStream answers: it
// is sent again at once, without pausing the others, and given up after
// maxAttempts such failures.
func (p *Publisher) ownFailure(rc *rec, reason string, err error) {
	rc.attempts++
	if rc.attempts >= p.o.maxAttempts {
		p.giveUp(rc, ReasonUnacked, fmt.Errorf("no ack in %d sends while JetStream answered: %w", rc.attempts, err))
		return
	}
	p.countRetry(reason)
	p.pushRetry(rc)
}

// pause holds every send back for the backoff: one pause per round of
// failures, since a disconnect fails everything in flight at once, and
// that is one failure, not thousands.
func (p *Publisher) pause(reason string, err error) {
	now := time.Now()
	if now.Before(p.holdUntil) {
		return
	}
	p.holdUntil = now.Add(p.backoff)
	if n, ok := p.retryLog.allow(now); ok {
		p.log.Warn("publish failed; retrying", "reason", reason, "err", err, "backoff", p.backoff,
			"inflight", len(p.inflight), "retrying", len(p.retry)-p.retryHead, "suppressed", n)
	}
	p.backoff = min(2*p.backoff, p.o.backoffMax)
}

// voidLeaderless fails the sends still in flight to a subject that
// answered no responders since, as that answer does: the leader they went
// to is gone, and their answers with it. They are sent again once a leader
// is there (the same ids, so a copy the old leader stored is dropped),
// instead of waiting out the ack timeout.
func (p *Publisher) voidLeaderless() {
	if len(p.leaderless) == 0 {
		return
	}
	for n, rc := range p.inflight {
		if last, ok := p.leaderless[rc.msg.Subject]; ok && n < last {
			delete(p.inflight, n)
			p.countRetry(ReasonNoResponders)
			p.cool(rc)
		}
	}
	clear(p.leaderless)
}

func errNoStream(subj string) error {
	return fmt.Errorf("no stream covers subject %s", subj) // formatted: a copy
}

func (p *Publisher) countRetry(reason string) {
	p.retried.Add(1)
	if p.o.obs.Retried != nil {
		p.o.obs.Retried(reason)
	}
}

// giveUp ends rc without storing it: counted, and logged at most once a
// second with its subject, topic, id and size, never its body.
func (p *Publisher) giveUp(rc *rec, reason string, err error) {
	p.failed.Add(1)
	p.obsFailed(reason)
	if n, ok := p.failLog.allow(time.Now()); ok {
		// Clones: the strings point into a buffer that will be reused,
		// and a handler may keep them.
		p.log.Error("event not stored: no retry can store it", "reason", reason, "err", err,
			"subject", strings.Clone(rc.msg.Subject), "topic", strings.Clone(rc.vals[1]),
			"id", strings.Clone(rc.id()), "bytes", len(rc.msg.Data), "suppressed", n)
	}
	rc.failed = true
	p.finished = append(p.finished, rc)
}

func classify(err error) (reason string, permanent bool) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return ReasonTimeout, false
	case errors.Is(err, nats.ErrDisconnected):
		return ReasonDisconnected, false
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return ReasonNoResponders, false
	case errors.Is(err, nats.ErrMaxPayload):
		return ReasonTooLarge, true
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, jetstream.ErrInvalidJSAck):
		return ReasonInvalid, true
	case errors.Is(err, nats.ErrPermissionViolation):
		return ReasonDenied, true
	case errors.As(err, &apiErr):
		if apiErr.ErrorCode == errCodeDuplicateInProcess {
			// An earlier send of this id is still being agreed on by a
			// replicated stream: it may yet be stored (the next send is
			// then acked as a duplicate) or be lost with a leader change.
			return ReasonInProcess, false
		}
		if apiErr.Code >= 500 || apiErr.ErrorCode == errCodeAccountResourcesExceeded {
			// The account's quota is full like a full stream (503): the
			// event fits once old messages age out or the quota is raised.
			return ReasonServer, false
		}
		return ReasonRejected, true
	default:
		return ReasonClient, false
	}
}

// A publish the server refuses for permissions gets no ack: the server
// reports it on the connection ("Permissions Violation for Publish to
// "subj""), and the async publish would only time out. The connection's
// error handler passes such reports here; the run goroutine then gives up
// the records to that subject that were sent before the report came, and
// only those, so a permission granted later is used at once.
type denial struct {
	subject string
	at      time.Time
	err     error
}

const deniedPrefix = "Permissions Violation for Publish to "

// onAsyncError runs on nats.go's goroutine for every async error of link
// gen's connection.
func (p *Publisher) onAsyncError(gen uint64, err error) {
	subj, ok := deniedSubject(err)
	if !ok {
		return
	}
	p.resMu.Lock()
	if l := p.cur.Load(); l != nil && l.gen == gen {
		p.denials = append(p.denials, denial{subject: subj, at: time.Now(), err: err})
	}
	p.resMu.Unlock()
	p.signal()
}

// deniedSubject is the subject of a publish the server refused for
// permissions, from the error nats.go passes to the connection's error
// handler.
func deniedSubject(err error) (string, bool) {
	if !errors.Is(err, nats.ErrPermissionViolation) {
		return "", false
	}
	msg := err.Error()
	i := strings.Index(msg, deniedPrefix)
	if i < 0 {
		return "", false
	}
	subj := strings.Trim(strings.TrimSpace(msg[i+len(deniedPrefix):]), `"`)
	return subj, subj != ""
}

// failDenied gives up the records in flight that a reported violation names.
func (p *Publisher) failDenied(denials []denial) {
	for _, d := range denials {
		for n, rc := range p.inflight {
			if rc.msg.Subject != d.subject || rc.sentAt.After(d.at) {
				continue
			}
			delete(p.inflight, n)
			p.giveUp(rc, ReasonDenied, fmt.Errorf("publish to %s: %w", d.subject, d.err))
		}
	}
}
