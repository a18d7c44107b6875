package connector

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// This file holds what a slot's machine hands off: REST calls and dials
// run as jobs in goroutines and come back as typed events through the
// slot's mailbox, so the loop that watches sockets never waits on Genesys.

// mailbox carries events to a slot's loop.
//
// Invariant (no blocking): post never blocks, so neither a socket reader
// nor a job ever waits on the loop; and the loop itself never makes a REST
// call or a dial (those are jobs), so it never waits on Genesys.
type mailbox struct {
	mu   sync.Mutex
	q    []any
	wake chan struct{}
}

func newMailbox() *mailbox { return &mailbox{wake: make(chan struct{}, 1)} }

func (m *mailbox) post(ev any) {
	m.mu.Lock()
	m.q = append(m.q, ev)
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() []any {
	m.mu.Lock()
	defer m.mu.Unlock()
	q := m.q
	m.q = nil
	return q
}

// Events a slot's machine steps on. Socket readers post socketEvent.
type (
	// evReceiving: the socket handed an event of its topics to the
	// handler, so its subscriptions are live.
	evReceiving struct{ sock *socket }
	// evConnected ends a connect job (a socket on the slot's channel, or
	// on a new one) or a rotation job (a socket on a replacement channel).
	evConnected struct {
		rotation bool
		gen      uint64 // a connect job's number (runningConnect)
		forID    string // the channel the job set out to dial; "" for a new one
		res      connectResult
	}
	// evReplaced ends the dial of a second socket on the same channel
	// after a closing warning.
	evReplaced struct {
		sock *socket
		err  error
	}
	// evSubscribed ends a subscription of the slot's channel, or of a
	// rotation's replacement (told apart by chID).
	evSubscribed struct {
		chID     string
		topics   []string
		rejected []rejectedTopic
		err      error
	}
	// evAbandoned: a dial closed the socket it opened, which no job will
	// answer with; the machine forgets what its reader reported.
	evAbandoned struct{ sock *socket }
	evSpare     struct{} // the connector's spare channel is this slot's
	evLetGo     struct{} // the replaced channel is emptied and its socket closed
	evTopics    struct{} // the slot's topics changed, or refused ones are due again
	evTimer     struct {
		kind timerKind
		gen  uint64
	}
)

type timerKind int

const (
	tRetry          timerKind = iota // dial again after a failure
	tRotate                          // start (or retry) a planned rotation
	tGrace                           // a replacement has answered long enough
	tResub                           // retry a failed resubscription
	tReplacementSub                  // retry a rotation's replacement subscription, failed or refused
	timerKinds
)

// connectResult is what a connect or rotation job got: a socket answering
// pings on ch, or err. A channel made and subscribed by the job comes back
// even when its dial failed (made), so it is dialled again rather than made
// anew: a failed attempt must not leak channels.
type connectResult struct {
	sock     *socket
	ch       channelInfo
	made     bool
	topics   []string // what ch was subscribed with, when made
	rejected []rejectedTopic
	err      error
}

// connectJob is the REST and dial work behind a connect or a rotation.
type connectJob struct {
	reuse      *channelInfo // dial this channel first; nil: make one
	mayCreate  bool         // when reuse is gone, make another
	tokenAfter time.Time    // a made channel's token must outlive this
	lenient    bool         // subscribe with ignoreErrors
}

// errNotCreated is a redial whose channel is gone when the slot must not
// make a channel in its place (its replacement is on its way).
var errNotCreated = errors.New("channel gone; not replaced here")

// connect runs a connect or rotation job: ctx ends the attempt, life the
// socket it brings up.
func (s *slot) connect(ctx, life context.Context, j connectJob) connectResult {
	if j.reuse != nil {
		sock, err := s.dial(ctx, life, *j.reuse)
		if err == nil {
			return connectResult{sock: sock, ch: *j.reuse}
		}
		if !errors.Is(err, errChannelGone) {
			exists, herr := s.c.api.channelExists(ctx, j.reuse.ID)
			if herr != nil || exists {
				return connectResult{ch: *j.reuse, err: err}
			}
		}
		if !j.mayCreate {
			return connectResult{ch: *j.reuse, err: errNotCreated}
		}
		s.log.Info("channel gone, creating a new one")
	} else if !j.mayCreate {
		return connectResult{err: errNotCreated}
	}
	info, err := s.c.api.createChannel(ctx, j.tokenAfter)
	if err != nil {
		return connectResult{err: err}
	}
	topics := s.currentTopics()
	rejected, err := s.c.api.subscribe(ctx, info.ID, topics, j.lenient)
	if err != nil {
		// Not subscribed: nothing to dial. The channel holds nothing and
		// has no socket, the first Genesys evicts; it ends at its deadline.
		return connectResult{err: err}
	}
	res := connectResult{ch: info, made: true, topics: topics, rejected: rejected}
	res.sock, res.err = s.dial(ctx, life, info)
	return res
}

// dial opens a socket on ch and returns once a pong, or an event read
// first, shows the server has it registered. A pong proves the socket, not
// that its subscriptions deliver: a handover waits for more (see
// machine.candidateUp). ctx ends the attempt, life the socket's reader:
// ending an abandoned dial must not end a socket already handed on.
func (s *slot) dial(ctx, life context.Context, ch channelInfo) (*socket, error) {
	sock, err := dialSocket(ctx, ch, s.c.opts.HeartbeatTimeout, s.c.opts.DrainTimeout, s.c.handler, s.c.obs, s.log)
	if err != nil {
		return nil, err
	}
	// The first event handed on proves the socket receives; report it once.
	var proven atomic.Bool
	h := s.c.handler
	sock.handler = HandlerFunc(func(ctx context.Context, f *Frame, at time.Time) error {
		if !proven.Load() && proven.CompareAndSwap(false, true) {
			s.box.post(evReceiving{sock})
		}
		return h.HandleEvent(ctx, f, at)
	})
	sock.start(life, func(ev socketEvent) { s.box.post(ev) })
	if err := sock.awaitPong(ctx, min(s.c.opts.HeartbeatTimeout, 15*time.Second)); err != nil {
		s.box.post(evAbandoned{sock}) // before its reader's end: what the machine keeps of it can go
		sock.close()                  // here, not in a goroutine: the job is waited for, a goroutine would not be
		return nil, err
	}
	return sock, nil
}

// startJob runs work in a goroutine the machine waits for at shutdown and
// posts its result.
func (m *machine) startJob(work func(ctx context.Context) any) {
	m.jobs.Add(1)
	go func() {
		defer m.jobs.Done()
		m.s.box.post(work(m.ctx))
	}()
}

// jobGroup is every job the machine started; shutdown waits for them.
type jobGroup = sync.WaitGroup

// timerSlot is one timer kind's current arming; gen tells a firing already
// posted from one that still counts.
type timerSlot struct {
	t   *time.Timer
	gen uint64
}

// after arms timer k, replacing an earlier arming of k.
func (m *machine) after(k timerKind, d time.Duration) {
	m.cancel(k)
	gen, box := m.timers[k].gen, m.s.box
	m.timers[k].t = time.AfterFunc(d, func() { box.post(evTimer{kind: k, gen: gen}) })
}

func (m *machine) cancel(k timerKind) {
	if t := m.timers[k].t; t != nil {
		t.Stop()
		m.timers[k].t = nil
	}
	m.timers[k].gen++
}

// shutdown stops every timer and job and closes every socket the slot
// opened, and gives back the spare: Run leaves nothing running.
func (m *machine) shutdown() {
	m.stopCtx()
	for k := range timerKinds {
		m.cancel(k)
	}
	m.jobs.Wait()
	// Results that came in after the loop stopped still hold sockets or
	// the spare.
	for _, ev := range m.s.box.take() {
		switch ev := ev.(type) {
		case evConnected:
			if ev.res.sock != nil {
				m.open[ev.res.sock] = struct{}{}
			}
		case evReplaced:
			if ev.sock != nil {
				m.open[ev.sock] = struct{}{}
			}
		case evSpare:
			m.spare.held = true
		}
	}
	m.releaseSpare()
	var wg sync.WaitGroup
	for sock := range m.open {
		wg.Go(sock.close)
	}
	wg.Wait()
	m.s.mu.Lock()
	m.s.channel, m.s.next, m.s.sock, m.s.subscribed = nil, nil, nil, false
	m.s.mu.Unlock()
	m.s.c.notify()
}
