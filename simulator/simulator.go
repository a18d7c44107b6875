// Package simulator is a simulated Genesys Cloud org on loopback: OAuth client
// credentials, the notification channel REST API, paged queues and users, and
// notification WebSockets that carry events whose bodies are the SDK's own
// topic models. It records every event it sends and injects, on command, the
// faults a notification client must survive.
//
// Use it like net/http/httptest:
//
//	sim := simulator.Start(t, simulator.Options{Queues: 5})
//	cfg.BasePath = sim.URL()
//	cfg.AuthorizeClientCredentials(sim.ClientID(), sim.ClientSecret())
//
// Everything (OAuth, REST, sockets) is served from one http.Server. The SDK
// derives its login host by replacing "//api." in BasePath; a loopback URL has
// none, so /oauth/token lives beside /api/v2.
//
// # The record
//
// Every event gets a Seq, in the order it was written, and a record (Events,
// EventByCorrelationID) with its exact body and frame bytes and Delivered, the
// number of sockets it was written to. One event is generated once and the
// same bytes go to every connected socket subscribed to its topic. Writes and
// state changes happen under one lock, and the server never discards written
// frames when it ends a socket (it half-closes and drains), so Delivered > 0
// means a client reading that socket receives the frame.
//
// TrackCoverage adds when each topic had a receiving socket, and what
// (a fault, the client) began each interval it had none: an event that
// reached no socket is then explained, or the client's doing.
//
// # A changing org
//
// The org is generated from Options.Seed and changes only on command:
// AddQueue, AddUser, RemoveQueue and RemoveUser, each visible at once to
// the REST listings, the event builders and Wait. A removed entity's
// topics stay subscribed, as Genesys leaves them, and fall silent except
// for what a test emits explicitly.
//
// # The org's state
//
// Presence, routing status and queue member events change the state they
// announce when they are delivered, whether or not a socket received them,
// and the REST reads answer from it (RoutePresenceBulk, at most 50 ids;
// RouteUserPresence; RouteUserRoutingState; RouteQueueMembers, pages of
// at most 100, expand and filters): a presence an event set is what the
// bulk endpoint returns afterwards. REST spells a system presence "On
// Queue" where events say "ON_QUEUE", and the SDK's members call always
// sends joined (false when not asked). CloseSocket leaves the channel
// subscribed, so EventInterval goes on generating its topics' events;
// SetActiveTopics keeps topics changing with no channel at all.
// Options.RESTRateLimit answers a token's calls over its budget with 429
// and Retry-After, as Genesys' 300 a minute does.
//
// # Where Genesys leaves room
//
//   - A dial of an unknown or dead channel is upgraded, then answered with
//     {"result":"404","message":…} and a close frame (1000), as a channel that
//     dies under a live socket is.
//   - A second socket to a channel replaces the first, which gets a close frame
//     (1000) and is closed.
//   - CloseSocket ends the TCP stream with no close frame (the client reads
//     close 1006); SendClosingWarning closes with 1001 after its delay.
//   - Exceeding the topic limit is a 400 even with ignoreErrors=true, which
//     skips only invalid or refused topics (RejectTopics). Its answer lists
//     every topic the channel holds with state "Permitted" and each skipped
//     one with state "Rejected" and a rejectionReason.
//   - A new subscription delivers at once unless SetSubscribeDelay says
//     otherwise; a client that needs to know when it delivers waits for an
//     event, as it must with Genesys.
//   - A ping is answered at once unless SetPongDelay says otherwise; events
//     written meanwhile go out ahead of the pong, as from a busy server.
//   - The times it answers with (a channel's expires, every Date header)
//     are on its own clock, Options.ClockOffset ahead of this machine's.
//   - GET /api/v2/notifications/channels?includechannels=oauthclient lists
//     the other tokens' channels without their ids: counted, not readable.
//   - Through the SDK, a 429 or 5xx arrives as a nil *APIResponse and an error
//     "… giving up after 1 attempt(s)": its retrying HTTP client, with
//     RetryMax 0, swallows the response. Raw HTTP sees the Genesys body and
//     Retry-After.
package simulator

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Options configure a Server. The zero value is a usable 20-queue, 50-user org
// with Genesys' own limits and timings.
type Options struct {
	// Addr is where Start listens; default "127.0.0.1:0".
	Addr string
	// ClientID and ClientSecret are the OAuth client credentials the org
	// accepts; random when empty.
	ClientID     string
	ClientSecret string

	// TokenLifetime is how long an access token lives (Genesys: per OAuth
	// client, default 24h). A channel dies with the token that created it.
	TokenLifetime time.Duration
	// ChannelLifetime is how long a channel lives after creation or its last
	// subscription (default 24h).
	ChannelLifetime time.Duration
	// ClockOffset is how far the org's clock runs ahead of this machine's
	// (negative: behind). The times it answers with, a channel's expires
	// and every answer's Date header, are on its clock, as Genesys' are on
	// Genesys'; its channels still end after ChannelLifetime.
	ClockOffset time.Duration
	// HeartbeatInterval is the period of the "WebSocket Heartbeat" frame
	// (default 30s).
	HeartbeatInterval time.Duration

	// Queues and Users size the generated org (defaults 20 and 50; a negative
	// value means none).
	Queues int
	Users  int
	// Seed makes the org's ids and the event data deterministic; the same
	// seed gives the same queue and user ids on every run.
	Seed uint64

	// EventInterval makes every subscribed topic produce one event per
	// interval. Zero generates events only through Emit and EmitN.
	EventInterval time.Duration
	// BodyPadding pads event bodies to this many bytes (e.g. 512, 4096,
	// 32768 for benchmarks) inside a string field of the SDK model, so the
	// body still decodes; a body already larger is left as is. Zero leaves
	// bodies at their natural size. Natural sizes: queue conversations
	// ~2-3 KB, calls ~2 KB, queue members ~230 B, presence ~180 B.
	BodyPadding int

	// MaxTopicsPerChannel (default 1000) and MaxChannels per OAuth client
	// (default 20) are Genesys' limits.
	MaxTopicsPerChannel int
	MaxChannels         int

	// CorrelationIDPerChannel gives each channel an event reaches its own
	// metadata.CorrelationId (the record keeps the first). Genesys does
	// not document whether one event fanned out to several channels
	// carries one id; this is the other reading, for testing a consumer
	// that relies on it.
	CorrelationIDPerChannel bool

	// RecordLimit bounds the event record to the most recent events; zero
	// keeps every event (right for tests, not for a long-running demo).
	RecordLimit int
	// RESTRateLimit is how many REST calls (/api/v2/…, the state reads
	// and the channel calls alike) one access token may make per
	// RESTRateWindow; more are answered 429 with Retry-After, the time
	// until the oldest call leaves the window. Genesys allows 300 a
	// minute (token.rate.per.minute). Zero: no limit, the default.
	RESTRateLimit int
	// RESTRateWindow is the window RESTRateLimit counts over (default one
	// minute; shorter in tests).
	RESTRateWindow time.Duration

	// WriteTimeout bounds one socket write; a client that does not read for
	// this long is disconnected (default 10s).
	WriteTimeout time.Duration

	// Logger receives lifecycle logs; nil discards them. Secrets (client
	// secret, tokens, channel ids) are never logged.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.ClientID == "" {
		o.ClientID = newUUID()
	}
	if o.ClientSecret == "" {
		o.ClientSecret = randomString(43)
	}
	if o.TokenLifetime <= 0 {
		o.TokenLifetime = 24 * time.Hour
	}
	if o.ChannelLifetime <= 0 {
		o.ChannelLifetime = 24 * time.Hour
	}
	if o.HeartbeatInterval <= 0 {
		o.HeartbeatInterval = 30 * time.Second
	}
	switch {
	case o.Queues == 0:
		o.Queues = 20
	case o.Queues < 0:
		o.Queues = 0
	}
	switch {
	case o.Users == 0:
		o.Users = 50
	case o.Users < 0:
		o.Users = 0
	}
	if o.MaxTopicsPerChannel <= 0 {
		o.MaxTopicsPerChannel = 1000
	}
	if o.MaxChannels <= 0 {
		o.MaxChannels = 20
	}
	if o.RESTRateWindow <= 0 {
		o.RESTRateWindow = time.Minute
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// ErrClosed is returned by Wait and Serve once the server is closed.
var ErrClosed = errors.New("simulator closed")

// Server is a simulated Genesys Cloud org. All its methods are safe for
// concurrent use.
type Server struct {
	opts     Options
	log      *slog.Logger
	org      atomic.Pointer[org] // the current version; see org
	orgMu    sync.Mutex          // serializes org changes; taken before mu
	gen      *generator
	upgrader websocket.Upgrader
	httpSrv  *http.Server
	bgOnce   sync.Once
	kick     chan struct{} // wakes the janitor after a new deadline appears
	done     chan struct{} // closed by Close
	wg       sync.WaitGroup

	// mu guards everything below and serializes every socket write, so that
	// delivery and state changes are totally ordered and the record is exact.
	mu        sync.Mutex
	closed    bool
	changed   chan struct{} // closed and replaced on every state change
	url       string
	listeners []net.Listener
	tokens    map[string]*token
	channels  map[string]*channel
	byTopic   map[string]map[*channel]struct{}
	readers   map[*socket]struct{} // every socket whose reader still runs
	round     *round               // the delivery round in progress, if any
	channelN  int
	socketN   int
	faults    []*Fault
	refuse    time.Time // dials are refused until then
	hangs     []*hang
	// subscribeDelay is how long a topic new to a channel takes to start
	// receiving events; rejectedTopics are refused in subscriptions.
	subscribeDelay time.Duration
	// pongDelay is how long an answer to a ping takes; events go out
	// meanwhile, ahead of it.
	pongDelay      time.Duration
	rejectedTopics map[string]topicRejection
	// dropNew more new sockets are ended at their dial, dropWhen says
	// where (DropNewSockets).
	dropNew  int
	dropWhen DialDrop
	// cov, when not nil, records coverage (TrackCoverage); cause names
	// what the state changes under way are due to (becauseLocked).
	cov   *coverage
	cause Cause
	rec   record
	stats Stats
	// state is what presence, routing status and queue member events
	// announced; activeTopics keep producing events with no subscriber;
	// restUse counts each token's REST calls for RESTRateLimit.
	state        orgState
	activeTopics []string
	restUse      map[string]*restBudget
}

// New builds a server; it serves nothing until Start, Serve or
// ListenAndServe.
func New(opts Options) (*Server, error) {
	opts = opts.withDefaults()
	if strings.ContainsAny(opts.ClientID, ":") {
		return nil, fmt.Errorf("simulator: client id %q must not contain ':'", opts.ClientID)
	}
	s := &Server{
		opts:     opts,
		log:      opts.Logger,
		kick:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		changed:  make(chan struct{}),
		tokens:   map[string]*token{},
		channels: map[string]*channel{},
		byTopic:  map[string]map[*channel]struct{}{},
		readers:  map[*socket]struct{}{},
		rec:      record{limit: opts.RecordLimit, byCorr: map[string]uint64{}},
		state:    newOrgState(),
	}
	s.stats.Requests = map[RequestKey]int{}
	s.org.Store(newOrg(opts.Seed, opts.Queues, opts.Users))
	s.gen = newGenerator(&s.org, opts.Seed, opts.BodyPadding)
	s.upgrader = websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 16384,
		// The channel id in the path is the capability; browsers are not
		// the clients here, so any origin may connect.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.httpSrv = &http.Server{
		Handler:           http.HandlerFunc(s.serveHTTP),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Start listens on Options.Addr (default 127.0.0.1:0) and serves in the
// background until Close.
func (s *Server) Start() error {
	l, err := net.Listen("tcp", s.opts.Addr)
	if err != nil {
		return fmt.Errorf("simulator: listen %s: %w", s.opts.Addr, err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		l.Close()
		return ErrClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	s.attach(l)
	go func() {
		defer s.wg.Done()
		_ = s.httpSrv.Serve(l)
	}()
	return nil
}

// Serve serves on l until Close, then returns ErrClosed.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		l.Close()
		return ErrClosed
	}
	s.attach(l)
	err := s.httpSrv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return ErrClosed
	}
	return err
}

// ListenAndServe listens on addr and serves until Close, then returns
// ErrClosed.
func (s *Server) ListenAndServe(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("simulator: listen %s: %w", addr, err)
	}
	return s.Serve(l)
}

func (s *Server) attach(l net.Listener) {
	s.mu.Lock()
	s.listeners = append(s.listeners, l)
	if s.url == "" {
		s.url = "http://" + dialable(l.Addr())
	}
	s.mu.Unlock()
	o := s.org.Load()
	s.log.Info("simulated genesys cloud org listening", "addr", l.Addr().String(),
		"queues", len(o.queues), "users", len(o.users))
	s.bgOnce.Do(s.startBackground)
}

// dialable turns a wildcard listen address into one a client can dial.
func dialable(a net.Addr) string {
	host, port, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// URL is the base URL for the SDK's BasePath (GENESYSCLOUD_API_URL), e.g.
// "http://127.0.0.1:41234". Empty until the server listens.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// ClientID is the OAuth client id the org accepts.
func (s *Server) ClientID() string { return s.opts.ClientID }

// ClientSecret is the OAuth client secret the org accepts.
func (s *Server) ClientSecret() string { return s.opts.ClientSecret }

// Options returns the effective options, defaults filled in.
func (s *Server) Options() Options { return s.opts }

// Close stops serving, closes every socket abruptly and waits for every
// goroutine the server started.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	for sk := range s.readers {
		s.detachLocked(sk)
		sk.net.Close()
	}
	s.changedLocked()
	s.mu.Unlock()
	err := s.httpSrv.Close()
	s.wg.Wait()
	return err
}

func (s *Server) startBackground() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.wg.Add(2)
	go s.janitor()
	go s.heartbeats()
	if s.opts.EventInterval > 0 {
		s.wg.Add(1)
		go s.generate()
	}
}

// goLocked starts a goroutine that Close waits for, unless the server is
// closed already. Callers hold s.mu.
func (s *Server) goLocked(f func()) bool {
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// afterLocked runs f, with the lock held, d from now, unless the server
// closes first. Called with the lock held.
func (s *Server) afterLocked(d time.Duration, f func()) {
	s.goLocked(func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		f()
	})
}

// now is the time on the org's clock (see Options.ClockOffset).
func (s *Server) now() time.Time { return time.Now().Add(s.opts.ClockOffset) }

// changedLocked wakes every Wait.
func (s *Server) changedLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
	s.noteCoverageLocked()
}

// kickJanitor makes the janitor recompute its next deadline.
func (s *Server) kickJanitor() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// janitor expires tokens and channels at their deadlines.
func (s *Server) janitor() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		next := s.sweepLocked(time.Now())
		s.mu.Unlock()
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case <-s.done:
			return
		case <-s.kick:
		case <-timer.C:
		}
	}
}

// sweepLocked kills what is due and returns the next deadline.
func (s *Server) sweepLocked(now time.Time) time.Time {
	var next time.Time
	sooner := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for v, tk := range s.tokens {
		if !now.Before(tk.expires) {
			restore := s.becauseLocked(causeTokenExpired)
			s.expireTokenLocked(v)
			restore()
			continue
		}
		sooner(tk.expires)
	}
	for _, ch := range s.channels {
		if !now.Before(ch.expires) {
			s.stats.ChannelsExpired++
			restore := s.becauseLocked(causeLifetime)
			s.killChannelLocked(ch, "channel expired")
			restore()
			continue
		}
		sooner(ch.expires)
	}
	return next
}

func (s *Server) heartbeats() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		s.mu.Lock()
		for _, ch := range s.channels {
			if sk := ch.socket; sk != nil && sk.writable() {
				if s.writeLocked(sk, heartbeatFrame) {
					s.stats.Heartbeats++
				}
			}
		}
		s.mu.Unlock()
	}
}

func (s *Server) generate() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.EventInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		// A removed entity's topics stay subscribed but fall silent; the
		// round in flight during a removal may still emit them once.
		if topics := s.org.Load().live(s.generatedTopics()); len(topics) > 0 {
			s.emit(topics)
		}
	}
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

func randomString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b)
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return formatUUID(b)
}

func formatUUID(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	const hex = "0123456789abcdef"
	out := make([]byte, 36)
	j := 0
	for i, c := range b {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			out[j] = '-'
			j++
		}
		out[j] = hex[c>>4]
		out[j+1] = hex[c&0x0f]
		j += 2
	}
	return string(out)
}
