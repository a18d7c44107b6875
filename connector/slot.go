package connector

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

// slot is one planned channel: a share of the topics, kept subscribed on
// whichever Genesys channel and socket currently carry it. Channels and
// sockets come and go; the slot does not.
type slot struct {
	c     *Connector
	index int
	log   *slog.Logger

	changed chan struct{} // the topics changed: resubscribe

	mu         sync.Mutex
	topics     []string
	subscribed bool         // the current channel holds topics
	channel    *channelInfo // nil: none yet, or gone
	sock       *socket      // the socket events are read from; nil while down
}

func (c *Connector) newSlot(index int, topics []string) *slot {
	return &slot{
		c:       c,
		index:   index,
		log:     c.log.With("channel", index),
		changed: make(chan struct{}, 1),
		topics:  topics,
	}
}

func (s *slot) currentTopics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.topics)
}

// setTopics replaces the slot's topics and reports whether they changed.
func (s *slot) setTopics(topics []string) bool {
	s.mu.Lock()
	same := slices.Equal(s.topics, topics)
	if !same {
		s.topics = topics
		s.subscribed = false
	}
	s.mu.Unlock()
	if !same {
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
	return !same
}

func (s *slot) status(now time.Time) ChannelStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ChannelStatus{Index: s.index, Topics: len(s.topics), Subscribed: s.subscribed, Connected: s.sock != nil}
	if s.channel != nil {
		st.Ref = channelRef(s.channel.ID)
		st.Expires = s.channel.deadline()
	}
	if s.sock != nil {
		st.HeartbeatAge = s.sock.heartbeatAge(now)
	}
	return st
}

// deadline is when Genesys ends the channel: at its expiry or with the
// token that created it, whichever is first.
func (ch *channelInfo) deadline() time.Time {
	if !ch.TokenExpires.IsZero() && ch.TokenExpires.Before(ch.Expires) {
		return ch.TokenExpires
	}
	return ch.Expires
}

// rotateAt is when to bring up a replacement: a tenth of the channel's
// life before its deadline, but no less than two seconds (a replacement
// needs a token, two REST calls, a dial and a pong), no more than ten
// minutes, and never before half its life.
func rotateAt(ch *channelInfo, created time.Time) time.Time {
	end := ch.deadline()
	life := end.Sub(created)
	lead := min(max(life/10, 2*time.Second), life/2, 10*time.Minute)
	return end.Add(-lead)
}

func (s *slot) set(ch *channelInfo, sock *socket, subscribed bool) {
	s.mu.Lock()
	s.channel, s.sock, s.subscribed = ch, sock, subscribed
	s.mu.Unlock()
	s.c.notify()
}

// run keeps the slot's topics flowing until ctx ends. It returns only a
// permanent error (nil when ctx ends).
func (s *slot) run(ctx context.Context) error {
	events := make(chan socketEvent)
	open := map[*socket]struct{}{} // every socket not yet ended, current or draining
	defer func() {
		for sock := range open {
			sock.close()
		}
		s.set(nil, nil, false)
	}()

	var (
		ch        *channelInfo
		cur       *socket
		created   time.Time
		lostSince time.Time
		lostWhy   string
		attempt   int
	)
	var rotate, retry, resubscribe <-chan time.Time

	// connect brings up a socket: on the current channel, or with fresh on
	// a new one whose token outlives the current channel's.
	connect := func(fresh bool) error {
		reuse, tokenAfter := ch, time.Time{}
		if fresh {
			reuse = nil // a failed rotation keeps the channel it has
			if ch != nil {
				tokenAfter = ch.TokenExpires
			}
		}
		sock, info, isNew, err := s.connect(ctx, reuse, tokenAfter, events)
		if err != nil {
			if isNew && cur == nil {
				// The new channel is subscribed: dial it next time rather
				// than make another. (A failed rotation keeps the old one,
				// whose socket still runs.)
				ch, created = &info, time.Now()
			}
			return err
		}
		open[sock] = struct{}{}
		if isNew {
			created = time.Now()
		}
		ch, cur = &info, sock
		s.set(ch, cur, true)
		rotate = time.After(time.Until(rotateAt(ch, created)))
		return nil
	}
	// lose marks the current socket as gone; the next loop turn reconnects.
	lose := func(reason string, err error) {
		if cur != nil {
			go cur.close()
		}
		cur = nil
		s.set(ch, nil, false)
		s.c.obs.Reconnect(reason)
		if lostSince.IsZero() {
			lostSince, lostWhy = time.Now(), reason
			s.log.Warn("socket lost, reconnecting", "reason", reason, "err", err)
		}
	}

	for {
		if cur == nil && retry == nil {
			err := connect(ch == nil)
			switch {
			case err == nil:
				if !lostSince.IsZero() {
					s.log.Info("socket reconnected", "reason", lostWhy, "attempts", attempt+1, "down", time.Since(lostSince).Round(time.Millisecond))
				} else {
					s.log.Info("socket connected", "ref", channelRef(ch.ID), "channel_deadline", ch.deadline())
				}
				lostSince, attempt = time.Time{}, 0
			case ctx.Err() != nil:
				return nil
			case Permanent(err):
				return err
			default:
				attempt++
				if lostSince.IsZero() {
					lostSince, lostWhy = time.Now(), ReasonDial
					s.log.Warn("cannot connect, retrying", "err", err)
				} else {
					s.log.Debug("reconnect failed", "attempt", attempt, "err", err)
				}
				s.c.obs.Reconnect(ReasonDial)
				retry = time.After(backoff(attempt, 250*time.Millisecond, 30*time.Second))
			}
		}

		select {
		case <-ctx.Done():
			return nil

		case <-retry:
			retry = nil

		case <-rotate:
			// Planned: bring a new channel up, receiving, before the old
			// one dies; the overlap's duplicates share dedup ids.
			rotate = nil
			old, oldCh := cur, ch
			if err := connect(true); err != nil {
				if Permanent(err) {
					return err
				}
				s.log.Warn("channel rotation failed, retrying", "err", err)
				rotate = time.After(backoff(1, time.Second, 5*time.Second))
				continue
			}
			s.c.obs.Reconnect(ReasonRotate)
			s.log.Info("channel rotated before expiry", "ref", channelRef(ch.ID), "channel_deadline", ch.deadline())
			if old != nil {
				go old.close()
			}
			if oldCh != nil {
				if err := s.c.api.unsubscribeAll(ctx, oldCh.ID); err != nil && !IsStatus(err, http.StatusNotFound) {
					s.log.Debug("emptying the replaced channel failed; it ends at its deadline anyway", "err", err)
				}
			}

		case <-s.changed:
			if err := s.resubscribe(ctx, ch); err != nil {
				if Permanent(err) {
					return err
				}
				s.log.Warn("resubscribe failed, retrying", "err", err)
				resubscribe = time.After(5 * time.Second)
			}

		case <-resubscribe:
			resubscribe = nil
			select {
			case s.changed <- struct{}{}:
			default:
			}

		case ev := <-events:
			if ev.ended {
				delete(open, ev.sock)
			}
			if ev.sock != cur {
				continue // a draining socket: its channel or socket has been replaced
			}
			switch {
			case ev.reason == ReasonClosing && !ev.ended:
				// Genesys closes this socket in about a minute. A second
				// socket on the same channel replaces it; the server lets
				// the old one go once the new one is connected.
				sock, err := s.dial(ctx, *ch, events)
				if err != nil {
					s.log.Warn("replacing a closing socket failed, will reconnect when it closes", "err", err)
					continue
				}
				open[sock] = struct{}{}
				cur = sock
				s.set(ch, cur, true)
				s.c.obs.Reconnect(ReasonClosing)
				s.log.Info("socket replaced after closing warning")
			case ev.reason == ReasonGone:
				ch = nil
				lose(ReasonGone, nil)
			case ev.ended:
				lose(ev.reason, ev.err)
			}
		}
	}
}

// connect brings up a receiving socket: on ch when it still exists, else
// on a new channel subscribed to the slot's topics. When only the dial of a
// new channel fails, it returns that channel too (isNew) with the error.
func (s *slot) connect(ctx context.Context, ch *channelInfo, tokenAfter time.Time, events chan<- socketEvent) (*socket, channelInfo, bool, error) {
	if ch != nil {
		sock, err := s.dial(ctx, *ch, events)
		if err == nil {
			return sock, *ch, false, nil
		}
		if !errors.Is(err, errChannelGone) {
			exists, herr := s.c.api.channelExists(ctx, ch.ID)
			if herr != nil || exists {
				return nil, channelInfo{}, false, err
			}
		}
		s.log.Info("channel gone, creating a new one")
	}
	info, err := s.c.api.createChannel(ctx, tokenAfter)
	if err != nil {
		return nil, channelInfo{}, false, err
	}
	topics := s.currentTopics()
	if err := s.c.api.subscribe(ctx, info.ID, topics); err != nil {
		return nil, channelInfo{}, false, err
	}
	sock, err := s.dial(ctx, info, events)
	if err != nil {
		return nil, info, true, err // subscribed: worth dialling again
	}
	return sock, info, true, nil
}

// dial opens a socket on ch and returns once a pong shows it receiving.
func (s *slot) dial(ctx context.Context, ch channelInfo, events chan<- socketEvent) (*socket, error) {
	sock, err := dialSocket(ctx, ch, s.c.opts.HeartbeatTimeout, s.c.opts.DrainTimeout, s.c.handler, s.c.obs, s.log)
	if err != nil {
		return nil, err
	}
	sock.start(ctx, events)
	if err := sock.awaitPong(ctx, min(s.c.opts.HeartbeatTimeout, 15*time.Second)); err != nil {
		go sock.close()
		return nil, err
	}
	return sock, nil
}

// resubscribe puts the slot's current topics on its channel, keeping the
// socket open.
func (s *slot) resubscribe(ctx context.Context, ch *channelInfo) error {
	if ch == nil {
		return nil // the next channel is created with the current topics
	}
	topics := s.currentTopics()
	err := s.c.api.subscribe(ctx, ch.ID, topics)
	if IsStatus(err, http.StatusNotFound) {
		return nil // the socket sees the 404 too and a new channel follows
	}
	if err != nil {
		return err
	}
	s.mu.Lock()
	if slices.Equal(s.topics, topics) {
		s.subscribed = true
	}
	s.mu.Unlock()
	s.c.notify()
	return nil
}
