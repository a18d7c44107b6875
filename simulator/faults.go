package simulator

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Errors the fault methods return.
var (
	ErrNoChannel = errors.New("simulator: no such live channel")
	ErrNoSocket  = errors.New("simulator: channel has no connected socket")
	ErrNoToken   = errors.New("simulator: no such live token")
)

// Fault answers matching HTTP requests with an error instead of serving
// them. Faults are checked before authentication, in the order added; each
// request consumes at most one.
type Fault struct {
	// Method matches the request method; empty matches any.
	Method string
	// Path is a URL path prefix, e.g. "/api/v2/notifications/channels" or
	// "/channels/" (WebSocket dials); empty matches every path.
	Path string
	// Status is the HTTP status to answer: 401, 403, 404, 429, 5xx, …
	Status int
	// Times is how many matching requests fail; 0 means once, negative
	// means until ClearFaults.
	Times int
	// RetryAfter is the Retry-After of a 429 (default and minimum 1s).
	RetryAfter time.Duration
	// Permission is the permission a 403 names (default
	// "routing:queue:view").
	Permission string
	// Code and Message override the Genesys error body's fields.
	Code    string
	Message string
}

// AddFault arms a fault.
func (s *Server) AddFault(f Fault) {
	if f.Times == 0 {
		f.Times = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, &f)
	s.mu.Unlock()
}

// FailNext makes the next times requests whose method is method (empty: any)
// and whose path starts with pathPrefix fail with status.
func (s *Server) FailNext(method, pathPrefix string, status, times int) {
	s.AddFault(Fault{Method: method, Path: pathPrefix, Status: status, Times: times})
}

// ClearFaults disarms every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	s.faults = nil
	s.mu.Unlock()
}

func (s *Server) takeFaultLocked(method, path string) *Fault {
	for i, f := range s.faults {
		if f.Method != "" && !strings.EqualFold(f.Method, method) {
			continue
		}
		if !strings.HasPrefix(path, f.Path) {
			continue
		}
		if f.Times > 0 {
			f.Times--
			if f.Times == 0 {
				s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
			}
		}
		s.stats.FaultsServed++
		s.refusedLocked(fmt.Sprintf("%s %s answered %d by a fault", method, path, f.Status), 0)
		c := *f
		return &c
	}
	return nil
}

// RefuseDials makes WebSocket dials fail with HTTP 503 for d (d <= 0 stops
// refusing). Connected sockets are not affected.
func (s *Server) RefuseDials(d time.Duration) {
	s.mu.Lock()
	s.refuse = time.Now().Add(d)
	s.mu.Unlock()
}

// SetRefuseDials refuses WebSocket dials until called with false.
func (s *Server) SetRefuseDials(on bool) {
	if on {
		s.RefuseDials(100 * 365 * 24 * time.Hour)
		return
	}
	s.RefuseDials(0)
}

// liveSocketLocked finds a channel's connected socket.
func (s *Server) liveSocketLocked(channelID string) (*socket, error) {
	ch := s.channels[channelID]
	if ch == nil {
		return nil, ErrNoChannel
	}
	if ch.socket == nil {
		return nil, ErrNoSocket
	}
	return ch.socket, nil
}

// CloseSocket drops a channel's socket abruptly: the connection ends (TCP
// FIN after the frames already written) with no WebSocket close frame, as
// when a proxy or the network drops it. The channel and its subscriptions
// live on; a client may reconnect to the same connectUri.
func (s *Server) CloseSocket(channelID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.liveSocketLocked(channelID)
	if err != nil {
		return err
	}
	s.stats.SocketsDropped++
	defer s.becauseLocked(causeDropped)()
	s.shutdownLocked(sk)
	return nil
}

// StallSocket freezes a channel's socket: it stays open and is read, but
// nothing more is written to it (no heartbeats, pongs, answers or events;
// events meanwhile do not count it in Delivered) until the client closes it
// or another socket replaces it.
func (s *Server) StallSocket(channelID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.liveSocketLocked(channelID)
	if err != nil {
		return err
	}
	sk.stalled = true
	defer s.becauseLocked(causeStalled)()
	s.changedLocked()
	return nil
}

// SendClosingWarning writes the v2.system.socket_closing frame to a
// channel's socket and closes that socket (close frame 1001) after
// closeAfter, as Genesys does about a minute before maintenance. The channel
// lives on.
func (s *Server) SendClosingWarning(channelID string, closeAfter time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.liveSocketLocked(channelID)
	if err != nil {
		return err
	}
	if sk.writable() {
		s.writeLocked(sk, closingFrame)
	}
	s.stats.ClosingWarnings++
	s.afterLocked(closeAfter, func() {
		if sk.dead {
			return
		}
		defer s.becauseLocked(causeClosingClose)()
		if sk.writable() {
			s.writeCloseLocked(sk, websocket.CloseGoingAway, "socket closing")
		}
		s.shutdownLocked(sk)
	})
	return nil
}

// SendRaw writes one arbitrary frame to a channel's socket: malformed JSON,
// a binary frame (binary true), an event without eventBody, anything a
// client must survive. It is not an event: it is not recorded.
func (s *Server) SendRaw(channelID string, binary bool, frame []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sk, err := s.liveSocketLocked(channelID)
	if err != nil {
		return err
	}
	if !sk.writable() {
		return ErrNoSocket
	}
	typ := websocket.TextMessage
	if binary {
		typ = websocket.BinaryMessage
	}
	_ = sk.conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if err := sk.conn.WriteMessage(typ, frame); err != nil {
		s.shutdownLocked(sk)
		return fmt.Errorf("simulator: write raw frame: %w", err)
	}
	return nil
}

// ExpireChannel ends a channel now, as its lifetime would: its socket gets
// {"result":"404",…} and is closed, HEAD answers 404, and subscription calls
// answer 404.
func (s *Server) ExpireChannel(channelID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		return ErrNoChannel
	}
	s.stats.ChannelsExpired++
	defer s.becauseLocked(causeExpired)()
	s.killChannelLocked(ch, "channel expired")
	return nil
}

// EvictChannel ends a channel as the 21st-channel eviction does.
func (s *Server) EvictChannel(channelID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.channels[channelID]
	if ch == nil {
		return ErrNoChannel
	}
	s.stats.ChannelsEvicted++
	defer s.becauseLocked(causeEvicted)()
	s.killChannelLocked(ch, "channel evicted: the OAuth client reached its channel limit")
	return nil
}

// ExpireToken ends an access token now: REST calls with it answer 401, and
// every channel it created dies as by ExpireChannel.
func (s *Server) ExpireToken(token string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens[token] == nil {
		return ErrNoToken
	}
	s.expireTokenLocked(token)
	return nil
}

// ExpireTokens ends every access token (and so every channel).
func (s *Server) ExpireTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for v := range s.tokens {
		s.expireTokenLocked(v)
	}
}

func (s *Server) expireTokenLocked(v string) {
	if s.cause == (Cause{}) {
		defer s.becauseLocked(causeTokenExpired)()
	}
	delete(s.tokens, v)
	s.stats.TokensExpired++
	for _, ch := range s.channels {
		if ch.token == v {
			s.stats.ChannelsExpired++
			s.killChannelLocked(ch, "channel closed: the access token that created it expired")
		}
	}
	s.changedLocked()
}

// Tokens lists the live access tokens, oldest first.
func (s *Server) Tokens() []TokenInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]TokenInfo, 0, len(s.tokens))
	for _, tk := range s.tokens {
		out = append(out, TokenInfo{Token: tk.value, Issued: tk.issued, Expires: tk.expires})
	}
	sortTokens(out)
	return out
}

// TokenInfo describes a live access token.
type TokenInfo struct {
	Token   string
	Issued  time.Time
	Expires time.Time
}

// hang holds matching requests before they are served.
type hang struct {
	method, path string
	d            time.Duration
}

// HangREST makes every request whose method is method (empty: any) and
// whose path starts with pathPrefix wait d before it is served, as a
// Genesys endpoint that stops answering does; the client sees nothing until
// then or until its own timeout. Close, ClearHangs and the client giving up
// end the wait early. WebSocket dials are not held.
func (s *Server) HangREST(method, pathPrefix string, d time.Duration) {
	s.mu.Lock()
	s.hangs = append(s.hangs, &hang{method: method, path: pathPrefix, d: d})
	s.mu.Unlock()
}

// ClearHangs stops holding new requests; requests already held stay held.
func (s *Server) ClearHangs() {
	s.mu.Lock()
	s.hangs = nil
	s.mu.Unlock()
}

func (s *Server) takeHangLocked(method, path string) time.Duration {
	if strings.HasPrefix(path, "/channels/") {
		return 0
	}
	for _, h := range s.hangs {
		if (h.method == "" || strings.EqualFold(h.method, method)) && strings.HasPrefix(path, h.path) {
			s.stats.RequestsHung++
			s.refusedLocked(fmt.Sprintf("%s %s held", method, path), h.d)
			s.changedLocked() // tests wait for the hang to begin
			return h.d
		}
	}
	return 0
}

// hold waits d, or until the server closes or the client goes away.
func (s *Server) hold(r *http.Request, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	case <-r.Context().Done():
	}
}

// SetSubscribeDelay makes a topic newly subscribed on a channel receive
// events only d after the subscription call answered, as Genesys takes a
// moment to wire a subscription: events meanwhile go to other channels of
// the topic, if any, and not to this one. A topic the channel already held
// keeps receiving. Zero (the default) makes subscriptions take effect at
// once.
func (s *Server) SetSubscribeDelay(d time.Duration) {
	s.mu.Lock()
	s.subscribeDelay = max(d, 0)
	s.mu.Unlock()
}

// SetPongDelay makes the answer to each ping come d later, as from a
// busy server: events written meanwhile reach the socket before it. Zero
// (the default) answers at once.
func (s *Server) SetPongDelay(d time.Duration) {
	s.mu.Lock()
	s.pongDelay = max(d, 0)
	s.mu.Unlock()
}

// topicRejection is why subscriptions to a topic are refused.
type topicRejection struct {
	status int
	reason string
	params map[string]string
}

// RejectTopics makes subscription calls refuse topics, as Genesys does once
// a queue is deleted or a permission is taken from the OAuth client: a call
// without ignoreErrors fails with status (400 or 403) and reason; with
// ignoreErrors=true the other topics are subscribed and each refused one
// is answered with state "Rejected" and reason as its rejectionReason.
// Topics a channel already holds stay subscribed. An empty reason takes
// Genesys' wording for the status.
func (s *Server) RejectTopics(status int, reason string, topics ...string) {
	var params map[string]string
	if reason == "" {
		switch status {
		case http.StatusForbidden:
			reason = "You are missing the following permission(s): [routing:queue:view]"
			params = map[string]string{"permissions": "routing:queue:view"}
		default:
			reason = "Invalid topic: the entity does not exist."
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rejectedTopics == nil {
		s.rejectedTopics = map[string]topicRejection{}
	}
	for _, t := range topics {
		s.rejectedTopics[t] = topicRejection{status: status, reason: reason, params: params}
	}
}

// AcceptTopics undoes RejectTopics for topics (every topic when none is
// given).
func (s *Server) AcceptTopics(topics ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(topics) == 0 {
		s.rejectedTopics = nil
		return
	}
	for _, t := range topics {
		delete(s.rejectedTopics, t)
	}
}
