package connector

import (
	"context"
	"net/http"
	"time"
)

// The handovers: a rotation brings up a new channel before the old one
// ends; a swap answers a closing warning with a second socket on the same
// channel. Both keep the old socket reading until the new one receives.

// rotate starts a planned rotation: a new channel, subscribed and
// receiving, before the old one ends.
func (m *machine) rotate() {
	switch {
	case m.state == live && m.letGoBusy:
		// The last rotation's old channel is still being emptied and so
		// still holds the spare.
		m.after(tRotate, 100*time.Millisecond)
	case m.state == live:
		m.state, m.kind = handover, rotation
		m.requestSpare()
	case m.state == handover && m.kind == rotation:
		if m.spare && !m.rotateBusy && m.cand == nil {
			m.startRotation() // a retry after a failed attempt
		}
	case m.state == handover:
		m.after(tRotate, time.Second) // after the socket swap
	}
	// Not connected: the reconnect re-arms the rotation.
}

// requestSpare waits for the connector's spare channel in a job.
//
// Invariant (budget): a slot makes a second channel only while it holds
// the spare, and holds it until the replaced channel is emptied.
func (m *machine) requestSpare() {
	if m.spare {
		m.startRotation()
		return
	}
	if m.spareWanted {
		return
	}
	m.spareWanted = true
	sp := m.s.c.spare
	m.startJob(func(ctx context.Context) any {
		if sp.acquire(ctx) {
			return evSpare{}
		}
		return nil
	})
}

func (m *machine) onSpare() {
	m.spareWanted = false
	m.spare = true
	if m.state == handover && m.kind == rotation && m.ch != nil {
		m.startRotation()
		return
	}
	m.releaseSpare() // the rotation ended otherwise while we waited
}

func (m *machine) releaseSpare() {
	if m.spare {
		m.spare = false
		m.s.c.spare.release()
	}
}

// startRotation makes (or, after a failed attempt, dials again) the
// replacement channel.
//
// Invariant (no leak): a replacement made by an earlier attempt is reused;
// only a replacement Genesys says is gone is made anew.
func (m *machine) startRotation() {
	if m.rotateBusy {
		return
	}
	m.rotateBusy = true
	j := connectJob{mayCreate: true, tokenAfter: m.ch.TokenExpires, lenient: true}
	if m.next != nil {
		next := *m.next
		j.reuse = &next
	}
	s := m.s
	m.startJob(func(ctx context.Context) any { return evConnected{rotation: true, res: s.connect(ctx, ctx, j)} })
}

func (m *machine) onRotated(res connectResult) error {
	m.rotateBusy = false
	if res.made {
		m.next, m.nextCreated, m.nextTopics, m.nextRejected = &res.ch, time.Now(), res.topics, res.rejected
	}
	if res.err != nil {
		if Permanent(res.err) {
			return res.err
		}
		m.rotAttempt++
		if m.ch == nil {
			m.endRotation() // the old channel died meanwhile
			return nil
		}
		wait := backoff(m.rotAttempt, time.Second, 30*time.Second)
		if m.rotAttempt == 1 {
			m.s.log.Warn("channel rotation failed, retrying", "wait", wait, "err", res.err)
		} else {
			m.s.log.Debug("channel rotation failed again", "attempt", m.rotAttempt, "wait", wait, "err", res.err)
		}
		// Invariant (no leak): the retry backs off, growing, and dials the
		// replacement already made.
		m.after(tRotate, wait)
		return nil
	}
	m.open[res.sock] = struct{}{}
	m.cand = res.sock
	m.candidateUp()
	return m.replayEarlyEnd(res.sock)
}

// candidateUp: a replacement socket answered a ping. A pong proves only
// that Genesys has the socket; its subscriptions may not deliver yet.
//
// Invariant (overlap): the old socket reads on until the replacement
// handed on an event (evReceiving) or HandoverGrace passed, unless there
// is no old socket left to keep.
func (m *machine) candidateUp() {
	if m.sock == nil {
		m.promote("no socket to overlap")
		return
	}
	if m.kind == rotation {
		// Two channels read the same topics now: check that they see
		// one event under one correlation id, as the dedup id assumes.
		m.audit = newCorrelationAudit()
		m.sock.audit.Store(&auditTap{audit: m.audit, side: 0})
		m.cand.audit.Store(&auditTap{audit: m.audit, side: 1})
	}
	select {
	case <-m.cand.delivering:
		// It read an event before it became the candidate, so its
		// evReceiving came too early to count. Under backpressure its
		// dial returned on that event, the pong unread behind it.
		m.promote("receiving")
		return
	default:
	}
	m.after(tGrace, m.s.c.opts.HandoverGrace)
}

// dropAudit ends an audit whose handover did not complete.
func (m *machine) dropAudit() {
	if m.audit != nil && m.sock != nil {
		m.sock.audit.Store(nil)
	}
	m.audit = nil
}

func (m *machine) candidateLost(gone bool) {
	m.cand = nil
	m.dropAudit()
	m.cancel(tGrace)
	switch m.kind {
	case rotation:
		if gone {
			m.next = nil // made anew at the next attempt
		}
		m.rotAttempt++
		if m.ch == nil {
			m.endRotation()
			return
		}
		m.after(tRotate, backoff(m.rotAttempt, time.Second, 30*time.Second))
	case closingSwap:
		m.kind = 0
		if m.sock != nil {
			m.state = live
			return
		}
		m.state = connecting
		m.connect()
	}
}

// endRotation: the old channel ended before a replacement was up. The
// replacement channel, if made, becomes the slot's channel; there is one
// channel again, so the spare goes back.
func (m *machine) endRotation() {
	m.dropAudit()
	m.cancel(tRotate)
	m.cancel(tGrace)
	if m.next != nil {
		m.setChannelAt(*m.next, m.nextCreated, m.nextTopics, m.nextRejected)
	}
	m.next, m.kind = nil, 0
	if !m.letGoBusy {
		m.releaseSpare()
	}
	m.attempt = m.rotAttempt
	m.rotAttempt = 0
	if m.attempt > 0 {
		m.state = backingOff
		m.after(tRetry, backoff(m.attempt, 250*time.Millisecond, 30*time.Second))
		return
	}
	m.state = connecting
	m.connect()
}

// promote makes the replacement the slot's socket and lets the old go.
func (m *machine) promote(proof string) {
	m.cancel(tGrace)
	old, oldCh := m.sock, m.ch
	m.sock, m.cand = m.cand, nil
	m.state = live
	switch m.kind {
	case rotation:
		m.setChannelAt(*m.next, m.nextCreated, m.nextTopics, m.nextRejected)
		m.next, m.rotAttempt = nil, 0
		m.s.c.obs.Reconnect(ReasonRotate)
		m.s.log.Info("channel rotated before expiry", "ref", channelRef(m.ch.ID), "channel_deadline", m.ch.deadline(), "proof", proof)
		m.letGo(old, oldCh, m.audit)
		m.audit = nil
	case closingSwap:
		m.s.c.obs.Reconnect(ReasonClosing)
		m.s.log.Info("socket replaced after closing warning", "proof", proof)
		if old != nil {
			m.closeSock(old)
		}
	}
	m.kind = 0
	if !m.lostSince.IsZero() {
		m.recovered()
	}
	m.after(tRotate, time.Until(rotateAt(m.ch, m.created)))
	m.resubscribe(false)
}

// letGo closes the replaced socket and empties the replaced channel, which
// Genesys keeps until its deadline: empty and unconnected, it is the first
// Genesys evicts, so it no longer takes a place in anyone's budget. Then
// the spare goes back.
func (m *machine) letGo(old *socket, oldCh *channelInfo, audit *correlationAudit) {
	if oldCh == nil {
		if old != nil {
			m.closeSock(old)
		}
		m.releaseSpare()
		return
	}
	m.letGoBusy = true
	api, log, id, c, cur := m.s.c.api, m.s.log, oldCh.ID, m.s.c, m.sock
	m.startJob(func(ctx context.Context) any {
		// Empty the channel first: that ends its stream, so the old
		// socket's reader soon has nothing left to read and close can
		// tell it has caught up, even while events arrive faster than
		// every few milliseconds (they now reach the new socket only).
		if err := api.unsubscribeAll(ctx, id); err != nil && !IsStatus(err, http.StatusNotFound) {
			log.Debug("emptying the replaced channel failed; it ends at its deadline anyway", "err", err)
		}
		if old != nil {
			old.close() // returns once its reader has handed on its last event
		}
		if audit != nil {
			cur.audit.Store(nil)
			c.reportAudit(audit)
		}
		return evLetGo{}
	})
}

// beginSwap answers a closing warning: a second socket on the same channel
// replaces this one, which Genesys closes in about a minute.
func (m *machine) beginSwap() {
	m.state, m.kind = handover, closingSwap
	s, ch := m.s, *m.ch
	m.startJob(func(ctx context.Context) any {
		sock, err := s.dial(ctx, ctx, ch)
		return evReplaced{sock: sock, err: err}
	})
}

func (m *machine) onReplaced(ev evReplaced) {
	if m.state != handover || m.kind != closingSwap {
		if ev.sock != nil {
			m.closeSock(ev.sock)
		}
		return
	}
	if ev.err != nil {
		m.kind = 0
		if m.sock != nil {
			m.state = live
			m.s.log.Warn("replacing a closing socket failed, will reconnect when it closes", "err", ev.err)
			return
		}
		m.state = connecting
		m.connect()
		return
	}
	m.open[ev.sock] = struct{}{}
	m.cand = ev.sock
	m.candidateUp()
}
