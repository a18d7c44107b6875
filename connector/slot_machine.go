package connector

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"time"
)

// slotState is where a slot's machine is. Transitions happen only in step
// and the handlers it calls, one event at a time, on the slot's goroutine.
//
//	connecting --socket up--> live --rotate timer / closing warning--> handover
//	connecting --failed--> backingOff --retry timer--> connecting
//	live --socket lost or channel gone--> connecting
//	handover --replacement receiving, or grace--> live
//	handover --old channel gone, no replacement yet--> connecting / backingOff
type slotState int

const (
	connecting slotState = iota // no receiving socket; a connect job runs
	backingOff                  // no receiving socket; waiting to try again
	live                        // one receiving socket on the slot's channel
	handover                    // a replacement is coming up; the old socket reads on meanwhile
)

func (st slotState) String() string {
	return [...]string{"connecting", "backing_off", "live", "handover"}[st]
}

// handoverKind is what a handover replaces.
type handoverKind int

const (
	rotation    handoverKind = iota + 1 // the channel: near its end or its token's
	closingSwap                         // the socket: Genesys warned it closes soon
)

// machine is a slot's state. Only the slot's goroutine touches it; jobs
// get copies of what they need and answer with events.
type machine struct {
	s       *slot
	ctx     context.Context // ends jobs and dials at shutdown
	stopCtx context.CancelFunc
	jobs    jobGroup
	timers  [timerKinds]timerSlot
	open    map[*socket]struct{} // every socket not yet ended or closed
	// endedEarly holds the end of sockets not yet adopted: a socket's
	// reader reports to the slot at once, so its end can come before the
	// answer of the job that dialled it. Adopting the socket replays it.
	endedEarly map[*socket]socketEvent

	state slotState

	// The slot's channel and its socket.
	ch             *channelInfo
	created        time.Time
	sock           *socket
	chTopics       []string // what ch was last subscribed with
	rejected       []rejectedTopic
	subscribedOnce bool // later subscriptions are lenient: a refusal is not fatal
	attempt        int  // failed connects since the last success
	lostSince      time.Time
	lostWhy        string
	connectJob     runningConnect // the connect job out, if busy
	resubBusy      bool

	// The handover in progress.
	kind         handoverKind
	next         *channelInfo // rotation: the replacement, made and subscribed; kept across failed attempts
	nextCreated  time.Time
	nextTopics   []string
	nextRejected []rejectedTopic
	cand         *socket // the replacement socket: answered a ping, not yet shown receiving
	rotateBusy   bool
	rotAttempt   int
	spare        bool // holds the connector's spare channel
	spareWanted  bool
	letGoBusy    bool              // the replaced channel is being emptied; the spare is still ours
	audit        *correlationAudit // rotation: what the old and the new socket both read
}

func newMachine(s *slot, ctx context.Context) *machine {
	ctx, cancel := context.WithCancel(ctx)
	return &machine{s: s, ctx: ctx, stopCtx: cancel, open: map[*socket]struct{}{}, endedEarly: map[*socket]socketEvent{}}
}

// run keeps the slot's topics flowing until ctx ends. It returns only a
// permanent error (nil when ctx ends).
func (s *slot) run(ctx context.Context) error {
	m := newMachine(s, ctx)
	defer m.shutdown()
	m.connect()
	m.publish()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.box.wake:
			for _, ev := range s.box.take() {
				was := m.state
				if err := m.step(ev); err != nil {
					return err
				}
				if m.state != was {
					s.log.Debug("channel state", "from", was, "to", m.state)
				}
			}
			m.unstrand()
			m.publish()
		}
	}
}

// step is the one place an event changes the machine.
func (m *machine) step(ev any) error {
	switch ev := ev.(type) {
	case socketEvent:
		return m.onSocket(ev)
	case evReceiving:
		if ev.sock == m.cand && m.cand != nil {
			m.promote("receiving")
		}
	case evConnected:
		if ev.rotation {
			return m.onRotated(ev.res)
		}
		return m.onConnected(ev)
	case evReplaced:
		m.onReplaced(ev)
	case evSubscribed:
		m.onSubscribed(ev)
	case evSpare:
		m.onSpare()
	case evLetGo:
		m.letGoBusy = false
		if m.state != handover || m.kind != rotation {
			m.releaseSpare()
		}
	case evTopics:
		m.resubscribe(true)
	case evTimer:
		if ev.gen != m.timers[ev.kind].gen {
			return nil // re-armed or cancelled since
		}
		m.timers[ev.kind].t = nil
		switch ev.kind {
		case tRetry:
			m.connect()
		case tRotate:
			m.rotate()
		case tGrace:
			if m.cand != nil {
				m.promote("grace")
			}
		case tResub:
			m.resubscribe(false)
		}
	}
	return nil
}

// StrandedMessage is logged when a slot is found with no socket and
// nothing under way to bring one back: a bug in the machine, which it
// recovers from by connecting again. Tests fail on it.
const StrandedMessage = "channel stranded with no socket and nothing to bring one back; connecting again"

// unstrand is the machine's safety net. Without a socket, something must
// be under way that brings one back (a connect job, a retry timer, a
// rotation's job, timer or wait for the spare, a closing swap's dial);
// a slot with none of them would sleep for ever while the process looks
// healthy. Such a state is a bug; it is logged and left by connecting.
func (m *machine) unstrand() {
	if m.sock != nil || m.cand != nil || m.connectJob.busy || m.timers[tRetry].t != nil {
		return
	}
	if m.state == handover {
		if m.kind == closingSwap || m.rotateBusy || m.spareWanted || m.timers[tRotate].t != nil {
			return
		}
		m.s.log.Error(StrandedMessage, "state", m.state, "kind", m.kind, "has_channel", m.ch != nil)
		m.endRotation()
		return
	}
	m.s.log.Error(StrandedMessage, "state", m.state, "has_channel", m.ch != nil)
	m.connect()
}

// publish shows the machine's state to Status and the budget count.
func (m *machine) publish() {
	s := m.s
	s.mu.Lock()
	s.channel, s.next, s.sock = m.ch, m.next, m.sock
	s.subscribed = m.ch != nil && slices.Equal(m.chTopics, s.topics)
	s.rejected = len(m.rejected)
	s.mu.Unlock()
	s.c.notify()
}

// connect brings up a socket on the slot's channel, or on a new one when
// it has none or it is gone.
//
// Invariant (budget): outside a handover the slot holds at most one
// channel, so making one in place of a dead one needs no spare. During a
// rotation connect only redials the old channel: the replacement is on its
// way, and a third channel would break the budget.
func (m *machine) connect() {
	if m.sock != nil || (m.state == handover && m.ch == nil) {
		return // a handover whose old channel died ends with the rotation's answer
	}
	if m.state != handover {
		m.state = connecting
	}
	if m.connectJob.busy {
		if !m.connectJob.abandonable || m.connectJob.forID == m.chID() {
			return // the running job's answer connects again if it is stale (onConnected)
		}
		// A redial of a channel the slot no longer holds (a rotation's
		// replacement took over, then died): it can make nothing, so
		// abandon it rather than wait out its dial or a hung HEAD.
		m.connectJob.stop()
	}
	m.cancel(tRetry)
	j := connectJob{mayCreate: m.state != handover, lenient: m.subscribedOnce}
	forID := ""
	if m.ch != nil {
		ch := *m.ch
		j.reuse, forID = &ch, ch.ID
	}
	ctx, stop := context.WithCancel(m.ctx)
	gen := m.connectJob.gen + 1
	// Only a job that cannot make a channel may be abandoned: cancelling
	// one mid-create could leave a channel Genesys made and we never
	// heard of, counted against the client's 20.
	m.connectJob = runningConnect{busy: true, gen: gen, forID: forID, abandonable: !j.mayCreate, stop: stop}
	s := m.s
	m.startJob(func(life context.Context) any {
		defer stop()
		return evConnected{gen: gen, forID: forID, res: s.connect(ctx, life, j)}
	})
}

// runningConnect is the connect job out: answers of earlier, abandoned
// jobs carry an older gen.
type runningConnect struct {
	busy        bool
	gen         uint64
	forID       string
	abandonable bool
	stop        context.CancelFunc
}

func (m *machine) onConnected(ev evConnected) error {
	res := ev.res
	if ev.gen != m.connectJob.gen || !m.connectJob.busy {
		m.discard(res) // abandoned for a newer job
		return nil
	}
	m.connectJob.busy = false
	if ev.forID != m.chID() {
		// The slot's channel changed while the job ran (a rotation took
		// over, or the channel died): what it brought is history. A
		// connect asked for meanwhile found this job busy and left the
		// slot to its answer, so connect now (its guards decide whether
		// anything is missing): otherwise a slot whose channel died under
		// a stale redial would wait for ever with no channel, no socket,
		// no job and no timer.
		m.discard(res)
		m.connect()
		return nil
	}
	if res.made {
		m.setChannel(res.ch, res.topics, res.rejected)
	}
	if res.err != nil {
		return m.connectFailed(res.err)
	}
	m.open[res.sock] = struct{}{}
	m.sock = res.sock
	m.recovered()
	if m.state != handover { // else the old channel redialled while its replacement comes up
		m.state = live
		m.after(tRotate, time.Until(rotateAt(m.ch, m.created)))
		m.resubscribe(false)
	}
	return m.replayEarlyEnd(res.sock)
}

// replayEarlyEnd hands on the end of a socket just adopted that ended
// before its job's answer came; without it the slot would hold a dead
// socket as live, with nothing to notice.
func (m *machine) replayEarlyEnd(sock *socket) error {
	ev, ok := m.endedEarly[sock]
	if !ok {
		return nil
	}
	delete(m.endedEarly, sock)
	return m.onSocket(ev)
}

func (m *machine) connectFailed(err error) error {
	if errors.Is(err, errNotCreated) {
		m.channelGone()
		return nil
	}
	if Permanent(err) {
		return err
	}
	m.attempt++
	if m.lostSince.IsZero() {
		m.lostSince, m.lostWhy = time.Now(), ReasonDial
		m.s.log.Warn("cannot connect, retrying", "err", err)
	} else {
		m.s.log.Debug("reconnect failed", "attempt", m.attempt, "err", err)
	}
	m.s.c.obs.Reconnect(ReasonDial)
	if m.state != handover {
		m.state = backingOff
	}
	m.after(tRetry, backoff(m.attempt, 250*time.Millisecond, 30*time.Second))
	return nil
}

func (m *machine) recovered() {
	if !m.lostSince.IsZero() {
		m.s.log.Info("socket reconnected", "reason", m.lostWhy, "attempts", m.attempt+1, "down", time.Since(m.lostSince).Round(time.Millisecond))
	} else {
		m.s.log.Info("socket connected", "ref", channelRef(m.ch.ID), "channel_deadline", m.ch.deadline())
	}
	m.lostSince, m.attempt = time.Time{}, 0
}

// onSocket handles a reader's news: of the current socket, of a
// replacement, or of one already replaced (history).
func (m *machine) onSocket(ev socketEvent) error {
	if ev.ended {
		if _, known := m.open[ev.sock]; !known && !ev.sock.released {
			// Not adopted yet (a socket the slot closed is history).
			m.endedEarly[ev.sock] = ev
			return nil
		}
		delete(m.open, ev.sock)
	}
	switch {
	case ev.sock == m.sock && m.sock != nil:
		switch {
		case ev.reason == ReasonGone:
			m.s.c.obs.Reconnect(ReasonGone)
			m.s.log.Warn("channel gone, replacing it")
			m.channelGone()
		case ev.reason == ReasonClosing && !ev.ended:
			if m.state == live {
				m.beginSwap()
			}
		case ev.ended:
			m.socketLost(ev.reason, ev.err)
		}
	case ev.sock == m.cand && m.cand != nil && (ev.ended || ev.reason == ReasonGone):
		m.candidateLost(ev.reason == ReasonGone)
	}
	return nil
}

func (m *machine) socketLost(reason string, err error) {
	m.sock = nil
	if m.state == handover && m.kind == closingSwap {
		// Expected: a second socket on a channel makes Genesys drop the
		// first. What it wrote before is read; the replacement takes over.
		if m.cand != nil {
			m.promote("old socket closed")
		}
		return
	}
	m.s.c.obs.Reconnect(reason)
	if m.lostSince.IsZero() {
		m.lostSince, m.lostWhy = time.Now(), reason
		m.s.log.Warn("socket lost, reconnecting", "reason", reason, "err", err)
	}
	if m.state == handover && m.cand != nil {
		m.promote("old socket lost")
		return
	}
	m.connect()
}

// channelGone: Genesys ended the slot's channel (expired, evicted, its
// token expired).
func (m *machine) channelGone() {
	if m.sock != nil {
		m.closeSock(m.sock)
	}
	m.sock, m.ch, m.chTopics, m.rejected = nil, nil, nil, nil
	if m.lostSince.IsZero() {
		m.lostSince, m.lostWhy = time.Now(), ReasonGone
	}
	switch {
	case m.state == handover && m.kind == rotation:
		switch {
		case m.cand != nil:
			m.promote("old channel gone")
		case !m.rotateBusy:
			m.endRotation()
		}
		// else the rotation job's answer decides (onRotated)
	case m.state == handover && m.kind == closingSwap:
		if m.cand != nil {
			m.closeSock(m.cand)
			m.cand = nil
		}
		m.kind = 0
		m.state = connecting
		m.connect()
	default:
		m.connect()
	}
}

// resubscribe puts the slot's current topics on its channel when they
// changed, or with retryRefused when Genesys refused some last time. A
// rotation's replacement is made with the topics of its time, and checked
// again once it takes over.
func (m *machine) resubscribe(retryRefused bool) {
	if m.ch == nil || m.resubBusy {
		return
	}
	topics := m.s.currentTopics()
	if slices.Equal(topics, m.chTopics) && (!retryRefused || len(m.rejected) == 0) {
		return
	}
	m.cancel(tResub)
	m.resubBusy = true
	api, id := m.s.c.api, m.ch.ID
	m.startJob(func(ctx context.Context) any {
		// Lenient: a queue deleted since the listing, or a permission
		// taken away, costs those topics, not the others or the process.
		rejected, err := api.subscribe(ctx, id, topics, true)
		return evSubscribed{chID: id, topics: topics, rejected: rejected, err: err}
	})
}

func (m *machine) onSubscribed(ev evSubscribed) {
	m.resubBusy = false
	if ev.chID != m.chID() {
		m.resubscribe(false) // the channel changed meanwhile
		return
	}
	if ev.err != nil {
		switch {
		case IsStatus(ev.err, http.StatusNotFound):
			// The socket hears the 404 too, and a new channel follows.
		case Permanent(ev.err):
			m.s.log.Error("Genesys refused the resubscription; keeping the topics the channel holds, trying again at the next topic refresh", "err", ev.err)
		default:
			m.s.log.Warn("resubscribe failed, retrying", "err", ev.err)
			m.after(tResub, 5*time.Second)
		}
		return
	}
	m.chTopics, m.rejected = ev.topics, ev.rejected
	m.logRejected(ev.rejected)
	m.resubscribe(false) // the topics may have changed again meanwhile
}

func (m *machine) logRejected(rejected []rejectedTopic) {
	if len(rejected) == 0 {
		return
	}
	examples := make([]string, 0, 5)
	for _, r := range rejected[:min(len(rejected), cap(examples))] {
		examples = append(examples, r.Topic+": "+r.Reason)
	}
	m.s.log.Warn("Genesys refused topics; the others are subscribed, these are tried again at the next topic refresh",
		"rejected", len(rejected), "examples", examples)
}

func (m *machine) setChannel(ch channelInfo, topics []string, rejected []rejectedTopic) {
	m.setChannelAt(ch, time.Now(), topics, rejected)
	m.logRejected(rejected)
}

func (m *machine) setChannelAt(ch channelInfo, created time.Time, topics []string, rejected []rejectedTopic) {
	m.ch, m.created, m.chTopics, m.rejected = &ch, created, topics, rejected
	m.subscribedOnce = true
}

func (m *machine) chID() string {
	if m.ch == nil {
		return ""
	}
	return m.ch.ID
}

// discard closes what a job brought after the slot moved on: its socket,
// and the subscriptions of a channel it made, which nobody will read.
func (m *machine) discard(res connectResult) {
	if res.sock != nil {
		m.closeSock(res.sock)
	}
	if res.made {
		api, id := m.s.c.api, res.ch.ID
		m.startJob(func(ctx context.Context) any {
			_ = api.unsubscribeAll(ctx, id)
			return nil
		})
	}
}

// closeSock closes a socket in a job: a close waits up to a second for the
// server's answer, which the loop must not.
func (m *machine) closeSock(sock *socket) {
	sock.released = true
	delete(m.open, sock)
	// Only a socket never adopted can have an early end on record, and only
	// discard closes those; forgetting it here keeps every trace of a
	// closed socket in one place.
	delete(m.endedEarly, sock)
	m.startJob(func(context.Context) any {
		sock.close()
		return nil
	})
}
