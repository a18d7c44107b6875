package simulator

import (
	"context"
	"maps"
	"slices"
	"time"
)

// ChannelInfo describes a live channel.
type ChannelInfo struct {
	ID         string
	ConnectURI string
	// Token is the access token that created the channel; the channel dies
	// with it.
	Token string
	// Topics are the channel's subscriptions, sorted. Shared: do not modify.
	Topics []string
	// Pending counts topics subscribed that do not receive events yet
	// (SetSubscribeDelay).
	Pending   int
	Connected bool // a socket is attached
	Stalled   bool // the attached socket is stalled by StallSocket
	// Connects counts the sockets ever attached to this channel, so a test
	// can wait for a reconnect.
	Connects int
	Created  time.Time
	Expires  time.Time
}

// Snapshot is the simulator's state at one instant.
type Snapshot struct {
	Channels []ChannelInfo // live channels, oldest first
	Sockets  int           // channels with an attached socket
	Tokens   int           // live access tokens
	LastSeq  uint64        // Seq of the newest event, 0 before any
	// SocketsAccepted counts every socket ever attached to a live channel.
	SocketsAccepted int
	Closed          bool
}

// Channel finds a live channel by id.
func (s Snapshot) Channel(id string) (ChannelInfo, bool) {
	for _, c := range s.Channels {
		if c.ID == id {
			return c, true
		}
	}
	return ChannelInfo{}, false
}

// Topics counts the distinct topics subscribed across live channels; with
// connectedOnly, across channels with a socket.
func (s Snapshot) Topics(connectedOnly bool) int {
	seen := map[string]struct{}{}
	for _, c := range s.Channels {
		if connectedOnly && !c.Connected {
			continue
		}
		for _, t := range c.Topics {
			seen[t] = struct{}{}
		}
	}
	return len(seen)
}

// Snapshot returns the current state.
func (s *Server) Snapshot() Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshotLocked()
}

func (s *Server) snapshotLocked() Snapshot {
	snap := Snapshot{
		Tokens:          len(s.tokens),
		LastSeq:         s.rec.seq,
		SocketsAccepted: s.stats.SocketsAccepted,
		Closed:          s.closed,
	}
	chans := slices.Collect(maps.Values(s.channels))
	slices.SortFunc(chans, func(a, b *channel) int { return a.num - b.num })
	snap.Channels = make([]ChannelInfo, len(chans))
	for i, ch := range chans {
		snap.Channels[i] = ChannelInfo{
			ID:         ch.id,
			ConnectURI: ch.connectURI,
			Token:      ch.token,
			Topics:     ch.sortedTopics(),
			Pending:    len(ch.pending),
			Connected:  ch.socket != nil,
			Stalled:    ch.socket != nil && ch.socket.stalled,
			Connects:   ch.connects,
			Created:    ch.created,
			Expires:    ch.expires,
		}
		if ch.socket != nil {
			snap.Sockets++
		}
	}
	return snap
}

// Channels lists the live channels, oldest first.
func (s *Server) Channels() []ChannelInfo { return s.Snapshot().Channels }

// Sockets counts the connected sockets.
func (s *Server) Sockets() int { return s.Snapshot().Sockets }

// Wait blocks until cond holds for the state, re-evaluating it after every
// state change (tokens, channels, subscriptions, sockets, events, and the
// org's queues and users, which cond reads through Queues, Users and
// QueueMembers). It returns ctx's error if ctx ends first, or ErrClosed once the server is
// closed and cond still does not hold.
func (s *Server) Wait(ctx context.Context, cond func(Snapshot) bool) error {
	for {
		s.mu.Lock()
		snap := s.snapshotLocked()
		changed := s.changed
		s.mu.Unlock()
		if cond(snap) {
			return nil
		}
		if snap.Closed {
			return ErrClosed
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// RequestKey identifies a count in Stats.Requests: the method, the route
// (one of the Route constants) and the answered status (101 for an accepted
// WebSocket upgrade).
type RequestKey struct {
	Method string
	Route  string
	Status int
}

// Stats are counters since the server was built.
type Stats struct {
	Requests        map[RequestKey]int
	FaultsServed    int // requests answered by a Fault
	TokensIssued    int
	TokensExpired   int
	ChannelsCreated int
	ChannelsEvicted int
	ChannelsExpired int // by lifetime, ExpireChannel or token expiry
	SocketsAccepted int
	SocketsDropped  int // by CloseSocket and DropNewSockets
	DialsRefused    int // by RefuseDials
	ClosingWarnings int
	Heartbeats      int // heartbeat frames written
	PingsAnswered   int
	Events          int // events generated
	Deliveries      int // event frames written, summed over sockets
	// PeakChannelsInUse is the most channels subscribed or connected at
	// one instant, over every token of the client.
	PeakChannelsInUse int
	RequestsHung      int // requests HangREST held
	RateLimited       int // REST calls answered 429 by Options.RESTRateLimit
}

// Calls sums Requests for a method and route over every status.
func (st Stats) Calls(method, route string) int {
	n := 0
	for k, v := range st.Requests {
		if k.Method == method && k.Route == route {
			n += v
		}
	}
	return n
}

// Stats returns a copy of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Requests = maps.Clone(s.stats.Requests)
	return st
}

func sortTokens(ts []TokenInfo) {
	slices.SortFunc(ts, func(a, b TokenInfo) int { return a.Issued.Compare(b.Issued) })
}
