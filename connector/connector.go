// Package connector is gcnats' Genesys Cloud side: the OAuth token source,
// the channel manager, the sockets with their heartbeat watchdog, and the
// zero-copy frame peek. It is the only package of the sidecar that imports
// the Genesys SDK.
package connector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Observer counts what the connector sees; the sidecar wires it to metrics.
type Observer interface {
	FrameDropped(reason string)
	Reconnect(reason string)
	// HandoverAudited reports, after a handover, how many event bodies
	// both sockets read with a correlation id in common (match) and with
	// none (mismatch); see correlationAudit.
	HandoverAudited(match, mismatch int)
	// Gap reports, once it has ended, an interval in which a channel's
	// topics had no receiving socket: whatever Genesys sent them meanwhile
	// is lost. Called on the channel's own goroutine: it must not block
	// for long.
	Gap(Gap)
}

// Gap is an interval in which a channel's topics had no receiving socket.
type Gap struct {
	Channel int      // the channel's index, as in Status
	Topics  []string // the topics the channel carried; shared: do not modify
	// From is the last moment the topics were known covered: when the lost
	// socket's reader last began a read that waited for the network. To
	// is the first moment they are taken to be covered again: when the
	// socket that took over read its first pong or event, and on a channel
	// taken during the gap, not before HandoverGrace after it was taken.
	// For topics refused at subscription, From is the refusal and To the
	// acceptance plus HandoverGrace.
	From, To time.Time
	Reason   string // why the socket was lost: ReasonClosed, ReasonStall, ReasonGone
}

type nopObserver struct{}

func (nopObserver) FrameDropped(string)      {}
func (nopObserver) Reconnect(string)         {}
func (nopObserver) HandoverAudited(int, int) {}
func (nopObserver) Gap(Gap)                  {}

// Options configure a Connector.
type Options struct {
	APIURL       string // REST base, e.g. https://api.mypurecloud.ie
	LoginURL     string // OAuth base; empty: derived from APIURL
	ClientID     string
	ClientSecret string

	// Topics to subscribe; a '*' in a queue or user id position expands
	// over the org.
	Topics []string

	MaxChannels      int           // channel budget; default 10 of Genesys' 20
	TopicsPerChannel int           // default 1000, Genesys' limit
	HeartbeatTimeout time.Duration // no frame for this long: reconnect; default 75s
	TopicRefresh     time.Duration // re-expand '*' topics this often; default 5m
	// DrainTimeout is how long, after Run's ctx ends, a Handler blocked
	// on backpressure may still finish the frame it holds before its
	// context ends too. Default 0: at once.
	DrainTimeout time.Duration
	// HandoverGrace is how long a replacement socket must have been
	// subscribed and answering before the socket it replaces is closed,
	// when no event has yet proved it receiving; default 3s.
	HandoverGrace time.Duration
	// RESTRate is how many REST calls a minute the connector and its
	// StateReader make together (GCNATS_REST_RATE); default
	// DefaultRESTRate, well under Genesys' 300 a token. Channel calls go
	// first (RESTLimiter). Negative: no limit.
	RESTRate int

	Logger   *slog.Logger
	Observer Observer
}

// LoginURL derives the OAuth base from a REST base the way Genesys names
// its hosts (api.{domain} → login.{domain}); other URLs (the simulator, a
// proxy) serve both.
func LoginURL(apiURL string) string {
	return strings.Replace(apiURL, "//api.", "//login.", 1)
}

// Connector keeps a set of topics subscribed over as few channels as
// Genesys' limits allow and hands every event frame to its Handler.
type Connector struct {
	opts    Options
	api     *api
	tokens  *TokenSource
	handler Handler
	log     *slog.Logger
	obs     Observer

	spare *spare // the one channel beyond the plan, for a rollover

	auditWarned atomic.Bool // the correlation-id warning is given once

	mu      sync.Mutex
	slots   []*slot
	changed chan struct{} // closed and replaced on every state change

	clientChannels, otherChannels int // at the last count; -1 before it
	budgetAtRisk                  bool
}

// New returns a connector; nothing is dialled until Run.
func New(opts Options, h Handler) (*Connector, error) {
	if opts.APIURL == "" {
		return nil, errors.New("connector: no API URL")
	}
	if opts.ClientID == "" || opts.ClientSecret == "" {
		return nil, errors.New("connector: no OAuth client id or secret")
	}
	if err := ValidateTopics(opts.Topics); err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	if opts.LoginURL == "" {
		opts.LoginURL = LoginURL(opts.APIURL)
	}
	if opts.MaxChannels <= 0 {
		opts.MaxChannels = 10
	}
	if opts.TopicsPerChannel <= 0 {
		opts.TopicsPerChannel = 1000
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = 75 * time.Second
	}
	if opts.TopicRefresh <= 0 {
		opts.TopicRefresh = 5 * time.Minute
	}
	if opts.HandoverGrace <= 0 {
		opts.HandoverGrace = 3 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if h == nil {
		h = HandlerFunc(func(context.Context, *Frame, time.Time) error { return nil })
	}
	tokens := NewTokenSource(opts.LoginURL, opts.ClientID, opts.ClientSecret, opts.Logger)
	api := newAPI(opts.APIURL, tokens, opts.Logger)
	if opts.RESTRate >= 0 {
		api.http.limiter = NewRESTLimiter(opts.RESTRate, 0)
	}
	return &Connector{
		opts:    opts,
		api:     api,
		tokens:  tokens,
		handler: h,
		log:     opts.Logger,
		obs:     opts.Observer,
		spare:   newSpare(),
		changed: make(chan struct{}),

		clientChannels: -1,
		otherChannels:  -1,
	}, nil
}

// Permanent reports whether err cannot be cured by retrying: bad
// credentials, a missing permission or scope, an invalid topic, a plan over
// the channel budget.
func Permanent(err error) bool {
	var apiErr *APIError
	if errors.As(err, &apiErr) {
		switch apiErr.Status {
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden:
			return true
		}
	}
	var planErr *PlanError
	var topicErr *UnknownTopicError
	return errors.As(err, &planErr) || errors.As(err, &topicErr)
}

// Plan checks the configured topics against those Genesys offers,
// resolves them (expanding '*') and spreads them over channels, without
// opening any.
func (c *Connector) Plan(ctx context.Context) ([][]string, error) {
	if err := c.checkTopics(ctx); err != nil {
		return nil, err
	}
	topics, err := c.resolveTopics(ctx)
	if err != nil {
		return nil, err
	}
	return plan(topics, c.opts.TopicsPerChannel, c.opts.MaxChannels)
}

// Run subscribes and reads until ctx ends, then closes every socket. It
// returns nil after ctx ends, or the first permanent error.
func (c *Connector) Run(ctx context.Context) error {
	groups, err := c.planWithRetry(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	c.countClientChannels(ctx)
	parent := ctx
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	start := func(s *slot) {
		wg.Go(func() {
			if err := s.run(ctx); err != nil {
				cancel(err)
			}
		})
	}
	c.mu.Lock()
	for i, g := range groups {
		s := c.newSlot(i, g)
		c.slots = append(c.slots, s)
		start(s)
	}
	c.mu.Unlock()
	c.notify()
	total := 0
	for _, g := range groups {
		total += len(g)
	}
	c.log.Info("subscribing", "topics", total, "channels", len(groups), "budget", c.opts.MaxChannels)

	wg.Go(func() { c.refreshTopics(ctx, start) })
	<-ctx.Done()
	wg.Wait()
	if parent.Err() != nil {
		return nil // asked to stop
	}
	return context.Cause(ctx)
}

func (c *Connector) planWithRetry(ctx context.Context) ([][]string, error) {
	for attempt := 1; ; attempt++ {
		groups, err := c.Plan(ctx)
		if err == nil {
			return groups, nil
		}
		if Permanent(err) || ctx.Err() != nil {
			return nil, err
		}
		wait := backoff(attempt, time.Second, time.Minute)
		c.log.Warn("cannot resolve topics yet, retrying", "attempt", attempt, "wait", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func (c *Connector) hasWildcards() bool {
	for _, t := range c.opts.Topics {
		if strings.Contains(t, "*") {
			return true
		}
	}
	return false
}

// refreshTopics re-expands '*' topics: new queues and users are subscribed,
// removed ones unsubscribed, on the channels already open; topics Genesys
// refused last time are asked for again. Each refresh also counts the
// OAuth client's channels.
func (c *Connector) refreshTopics(ctx context.Context, start func(*slot)) {
	t := time.NewTicker(c.opts.TopicRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.countClientChannels(ctx)
		c.mu.Lock()
		for _, s := range c.slots {
			s.retryRefused()
		}
		c.mu.Unlock()
		if !c.hasWildcards() {
			continue
		}
		topics, err := c.resolveTopics(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Warn("topic refresh failed, keeping the current topics", "err", err)
			}
			continue
		}
		c.mu.Lock()
		current := make([][]string, len(c.slots))
		for i, s := range c.slots {
			current[i] = s.currentTopics()
		}
		next, err := replan(current, topics, c.opts.TopicsPerChannel, c.opts.MaxChannels)
		if err != nil {
			c.mu.Unlock()
			c.log.Error("topic refresh does not fit the channel budget, keeping the current topics", "err", err)
			continue
		}
		changed := 0
		for i, g := range next {
			if i < len(c.slots) {
				if c.slots[i].setTopics(g) {
					changed++
				}
				continue
			}
			s := c.newSlot(i, g)
			c.slots = append(c.slots, s)
			start(s)
			changed++
		}
		c.mu.Unlock()
		if changed > 0 {
			c.log.Info("topics refreshed", "topics", len(topics), "channels_changed", changed)
		}
	}
}

// Status is the connector's state for readiness and metrics.
type Status struct {
	Channels []ChannelStatus
	// ClientChannels is how many channels the OAuth client held across
	// all its tokens at the last count (at start and each topic refresh),
	// OtherChannels how many of them are not this connector's; -1 before
	// the first count.
	ClientChannels, OtherChannels int
	// BudgetAtRisk: the channel budget plus the channels others hold
	// passes Genesys' 20, so a rollover may evict a live channel.
	BudgetAtRisk bool
}

// ChannelStatus describes one planned channel.
type ChannelStatus struct {
	Index        int
	Ref          string // a fingerprint of the channel id, safe to log
	Topics       int
	Connected    bool // a socket is open and answered a ping
	Subscribed   bool // the channel holds its current topics
	Rejected     int  // topics Genesys refused at the last subscription; tried again at each refresh
	HeartbeatAge time.Duration
	Expires      time.Time // when the channel must be replaced: its own or its token's end
}

// Ready reports whether every planned channel is connected and subscribed.
func (s Status) Ready() (bool, string) {
	if len(s.Channels) == 0 {
		return false, "no channel planned yet"
	}
	for _, ch := range s.Channels {
		if !ch.Connected {
			return false, fmt.Sprintf("channel %d not connected", ch.Index)
		}
		if !ch.Subscribed {
			return false, fmt.Sprintf("channel %d not subscribed to its topics", ch.Index)
		}
	}
	return true, fmt.Sprintf("%d channels connected", len(s.Channels))
}

// Status reports every planned channel.
func (c *Connector) Status() Status {
	c.mu.Lock()
	slots := append([]*slot(nil), c.slots...)
	c.mu.Unlock()
	now := time.Now()
	c.mu.Lock()
	st := Status{Channels: make([]ChannelStatus, len(slots)), ClientChannels: c.clientChannels, OtherChannels: c.otherChannels, BudgetAtRisk: c.budgetAtRisk}
	c.mu.Unlock()
	for i, s := range slots {
		st.Channels[i] = s.status(now)
	}
	return st
}

// notify wakes every Wait.
func (c *Connector) notify() {
	c.mu.Lock()
	close(c.changed)
	c.changed = make(chan struct{})
	c.mu.Unlock()
}

// Wait blocks until cond holds for the connector's status, re-evaluating it
// on every change, or until ctx ends.
func (c *Connector) Wait(ctx context.Context, cond func(Status) bool) error {
	for {
		c.mu.Lock()
		changed := c.changed
		c.mu.Unlock()
		if cond(c.Status()) {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// channelRef names a channel in logs without revealing its id, which is
// the capability to read its events.
func channelRef(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:4])
}
