package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fail handles a failed send of rc: retry it, or give it up if no retry can
// help.
func (p *Publisher) fail(rc *rec, err error) {
	reason, permanent := classify(err)
	if reason == ReasonNoResponders && p.uncovered(rc.msg.Subject) {
		if p.recreate(rc.msg.Subject) {
			p.countRetry(ReasonNoStream)
			p.pushRetry(rc)
			return
		}
		reason, permanent = ReasonNoStream, true
		err = fmt.Errorf("no stream covers subject %s", rc.msg.Subject) // formatted: a copy
	}
	if permanent {
		p.giveUp(rc, reason, err)
		return
	}
	// No ack while JetStream demonstrably works: NATS is fine, this record
	// is not. It is retried at once, without pausing the others, and given
	// up after maxAttempts such failures.
	if reason == ReasonTimeout && p.ownTimeout(rc) {
		rc.attempts++
		if rc.attempts >= p.o.maxAttempts {
			p.giveUp(rc, ReasonUnacked, fmt.Errorf("no ack in %d sends while JetStream answered: %w", rc.attempts, err))
			return
		}
		p.countRetry(reason)
		p.pushRetry(rc)
		return
	}
	p.countRetry(reason)
	p.pushRetry(rc)

	// One pause per round of failures: a disconnect fails everything in
	// flight at once, and that is one failure, not thousands.
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

// ownTimeout tells a record's own missing ack from NATS being unwell: it is
// the record's own when a record sent after it was acked, or, with nothing
// else acked (a quiet moment, or this record alone retried), when JetStream
// answers for its subject: no stream covers it, or the stream covering it
// answers an info request, so it has a leader and could have acked. While
// NATS hangs or is away neither holds, and nothing is given up.
func (p *Publisher) ownTimeout(rc *rec) bool {
	if p.ackedSendN > rc.sendN {
		return true
	}
	if p.closing || !p.link.nc.IsConnected() || time.Now().Before(p.jsQuietUntil) {
		return false
	}
	if v, ok := p.streamAnswers[rc.msg.Subject]; ok {
		return v
	}
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	defer cancel()
	name, err := p.link.js.StreamNameBySubject(ctx, rc.msg.Subject)
	v := errors.Is(err, jetstream.ErrStreamNotFound)
	if err == nil {
		_, err = p.link.js.Stream(ctx, name)
		v = err == nil
	}
	if !v {
		// JetStream does not answer: every timeout for a while is NATS's,
		// and asking again for each would stall the loop.
		p.jsQuietUntil = time.Now().Add(p.o.ackTimeout)
	}
	p.streamAnswers[strings.Clone(rc.msg.Subject)] = v // the subject points into a reused buffer
	return v
}

// recreate creates again the kept stream (WithStreams) that covers subj,
// once a round: true when it exists again, so that records to subj are
// sent again rather than given up. It runs on the run goroutine, which
// owns the connection's error handler that EnsureStream chains to.
func (p *Publisher) recreate(subj string) bool {
	if p.closing {
		return false
	}
	i := slices.IndexFunc(p.o.streams, func(c StreamConfig) bool {
		return slices.ContainsFunc(c.Subjects, func(f string) bool { return server.SubjectMatchesFilter(subj, f) })
	})
	if i < 0 {
		return false
	}
	cfg := p.o.streams[i]
	if ok, tried := p.recreated[cfg.Name]; tried {
		return ok
	}
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	defer cancel()
	_, err := EnsureStream(ctx, p.link.js, cfg)
	p.recreated[cfg.Name] = err == nil
	if err != nil {
		if n, ok := p.failLog.allow(time.Now()); ok {
			p.log.Error("no stream for the subject, and setting it up again failed", "stream", cfg.Name, "subject", strings.Clone(subj), "err", err, "suppressed", n)
		}
		return false
	}
	// Gone, or edited to leave the subject out: EnsureStream creates it or
	// puts its subjects back.
	p.log.Warn("no stream for the subject; set the stream up again", "stream", cfg.Name, "subject", strings.Clone(subj), "subjects", cfg.Subjects)
	// The other records of this round to its subjects are sent again too.
	for s, gone := range p.noStream {
		if gone && slices.ContainsFunc(cfg.Subjects, func(f string) bool { return server.SubjectMatchesFilter(s, f) }) {
			p.noStream[s] = false
		}
	}
	return true
}

// uncovered asks the server whether any stream covers subj; no responders
// also happens while a server restarts or a stream elects a leader, and those
// are worth waiting for. Answers are kept for one round of results.
func (p *Publisher) uncovered(subj string) bool {
	if p.closing {
		return false
	}
	if v, ok := p.noStream[subj]; ok {
		return v
	}
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	_, err := p.link.js.StreamNameBySubject(ctx, subj)
	cancel()
	v := errors.Is(err, jetstream.ErrStreamNotFound)
	p.noStream[strings.Clone(subj)] = v // subj points into a reused buffer
	return v
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
