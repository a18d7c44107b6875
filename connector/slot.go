package connector

import (
	"log/slog"
	"slices"
	"sync"
	"time"
)

// slot is one planned channel: a share of the topics, kept subscribed on
// whichever Genesys channel and socket currently carry it. Channels and
// sockets come and go; the slot does not. Its machine (slot_machine.go)
// does the work; this file holds what others read.
type slot struct {
	c     *Connector
	index int
	log   *slog.Logger

	box *mailbox // events for the slot's machine: from sockets, jobs, timers

	// What Status and the budget count read; the machine writes it after
	// every step (publish).
	mu         sync.Mutex
	topics     []string
	subscribed bool         // the current channel holds its topics
	rejected   int          // topics Genesys refused on it
	channel    *channelInfo // nil: none yet, or gone
	next       *channelInfo // a rotation's replacement, until it takes over
	sock       *socket      // the socket events are read from; nil while down
}

func (c *Connector) newSlot(index int, topics []string) *slot {
	return &slot{
		c:      c,
		index:  index,
		log:    c.log.With("channel", index),
		box:    newMailbox(),
		topics: topics,
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
		s.box.post(evTopics{})
	}
	return !same
}

// retryRefused has the machine subscribe again the topics Genesys refused
// at the last subscription, if any: a topic refresh is when a permission
// given back or a queue created again shows.
func (s *slot) retryRefused() { s.box.post(evTopics{}) }

// channelIDs are the channels the slot holds, for the budget count.
func (s *slot) channelIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	for _, ch := range []*channelInfo{s.channel, s.next} {
		if ch != nil {
			ids = append(ids, ch.ID)
		}
	}
	return ids
}

func (s *slot) status(now time.Time) ChannelStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ChannelStatus{Index: s.index, Topics: len(s.topics), Subscribed: s.subscribed, Rejected: s.rejected, Connected: s.sock != nil}
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
