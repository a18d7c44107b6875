package simulator

import (
	"slices"
	"time"
)

// Coverage is what a test learns from TrackCoverage: when each topic had a
// socket receiving it, and what the org refused meanwhile.
//
// A topic is covered while some channel receives it (subscribed, and past
// SetSubscribeDelay) and has a connected socket that is not stalled: an
// event on it is delivered (Delivered > 0). A topic no socket receives
// loses its events whatever the client does later, so a test can ask of
// every uncovered interval what made it: a fault the org injected, or
// the client itself.
type Coverage struct {
	Changes []CoverageChange // in the order they happened
	// Refusals are the moments the org refused service: each request a
	// Fault answered, each dial RefuseDials refused, each request HangREST
	// held (Until is when its hold ends). A client retries after them, so
	// they slow its recovery.
	Refusals []Refusal
}

// CoverageChange is a topic gaining or losing its last receiving socket.
type CoverageChange struct {
	At      time.Time
	Topic   string
	Covered bool
	// Cause says what made the change (see Cause).
	Cause Cause
	// HeldElsewhere, when coverage ended, says some channel with a live
	// socket still held the topic, subscribed but not yet receiving
	// (SetSubscribeDelay): Genesys had yet to wire it.
	HeldElsewhere bool
}

// Cause is what changed a topic's coverage.
type Cause struct {
	What string
	// ByClient: the client did it (closed its socket, unsubscribed, dialled
	// a channel anew) rather than the org or one of its faults.
	ByClient bool
}

func (c Cause) String() string {
	if c.What == "" {
		return "unattributed"
	}
	return c.What
}

// Refusal is one refused, failed or held request.
type Refusal struct {
	At, Until time.Time
	What      string
}

// Causes the org names.
var (
	causeClientClosed   = Cause{What: "the client closed its socket", ByClient: true}
	causeClientCloseMsg = Cause{What: "the client sent a close frame", ByClient: true}
	causeClientDial     = Cause{What: "the client dialled the channel anew", ByClient: true}
	causeClientSubs     = Cause{What: "the client changed the channel's subscriptions", ByClient: true}
	causeSubscribed     = Cause{What: "a subscription took effect"}
	causeWriteFailed    = Cause{What: "a write to the socket failed (not read for WriteTimeout)"}
	causeDropped        = Cause{What: "CloseSocket dropped the socket"}
	causeStalled        = Cause{What: "StallSocket stalled the socket"}
	causeClosingClose   = Cause{What: "the socket closed after its closing warning"}
	causeExpired        = Cause{What: "ExpireChannel ended the channel"}
	causeEvicted        = Cause{What: "EvictChannel ended the channel"}
	causeLimitEvicted   = Cause{What: "the channel limit evicted the channel"}
	causeTokenExpired   = Cause{What: "the channel's token expired"}
	causeLifetime       = Cause{What: "the channel reached its lifetime"}
	causeDialDropped    = Cause{What: "DropNewSockets ended a socket at its dial"}
)

// coverage is the tracker TrackCoverage starts.
type coverage struct {
	covered map[string]bool
	log     Coverage
}

// TrackCoverage starts recording, from now, when each topic is covered
// (see Coverage). It costs a pass over the topic index at every state
// change, so it is for tests.
func (s *Server) TrackCoverage() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cov != nil {
		return
	}
	s.cov = &coverage{covered: map[string]bool{}}
	s.noteCoverageLocked()
}

// Coverage returns what TrackCoverage recorded so far.
func (s *Server) Coverage() Coverage {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cov == nil {
		return Coverage{}
	}
	return Coverage{Changes: slices.Clone(s.cov.log.Changes), Refusals: slices.Clone(s.cov.log.Refusals)}
}

// becauseLocked attributes the state changes made until the returned func
// runs to c, and then restores the cause it replaced:
//
//	defer s.becauseLocked(c)()
func (s *Server) becauseLocked(c Cause) func() {
	prev := s.cause
	s.cause = c
	return func() { s.cause = prev }
}

// refusedLocked records a refused, failed or held request.
func (s *Server) refusedLocked(what string, hold time.Duration) {
	if s.cov == nil {
		return
	}
	now := time.Now()
	s.cov.log.Refusals = append(s.cov.log.Refusals, Refusal{At: now, Until: now.Add(hold), What: what})
}

// noteCoverageLocked records every topic whose coverage changed since the
// last call. changedLocked calls it, so every path that changes sockets,
// stalls or the topic index passes through it.
func (s *Server) noteCoverageLocked() {
	cov := s.cov
	if cov == nil || s.closed {
		return
	}
	now := time.Now()
	receiving := func(t string) bool {
		for ch := range s.byTopic[t] {
			if sk := ch.socket; sk != nil && sk.writable() {
				return true
			}
		}
		return false
	}
	for t, was := range cov.covered {
		if was && !receiving(t) {
			cov.covered[t] = false
			cov.log.Changes = append(cov.log.Changes, CoverageChange{At: now, Topic: t, Cause: s.cause, HeldElsewhere: s.heldLocked(t)})
		}
	}
	for t := range s.byTopic {
		if !cov.covered[t] && receiving(t) {
			cov.covered[t] = true
			cov.log.Changes = append(cov.log.Changes, CoverageChange{At: now, Topic: t, Covered: true, Cause: s.cause})
		}
	}
}

// heldLocked reports whether a channel with a live socket holds topic.
func (s *Server) heldLocked(topic string) bool {
	for _, ch := range s.channels {
		if _, ok := ch.topics[topic]; ok && ch.socket != nil && ch.socket.writable() {
			return true
		}
	}
	return false
}

// DialDrop says when DropNewSockets ends a socket.
type DialDrop int

const (
	// DropAtUpgrade ends the socket as soon as it is upgraded, before the
	// client can have its ping answered.
	DropAtUpgrade DialDrop = iota
	// DropAfterPong ends the socket right after the answer to its first
	// ping: the client's dial succeeds, and the socket ends while the
	// client is still taking in that answer.
	DropAfterPong
)

// DropNewSockets ends each of the next n sockets to a live channel at its
// dial (when says where), abruptly as CloseSocket does, as a proxy or a
// Genesys node dropping a connection at the worst moment would. n <= 0
// stops.
func (s *Server) DropNewSockets(n int, when DialDrop) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropNew, s.dropWhen = max(n, 0), when
}

// dropAtDialLocked arms, or carries out, the drop of a new socket.
func (s *Server) dropAtDialLocked(sk *socket) {
	if s.dropNew == 0 {
		return
	}
	s.dropNew--
	s.stats.SocketsDropped++
	if s.dropWhen == DropAfterPong {
		sk.dropAfterPong = true
		return
	}
	defer s.becauseLocked(causeDialDropped)()
	s.shutdownLocked(sk)
}

// Receiving reports whether a connected, unstalled socket receives topic
// now (see Coverage).
func (s *Server) Receiving(topic string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.byTopic[topic] {
		if sk := ch.socket; sk != nil && sk.writable() {
			return true
		}
	}
	return false
}
