package connector

import (
	"context"
	"net/http"
	"slices"
	"time"
)

// The handovers: a rotation brings up a new channel before the old one
// ends; a swap answers a closing warning with a second socket on the same
// channel. Both keep the old socket reading until the new one receives.

// handoverData is what exists only during a handover: the machine holds
// one exactly while in state handover, and enter drops it when the
// handover ends, so nothing of it outlives the handover by mistake.
type handoverData struct {
	cand   *socket   // the replacement socket: answered a ping, not yet taken over
	proven bool      // cand handed on an event, or the grace passed: its subscriptions deliver
	rot    *rotation // the replacement channel's data; nil for a closing swap
}

// rotation is a handover to a new channel.
type rotation struct {
	next    *heldChannel // the replacement, made and subscribed; kept across failed attempts
	busy    bool         // a rotation job is out
	attempt int          // failed attempts
	audit   *correlationAudit

	// The replacement follows the slot's topics while the handover lasts:
	// a topic the old channel holds must be on it, and receiving, before
	// the old channel is let go (covers).
	subBusy    bool      // a subscription of the replacement is out
	subAttempt int       // its failed or refused subscriptions in a row
	addedAt    time.Time // when it last gained a topic after it was made; zero: never
}

func (ho *handoverData) kind() string {
	if ho.rot != nil {
		return "rotation"
	}
	return "closing_swap"
}

func (m *machine) rotation() *rotation {
	if m.ho == nil {
		return nil
	}
	return m.ho.rot
}

// dropHandover lets go of what a handover still holds as it ends: its
// timers, a candidate never promoted, an audit never reported, a
// replacement channel never taken over, and the spare.
func (m *machine) dropHandover(ho *handoverData) {
	m.cancel(tGrace)
	if ho.cand != nil {
		m.closeSock(ho.cand)
		ho.cand = nil
	}
	r := ho.rot
	if r == nil {
		return
	}
	m.cancel(tRotate)
	m.cancel(tReplacementSub)
	if r.audit != nil {
		if m.sock != nil {
			m.sock.audit.Store(nil)
		}
		r.audit = nil
	}
	if r.next != nil {
		m.emptyChannel(r.next.info.ID) // made, never taken over: nobody reads it
		r.next = nil
	}
	if !m.spare.lettingGo {
		m.releaseSpare()
	}
}

// rotate starts a planned rotation: a new channel, subscribed and
// receiving, before the old one ends.
func (m *machine) rotate() {
	switch {
	case m.state == live && m.spare.lettingGo:
		// The last rotation's old channel is still being emptied and so
		// still holds the spare.
		m.after(tRotate, 100*time.Millisecond)
	case m.state == live:
		m.enter(handover, &handoverData{rot: &rotation{}})
		m.requestSpare()
	case m.rotation() != nil:
		if m.spare.held && !m.ho.rot.busy && m.ho.cand == nil {
			m.startRotation() // a retry after a failed attempt
		}
	case m.ho != nil:
		m.after(tRotate, time.Second) // after the socket swap
	}
	// Not connected: the reconnect re-arms the rotation.
}

// requestSpare waits for the connector's spare channel in a job.
//
// Invariant (budget): a slot makes a second channel only while it holds
// the spare, and holds it until the replaced channel is emptied.
func (m *machine) requestSpare() {
	if m.spare.held {
		m.startRotation()
		return
	}
	if m.spare.wanted {
		return
	}
	m.spare.wanted = true
	sp := m.s.c.spare
	m.startJob(func(ctx context.Context) any {
		if sp.acquire(ctx) {
			return evSpare{}
		}
		return nil
	})
}

func (m *machine) onSpare() {
	m.spare.wanted = false
	m.spare.held = true
	if m.rotation() != nil && m.cur != nil {
		m.startRotation()
		return
	}
	m.releaseSpare() // the rotation ended otherwise while we waited
}

func (m *machine) releaseSpare() {
	if m.spare.held {
		m.spare.held = false
		m.s.c.spare.release()
	}
}

// startRotation makes (or, after a failed attempt, dials again) the
// replacement channel.
//
// Invariant (no leak): a replacement made by an earlier attempt is reused;
// only a replacement Genesys says is gone is made anew.
func (m *machine) startRotation() {
	r := m.ho.rot
	if r.busy {
		return
	}
	r.busy = true
	j := connectJob{mayCreate: true, tokenAfter: m.cur.info.TokenExpires, lenient: true}
	if r.next != nil {
		next := r.next.info
		j.reuse = &next
	}
	s := m.s
	m.startJob(func(ctx context.Context) any { return evConnected{rotation: true, res: s.connect(ctx, ctx, j)} })
}

func (m *machine) onRotated(res connectResult) error {
	r := m.rotation()
	if r == nil || !r.busy {
		m.discard(res) // not expected: a rotation ends only with no job out
		return nil
	}
	r.busy = false
	if res.made {
		r.next = &heldChannel{info: res.ch, created: time.Now(), topics: res.topics, rejected: res.rejected}
		r.addedAt, r.subAttempt = time.Time{}, 0
		m.subscribeReplacement(false) // the topics may have changed while it was made
	}
	if res.err == nil {
		res.err = m.adopt(res.sock)
	}
	if res.err != nil {
		if Permanent(res.err) {
			return res.err
		}
		r.attempt++
		if m.cur == nil {
			m.endRotation() // the old channel died meanwhile
			return nil
		}
		wait := backoff(r.attempt, time.Second, 30*time.Second)
		if r.attempt == 1 {
			m.s.log.Warn("channel rotation failed, retrying", "wait", wait, "err", res.err)
		} else {
			m.s.log.Debug("channel rotation failed again", "attempt", r.attempt, "wait", wait, "err", res.err)
		}
		// Invariant (no leak): the retry backs off, growing, and dials the
		// replacement already made.
		m.retryRotation(wait)
		return nil
	}
	m.ho.cand = res.sock
	m.candidateUp()
	return nil
}

// subscribeReplacement puts the slot's current topics on a rotation's
// replacement when they changed since it was subscribed, or, with
// retryRefused, when it refused some the old channel holds.
func (m *machine) subscribeReplacement(retryRefused bool) {
	r := m.rotation()
	if r == nil || r.next == nil || r.subBusy {
		return
	}
	topics := m.s.currentTopics()
	if slices.Equal(topics, r.next.topics) && (!retryRefused || len(r.next.rejected) == 0) {
		return
	}
	m.cancel(tReplacementSub)
	r.subBusy = true
	api, id := m.s.c.api, r.next.info.ID
	m.startJob(func(ctx context.Context) any {
		rejected, err := api.subscribe(ctx, id, topics, true)
		return evSubscribed{chID: id, topics: topics, rejected: rejected, err: err}
	})
}

func (m *machine) onReplacementSubscribed(r *rotation, ev evSubscribed) {
	r.subBusy = false
	if ev.err != nil {
		if IsStatus(ev.err, http.StatusNotFound) {
			return // the replacement is gone: its socket, or its next dial, hears it
		}
		r.subAttempt++
		wait := backoff(r.subAttempt, time.Second, 30*time.Second)
		m.s.log.Warn("subscribing the replacement channel failed; the old channel keeps its topics, retrying", "wait", wait, "err", ev.err)
		m.after(tReplacementSub, wait)
		return
	}
	gained := gainedTopics(r.next, ev.topics, ev.rejected)
	r.next.topics, r.next.rejected = ev.topics, ev.rejected
	if gained {
		// A topic new to a channel takes Genesys a moment to wire: an
		// event read before proves nothing of it, only the grace does.
		r.addedAt = time.Now()
		if m.ho.cand != nil {
			m.ho.proven = false
			m.after(tGrace, m.s.c.opts.HandoverGrace)
		}
	}
	if !r.next.covers(m.cur, m.s.currentTopics()) {
		r.subAttempt++
		wait := backoff(r.subAttempt, time.Second, 30*time.Second)
		m.s.log.Warn("the replacement channel refused topics the old channel holds; they stay on the old channel until it takes them",
			"rejected", len(ev.rejected), "wait", wait)
		m.after(tReplacementSub, wait)
	} else {
		r.subAttempt = 0
	}
	m.subscribeReplacement(false) // the topics may have changed again meanwhile
	m.tryPromote("topics placed")
}

// gainedTopics reports whether a subscription answered with topics and
// rejected puts a topic on ch it did not receive before.
func gainedTopics(ch *heldChannel, topics []string, rejected []rejectedTopic) bool {
	before := ch.receives()
	after := (&heldChannel{topics: topics, rejected: rejected}).receives()
	for t := range after {
		if _, ok := before[t]; !ok {
			return true
		}
	}
	return false
}

// receives is the set of topics the channel is subscribed to and Genesys
// did not refuse.
func (ch *heldChannel) receives() map[string]struct{} {
	refused := make(map[string]struct{}, len(ch.rejected))
	for _, r := range ch.rejected {
		refused[r.Topic] = struct{}{}
	}
	out := make(map[string]struct{}, len(ch.topics))
	for _, entry := range ch.topics {
		for _, t := range expandSubscription(entry) {
			if _, no := refused[t]; !no {
				out[t] = struct{}{}
			}
		}
	}
	return out
}

// covers reports whether ch receives every topic that old receives and
// the slot still wants: only then may old be let go.
func (ch *heldChannel) covers(old *heldChannel, want []string) bool {
	if old == nil {
		return true
	}
	has, held := ch.receives(), old.receives()
	for _, entry := range want {
		for _, t := range expandSubscription(entry) {
			if _, oldHas := held[t]; !oldHas {
				continue
			}
			if _, ok := has[t]; !ok {
				return false
			}
		}
	}
	return true
}

// candidateUp: a replacement socket answered a ping. A pong proves only
// that Genesys has the socket; its subscriptions may not deliver yet.
//
// Invariant (overlap): the old socket reads on until the replacement
// handed on an event (evReceiving) or HandoverGrace passed, and, in a
// rotation, holds every topic the old channel holds; unless there is no
// old socket left to keep.
func (m *machine) candidateUp() {
	ho := m.ho
	if m.sock == nil {
		m.promote("no socket to overlap")
		return
	}
	if r := ho.rot; r != nil {
		// Two channels read the same topics now: check that they see
		// one event under one correlation id, as the dedup id assumes.
		r.audit = newCorrelationAudit()
		m.sock.audit.Store(&auditTap{audit: r.audit, side: 0})
		ho.cand.audit.Store(&auditTap{audit: r.audit, side: 1})
	}
	m.after(tGrace, m.s.c.opts.HandoverGrace)
	select {
	case <-ho.cand.delivering:
		// It read an event before it became the candidate, so its
		// evReceiving came too early to count. Under backpressure its
		// dial returned on that event, the pong unread behind it.
		m.onReceiving(ho.cand)
	default:
	}
}

// onReceiving: the candidate handed on an event. That proves its
// subscriptions deliver, except those it gained less than the grace ago.
func (m *machine) onReceiving(sock *socket) {
	ho := m.ho
	if ho == nil || sock != ho.cand || ho.cand == nil {
		return
	}
	if r := ho.rot; r != nil && !r.addedAt.IsZero() && time.Since(r.addedAt) < m.s.c.opts.HandoverGrace {
		return // tGrace decides
	}
	ho.proven = true
	m.tryPromote("receiving")
}

func (m *machine) onGrace() {
	if ho := m.ho; ho != nil && ho.cand != nil {
		ho.proven = true
		m.tryPromote("grace")
	}
}

// tryPromote lets the candidate take over once it is proven receiving
// and, in a rotation, holds every topic the old channel holds.
func (m *machine) tryPromote(proof string) {
	ho := m.ho
	if ho == nil || ho.cand == nil || !ho.proven {
		return
	}
	if r := ho.rot; r != nil {
		if r.subBusy {
			return // its answer tries again
		}
		if !r.next.covers(m.cur, m.s.currentTopics()) {
			if m.timers[tReplacementSub].t == nil {
				m.subscribeReplacement(true) // a topic it refused is now on the old channel
			}
			return
		}
	}
	m.promote(proof)
}

func (m *machine) candidateLost(gone bool) {
	ho := m.ho
	ho.cand, ho.proven = nil, false
	m.cancel(tGrace)
	r := ho.rot
	if r == nil { // a closing swap
		if m.sock != nil {
			m.enter(live, nil)
			return
		}
		m.enter(connecting, nil)
		m.connect()
		return
	}
	if r.audit != nil {
		if m.sock != nil {
			m.sock.audit.Store(nil)
		}
		r.audit = nil
	}
	if gone {
		r.next = nil // made anew at the next attempt
		r.subBusy = false
		m.cancel(tReplacementSub)
	}
	r.attempt++
	if m.cur == nil {
		m.endRotation()
		return
	}
	m.retryRotation(backoff(r.attempt, time.Second, 30*time.Second))
}

// retryRotation tries the rotation again after wait, unless Genesys warned
// the old socket meanwhile and the rotation can be put off (answerWarning).
func (m *machine) retryRotation(wait time.Duration) {
	if m.sock != nil && m.sock.warned && m.answerWarning() {
		return
	}
	m.after(tRotate, wait)
}

// takeReplacement makes the rotation's replacement the slot's channel; a
// subscription of it still out becomes the channel's resubscription.
func (m *machine) takeReplacement(r *rotation) {
	m.cur, r.next = r.next, nil
	m.noteRefusals()
	m.subscribedOnce = true
	if r.subBusy {
		m.resubFor, r.subBusy = m.cur.info.ID, false
	}
}

// endRotation: the old channel ended before a replacement was up. The
// replacement channel, if made, becomes the slot's channel; there is one
// channel again, so the spare goes back.
func (m *machine) endRotation() {
	r := m.ho.rot
	if r.next != nil {
		if m.cur != nil {
			m.emptyChannel(m.cur.info.ID) // no socket reads it any more
		}
		m.takeReplacement(r)
	}
	m.down.attempts = r.attempt
	if m.down.attempts > 0 {
		m.enter(backingOff, nil)
		m.after(tRetry, backoff(m.down.attempts, 250*time.Millisecond, 30*time.Second))
		return
	}
	m.enter(connecting, nil)
	m.connect()
}

// promote makes the replacement the slot's socket and lets the old go.
func (m *machine) promote(proof string) {
	ho := m.ho
	old, oldCh := m.sock, m.cur
	m.sock, ho.cand = ho.cand, nil
	if r := ho.rot; r != nil {
		audit := r.audit
		r.audit = nil
		m.takeReplacement(r)
		m.s.c.obs.Reconnect(ReasonRotate)
		m.s.log.Info("channel rotated before expiry", "ref", channelRef(m.cur.info.ID), "channel_deadline", m.cur.info.deadline(), "proof", proof)
		// Before enter: the spare stays ours while the old channel is
		// emptied, and ending the handover must not give it back first.
		m.letGo(old, oldCh, audit)
		m.enter(live, nil)
	} else {
		m.enter(live, nil)
		m.s.c.obs.Reconnect(ReasonClosing)
		m.s.log.Info("socket replaced after closing warning", "proof", proof)
		if old != nil {
			m.closeSock(old)
		}
	}
	if !m.down.since.IsZero() {
		m.recovered()
	}
	m.after(tRotate, time.Until(rotateAt(&m.cur.info, m.cur.created)))
	m.resubscribe(false)
	if m.sock.warned {
		// Warned while it was the candidate: Genesys closes it soon.
		m.s.log.Info("the socket that took over was warned it closes; replacing it in turn")
		m.beginSwap()
	}
}

// letGo closes the replaced socket and empties the replaced channel, which
// Genesys keeps until its deadline: empty and unconnected, it is the first
// Genesys evicts, so it no longer takes a place in anyone's budget. Then
// the spare goes back.
func (m *machine) letGo(old *socket, oldCh *heldChannel, audit *correlationAudit) {
	if oldCh == nil {
		if old != nil {
			m.closeSock(old)
		}
		m.releaseSpare()
		return
	}
	m.spare.lettingGo = true
	api, log, id, c, cur := m.s.c.api, m.s.log, oldCh.info.ID, m.s.c, m.sock
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

// answerWarning: Genesys closes the slot's socket in about a minute. A
// live slot replaces it with a second socket on the channel (a closing
// swap). A rotation replaces it anyway, in time once its candidate is up.
// One without a candidate may back off up to 30 s and so outlast the
// socket: if it holds nothing yet, it is put off until after a swap. It
// is not while its job is out (which may be making a channel under the
// spare; its answer asks again, retryRotation), nor once it made its
// replacement (a subscription of it may be out, and dropping it would
// race that). It reports whether a swap started.
func (m *machine) answerWarning() bool {
	switch {
	case m.state == live:
		m.beginSwap()
		return true
	case m.rotation() != nil && m.ho.cand == nil && !m.ho.rot.busy && m.ho.rot.next == nil && m.cur != nil:
		m.s.log.Info("socket warned it closes during a rotation; replacing it first, rotating after")
		m.enter(live, nil)
		// Re-armed here too: should the swap fail, the slot stays live.
		m.after(tRotate, time.Until(rotateAt(&m.cur.info, m.cur.created)))
		m.beginSwap()
		return true
	}
	return false
}

// beginSwap answers a closing warning: a second socket on the same channel
// replaces this one, which Genesys closes in about a minute.
func (m *machine) beginSwap() {
	m.enter(handover, &handoverData{})
	s, ch := m.s, m.cur.info
	m.startJob(func(ctx context.Context) any {
		sock, err := s.dial(ctx, ctx, ch)
		return evReplaced{sock: sock, err: err}
	})
}

func (m *machine) onReplaced(ev evReplaced) {
	if m.ho == nil || m.ho.rot != nil {
		if ev.sock != nil {
			m.closeSock(ev.sock)
		}
		return
	}
	err := ev.err
	if err == nil {
		err = m.adopt(ev.sock)
	}
	if err != nil {
		if m.sock != nil {
			m.enter(live, nil)
			m.s.log.Warn("replacing a closing socket failed, will reconnect when it closes", "err", err)
			return
		}
		m.enter(connecting, nil)
		m.connect()
		return
	}
	m.ho.cand = ev.sock
	m.candidateUp()
}
