package connector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"
)

// slotState is where a slot's machine is. Transitions happen only in step
// and the handlers it calls, one event at a time, on the slot's goroutine,
// and every one of them goes through enter.
//
//	connecting --socket up--> live --rotate timer / closing warning--> handover
//	connecting --failed--> backingOff --retry timer--> connecting
//	live --socket lost or channel gone--> connecting
//	handover --replacement receiving and holding the old one's topics, or grace--> live
//	         (or, when Genesys warned the replacement it closes it, a closing swap at once)
//	handover (a rotation, nothing made yet) --closing warning--> handover (a closing swap)
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

// machine is a slot's state. Only the slot's goroutine touches it; jobs
// get copies of what they need and answer with events.
type machine struct {
	s       *slot
	ctx     context.Context // ends jobs and dials at shutdown
	stopCtx context.CancelFunc
	jobs    jobGroup
	timers  [timerKinds]timerSlot
	open    map[*socket]struct{} // every socket adopted and not yet ended or closed
	// early holds the news of sockets not yet adopted: a socket's reader
	// reports to the slot at once, so its end or a closing warning can
	// come before the answer of the job that dialled it. adopt refuses a
	// socket that ended; step hands on the rest once it is adopted.
	early map[*socket][]socketEvent

	// state and ho change only in enter: ho is the handover's own data,
	// set exactly while state is handover, so ending a handover drops it.
	state slotState
	ho    *handoverData

	// The slot's channel (nil: none yet, or gone) and the socket reading
	// it (nil: none). They outlive states: a redial keeps the channel, a
	// handover keeps both until its replacement takes over.
	cur  *heldChannel
	sock *socket

	subscribedOnce bool // later subscriptions are lenient: a refusal is not fatal
	down           outage
	// refusedSince holds the topics Genesys refused on the slot's channel
	// and since when: each is a gap until a subscription takes it
	// (noteRefusals).
	refusedSince map[string]time.Time
	connectJob   runningConnect // the connect job out, if busy
	resubFor     string         // the channel a resubscription job is out for; "" when none
	spare        spareState
}

// heldChannel is a channel the slot holds and what it is subscribed with.
type heldChannel struct {
	info     channelInfo
	created  time.Time
	topics   []string // what it was last subscribed with
	rejected []rejectedTopic
}

// outage is how long the slot has been without a receiving socket, and
// how many connects failed meanwhile; recovered ends it, and reports the
// gap when the slot had a socket before.
type outage struct {
	since    time.Time
	why      string
	attempts int
	// covered is the last moment a socket of the slot is known to have
	// received, and topics what it carried; zero when there was no socket
	// yet (start-up).
	covered time.Time
	topics  []string
}

// spareState is the slot's hold on the connector's spare channel, which
// outlives the handover that asked for it while the replaced channel is
// emptied.
type spareState struct {
	held      bool
	wanted    bool // a job waits for it
	lettingGo bool // the replaced channel is being emptied; the spare is still ours
}

func newMachine(s *slot, ctx context.Context) *machine {
	ctx, cancel := context.WithCancel(ctx)
	return &machine{s: s, ctx: ctx, stopCtx: cancel, open: map[*socket]struct{}{}, early: map[*socket][]socketEvent{},
		refusedSince: map[string]time.Time{}}
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
	if err := m.handle(ev); err != nil {
		return err
	}
	return m.replayEarly()
}

func (m *machine) handle(ev any) error {
	switch ev := ev.(type) {
	case socketEvent:
		return m.onSocket(ev)
	case evReceiving:
		m.onReceiving(ev.sock)
	case evConnected:
		if ev.rotation {
			return m.onRotated(ev.res)
		}
		return m.onConnected(ev)
	case evReplaced:
		m.onReplaced(ev)
	case evSubscribed:
		m.onSubscribed(ev)
	case evAbandoned:
		ev.sock.released = true // its reader's end, if still to come, is history
		delete(m.early, ev.sock)
	case evSpare:
		m.onSpare()
	case evLetGo:
		m.spare.lettingGo = false
		if m.rotation() == nil {
			m.releaseSpare()
		}
	case evTopics:
		m.resubscribe(true)
		m.subscribeReplacement(true)
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
			m.onGrace()
		case tResub:
			m.resubscribe(false)
		case tReplacementSub:
			m.subscribeReplacement(true)
		}
	}
	return nil
}

// enter is the one way into a state. Leaving a handover drops its data
// here, and only here (dropHandover): whatever it still held is let go
// rather than left behind in a field for the next handover to find.
func (m *machine) enter(st slotState, ho *handoverData) {
	if (st == handover) != (ho != nil) {
		panic(fmt.Sprintf("connector: state %s entered with handover data %v", st, ho != nil))
	}
	if m.ho != nil && m.ho != ho {
		m.dropHandover(m.ho)
	}
	m.state, m.ho = st, ho
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
	if m.sock != nil || m.connectJob.busy || m.timers[tRetry].t != nil {
		return
	}
	if ho := m.ho; ho != nil {
		r := ho.rot
		if ho.cand != nil || r == nil || r.busy || m.spare.wanted || m.timers[tRotate].t != nil {
			return
		}
		m.s.log.Error(StrandedMessage, "state", m.state, "kind", ho.kind(), "has_channel", m.cur != nil)
		m.endRotation()
		return
	}
	m.s.log.Error(StrandedMessage, "state", m.state, "has_channel", m.cur != nil)
	m.connect()
}

// publish shows the machine's state to Status and the budget count.
func (m *machine) publish() {
	s := m.s
	s.mu.Lock()
	s.channel, s.next, s.sock = nil, nil, m.sock
	s.subscribed, s.rejected = false, 0
	if m.cur != nil {
		s.channel = &m.cur.info
		s.subscribed = slices.Equal(m.cur.topics, s.topics)
		s.rejected = len(m.cur.rejected)
	}
	if r := m.rotation(); r != nil && r.next != nil {
		s.next = &r.next.info
	}
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
	if m.sock != nil || (m.ho != nil && m.cur == nil) {
		return // a handover whose old channel died ends with the rotation's answer
	}
	if m.ho == nil {
		m.enter(connecting, nil)
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
	j := connectJob{mayCreate: m.ho == nil, lenient: m.subscribedOnce}
	forID := ""
	if m.cur != nil {
		ch := m.cur.info
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
	if res.err == nil {
		res.err = m.adopt(res.sock)
	}
	if res.err != nil {
		return m.connectFailed(res.err)
	}
	m.sock = res.sock
	m.recovered()
	if m.ho == nil { // else the old channel redialled while its replacement comes up
		m.enter(live, nil)
		m.after(tRotate, time.Until(rotateAt(&m.cur.info, m.cur.created)))
		m.resubscribe(false)
	}
	return nil
}

// errEndedUnanswered: a socket ended before the machine heard the answer
// of the dial that opened it.
var errEndedUnanswered = errors.New("socket ended before its dial was answered")

// adopt is the one way a dialled socket becomes the slot's: as its socket
// or as a handover's candidate. A socket's reader reports to the slot at
// once, so its end can come before the answer of the job that dialled it;
// such a socket is refused here, and each caller takes that for a failed
// dial. Holding it would keep the slot live on a socket nobody reads.
func (m *machine) adopt(sock *socket) error {
	if news := m.early[sock]; len(news) > 0 && news[len(news)-1].ended {
		ev := news[len(news)-1]
		m.closeSock(sock)
		if ev.err != nil {
			return fmt.Errorf("%w (%s): %w", errEndedUnanswered, ev.reason, ev.err)
		}
		return fmt.Errorf("%w (%s)", errEndedUnanswered, ev.reason)
	}
	m.open[sock] = struct{}{}
	return nil
}

// replayEarly hands on what the reader of a socket just adopted reported
// before: a closing warning read before its dial's answer must still
// start a swap.
func (m *machine) replayEarly() error {
	for sock, news := range m.early {
		if _, adopted := m.open[sock]; !adopted {
			continue
		}
		delete(m.early, sock)
		for _, ev := range news {
			if err := m.onSocket(ev); err != nil {
				return err
			}
		}
	}
	return nil
}

func (m *machine) connectFailed(err error) error {
	if errors.Is(err, errNotCreated) {
		m.channelGone()
		return nil
	}
	if Permanent(err) {
		return err
	}
	m.down.attempts++
	if m.down.since.IsZero() {
		m.down.since, m.down.why = time.Now(), ReasonDial
		m.s.log.Warn("cannot connect, retrying", "err", err)
	} else {
		m.s.log.Debug("reconnect failed", "attempt", m.down.attempts, "err", err)
	}
	m.s.c.obs.Reconnect(ReasonDial)
	if m.ho == nil {
		m.enter(backingOff, nil)
	}
	m.after(tRetry, backoff(m.down.attempts, 250*time.Millisecond, 30*time.Second))
	return nil
}

// recovered ends the outage: m.sock receives again.
func (m *machine) recovered() {
	if !m.down.since.IsZero() {
		m.s.log.Info("socket reconnected", "reason", m.down.why, "attempts", m.down.attempts+1, "down", time.Since(m.down.since).Round(time.Millisecond))
	} else {
		m.s.log.Info("socket connected", "ref", channelRef(m.cur.info.ID), "channel_deadline", m.cur.info.deadline())
	}
	if d := m.down; !d.covered.IsZero() {
		// A replacement proven before the old socket's last frame (a
		// handover's candidate) left no gap.
		if to := m.coveredAgain(); to.After(d.covered) {
			m.s.c.obs.Gap(Gap{Channel: m.s.index, Topics: d.topics, From: d.covered, To: to, Reason: d.why})
		}
	}
	m.down = outage{}
}

// coveredAgain is when the slot's topics are taken to be covered again
// after an outage: when m.sock was proven receiving, and, on a channel
// taken during the outage, not before the grace Genesys gets to wire a new
// subscription (a pong proves the socket, not the subscriptions; the
// handover waits the same grace).
func (m *machine) coveredAgain() time.Time {
	to := m.sock.coveredSince()
	if m.cur != nil && m.cur.created.After(m.down.since) {
		if wired := m.cur.created.Add(m.s.c.opts.HandoverGrace); wired.After(to) {
			return wired
		}
	}
	return to
}

// lost starts an outage, unless one runs. last is the socket lost (nil:
// none was reading): its last frame is where the gap begins.
func (m *machine) lost(why string, last *socket) bool {
	if !m.down.since.IsZero() {
		return false
	}
	m.down.since, m.down.why = time.Now(), why
	if last != nil {
		m.down.covered = last.lastCovered()
	}
	m.down.topics = m.s.currentTopics()
	return true
}

// onSocket handles a reader's news: of the current socket, of a
// replacement, or of one already replaced (history).
func (m *machine) onSocket(ev socketEvent) error {
	if _, known := m.open[ev.sock]; !known {
		if !ev.sock.released { // else history: the slot closed it
			m.early[ev.sock] = append(m.early[ev.sock], ev) // not adopted yet
		}
		return nil
	}
	if ev.ended {
		delete(m.open, ev.sock)
	}
	if ev.reason == ReasonClosing && !ev.ended {
		ev.sock.warned = true
	}
	switch {
	case ev.sock == m.sock && m.sock != nil:
		switch {
		case ev.reason == ReasonGone:
			m.s.c.obs.Reconnect(ReasonGone)
			m.s.log.Warn("channel gone, replacing it")
			m.channelGone()
		case ev.reason == ReasonClosing && !ev.ended:
			m.answerWarning()
		case ev.ended:
			m.socketLost(ev.reason, ev.err)
		}
	case m.ho != nil && ev.sock == m.ho.cand && (ev.ended || ev.reason == ReasonGone):
		m.candidateLost(ev.reason == ReasonGone)
	case m.ho != nil && ev.sock == m.ho.cand && ev.reason == ReasonClosing:
		m.s.log.Info("the replacement socket was warned it closes; it is replaced in turn once it takes over", "kind", m.ho.kind())
	}
	return nil
}

func (m *machine) socketLost(reason string, err error) {
	lostSock := m.sock
	m.sock = nil
	ho := m.ho
	if ho != nil && ho.rot == nil {
		// Expected: a second socket on a channel makes Genesys drop the
		// first. What it wrote before is read; the replacement takes over.
		if ho.cand != nil {
			m.promote("old socket closed")
		}
		return
	}
	m.s.c.obs.Reconnect(reason)
	if m.lost(reason, lostSock) {
		m.s.log.Warn("socket lost, reconnecting", "reason", reason, "err", err)
	}
	if ho != nil && ho.cand != nil {
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
	m.lost(ReasonGone, m.sock)
	m.sock, m.cur = nil, nil
	ho := m.ho
	switch {
	case ho != nil && ho.rot != nil:
		switch {
		case ho.cand != nil:
			m.promote("old channel gone")
		case !ho.rot.busy:
			m.endRotation()
		}
		// else the rotation job's answer decides (onRotated)
	case ho != nil: // a closing swap: its candidate was on the same channel
		m.enter(connecting, nil)
		m.connect()
	default:
		m.connect()
	}
}

// resubscribe puts the slot's current topics on its channel when they
// changed, or with retryRefused when Genesys refused some last time. A
// rotation's replacement follows the same topics (subscribeReplacement).
func (m *machine) resubscribe(retryRefused bool) {
	if m.cur == nil || m.resubFor != "" {
		return
	}
	topics := m.s.currentTopics()
	if slices.Equal(topics, m.cur.topics) && (!retryRefused || len(m.cur.rejected) == 0) {
		return
	}
	m.cancel(tResub)
	api, id := m.s.c.api, m.cur.info.ID
	m.resubFor = id
	m.startJob(func(ctx context.Context) any {
		// Lenient: a queue deleted since the listing, or a permission
		// taken away, costs those topics, not the others or the process.
		rejected, err := api.subscribe(ctx, id, topics, true)
		return evSubscribed{chID: id, topics: topics, rejected: rejected, err: err}
	})
}

func (m *machine) onSubscribed(ev evSubscribed) {
	if r := m.rotation(); r != nil && r.next != nil && ev.chID == r.next.info.ID {
		m.onReplacementSubscribed(r, ev)
		return
	}
	if ev.chID == m.resubFor {
		m.resubFor = ""
	}
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
	m.cur.topics, m.cur.rejected = ev.topics, ev.rejected
	m.noteRefusals()
	m.logRejected(ev.rejected)
	m.resubscribe(false)          // the topics may have changed again meanwhile
	m.subscribeReplacement(false) // and the replacement must hold what this channel holds
	m.tryPromote("topics placed")
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
	m.cur = &heldChannel{info: ch, created: time.Now(), topics: topics, rejected: rejected}
	m.noteRefusals()
	m.subscribedOnce = true
	m.logRejected(rejected)
}

// noteRefusals follows the topics Genesys refuses on the slot's channel;
// it runs whenever the channel or its subscriptions change. A topic
// refused is uncovered from the answer that refused it; once a
// subscription takes it, that interval is reported as a gap (one for the
// topics refused at the same moment). A refused topic the slot no longer
// wants is forgotten.
func (m *machine) noteRefusals() {
	if m.cur == nil {
		return
	}
	now := time.Now()
	refused := make(map[string]struct{}, len(m.cur.rejected))
	for _, r := range m.cur.rejected {
		refused[r.Topic] = struct{}{}
		if _, known := m.refusedSince[r.Topic]; !known {
			m.refusedSince[r.Topic] = now
		}
	}
	if len(m.refusedSince) == len(refused) {
		return
	}
	receives := m.cur.receives()
	accepted := map[time.Time][]string{}
	for t, since := range m.refusedSince {
		if _, still := refused[t]; still {
			continue
		}
		delete(m.refusedSince, t)
		if _, ok := receives[t]; ok {
			accepted[since] = append(accepted[since], t)
		}
	}
	// Taken now, wired once Genesys had the grace a new subscription gets.
	to := now.Add(m.s.c.opts.HandoverGrace)
	for since, topics := range accepted {
		slices.Sort(topics)
		m.s.c.obs.Gap(Gap{Channel: m.s.index, Topics: topics, From: since, To: to, Reason: ReasonRefused})
	}
}

func (m *machine) chID() string {
	if m.cur == nil {
		return ""
	}
	return m.cur.info.ID
}

// discard closes what a job brought after the slot moved on: its socket,
// and the subscriptions of a channel it made, which nobody will read.
func (m *machine) discard(res connectResult) {
	if res.sock != nil {
		m.closeSock(res.sock)
	}
	if res.made {
		m.emptyChannel(res.ch.ID)
	}
}

// emptyChannel drops a channel's subscriptions in a job: empty and
// unconnected, it is the first Genesys evicts.
func (m *machine) emptyChannel(id string) {
	api := m.s.c.api
	m.startJob(func(ctx context.Context) any {
		_ = api.unsubscribeAll(ctx, id)
		return nil
	})
}

// closeSock closes a socket in a job: a close waits up to a second for the
// server's answer, which the loop must not.
func (m *machine) closeSock(sock *socket) {
	sock.released = true
	delete(m.open, sock)
	// Only a socket never adopted can have early news on record;
	// forgetting it here keeps every trace of a closed socket in one place.
	delete(m.early, sock)
	m.startJob(func(context.Context) any {
		sock.close()
		return nil
	})
}
