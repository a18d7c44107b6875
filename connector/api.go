package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// APIError is a Genesys REST or OAuth call that failed with an HTTP status.
type APIError struct {
	Op         string // what gcnats was doing, e.g. "create channel"
	Status     int
	Code       string // Genesys error code, e.g. "missing.permissions"
	Message    string
	RetryAfter time.Duration // from a 429's Retry-After header
}

func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d", e.Op, e.Status)
	if e.Code != "" {
		b.WriteString(" " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	if hint := e.hint(); hint != "" {
		b.WriteString(" (" + hint + ")")
	}
	return b.String()
}

func (e *APIError) hint() string {
	switch e.Status {
	case http.StatusUnauthorized:
		return "check GENESYSCLOUD_OAUTHCLIENT_ID and GENESYSCLOUD_OAUTHCLIENT_SECRET and the region, and that the OAuth client has a client-credentials grant"
	case http.StatusForbidden:
		return "grant the OAuth client's role the missing permission, or add the missing scope to the client"
	case http.StatusBadRequest:
		if strings.Contains(e.Op, "subscribe") {
			return "a topic in GCNATS_TOPICS is not a valid Genesys notification topic"
		}
	}
	return ""
}

// retriable reports whether a later identical call may succeed.
func (e *APIError) retriable() bool {
	return e.Status == http.StatusTooManyRequests || e.Status >= 500 || e.Status == http.StatusRequestTimeout
}

// IsStatus reports whether err is an APIError with the given HTTP status.
func IsStatus(err error, status int) bool {
	var apiErr *APIError
	return errors.As(err, &apiErr) && apiErr.Status == status
}

// api serialises every SDK call on one Configuration: the SDK mutates its
// client per call and Configuration is not safe for concurrent use.
type api struct {
	mu     sync.Mutex
	cfg    *platformclientv2.Configuration
	http   *httpClient
	inUse  Token // the token of the call in progress, guarded by mu
	tokens *TokenSource
	log    *slog.Logger
	// skewWarned: the clock difference to Genesys was logged once.
	skewWarned atomic.Bool
	// backoff bounds for 5xx and network errors; 429 follows Retry-After.
	minBackoff, maxBackoff time.Duration
	maxAttempts            int
}

// sdkGlobals guards the SDK's package-level logging settings: every new
// Configuration writes them and every call reads them. Calls hold it for
// reading, so a connector made while another one talks to Genesys (two in
// one process, as in tests) does not race with it.
var sdkGlobals sync.RWMutex

// newSDKClient returns an SDK configuration for baseURL that sends through
// its own once-only HTTP client.
func newSDKClient(baseURL string) (*platformclientv2.Configuration, *httpClient) {
	// A config file path that cannot exist keeps the SDK from reading
	// ~/.genesyscloudgo and from starting its file watcher goroutine.
	sdkGlobals.Lock()
	cfg := platformclientv2.NewConfigurationWithConfigFile("/nonexistent/gcnats/genesyscloudgo", false)
	sdkGlobals.Unlock()
	cfg.BasePath = strings.TrimRight(baseURL, "/")
	cfg.AutomaticTokenRefresh = false
	cfg.ShouldRefreshAccessToken = false
	cfg.UserAgent = "gcnats"
	hc := newHTTPClient()
	hc.install(cfg)
	return cfg, hc
}

func newAPI(baseURL string, tokens *TokenSource, log *slog.Logger) *api {
	cfg, hc := newSDKClient(baseURL)
	return &api{
		cfg:         cfg,
		http:        hc,
		tokens:      tokens,
		log:         log,
		minBackoff:  200 * time.Millisecond,
		maxBackoff:  30 * time.Second,
		maxAttempts: 8,
	}
}

// call runs one SDK call with the current token and Genesys' retry rules:
// 429 waits for Retry-After, 5xx and network errors back off, a 401
// refreshes the token once; anything else returns at once.
func (a *api) call(ctx context.Context, op string, fn func(*platformclientv2.Configuration) (*platformclientv2.APIResponse, error)) error {
	refreshed := false
	for attempt := 1; ; attempt++ {
		err := a.once(ctx, op, fn)
		if err == nil {
			return nil
		}
		var apiErr *APIError
		isAPI := errors.As(err, &apiErr)
		switch {
		case ctx.Err() != nil:
			return err
		case isAPI && apiErr.Status == http.StatusUnauthorized && !refreshed:
			refreshed = true
			a.tokens.Invalidate()
			continue
		case isAPI && !apiErr.retriable():
			return err
		case attempt >= a.maxAttempts:
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		wait := backoff(attempt, a.minBackoff, a.maxBackoff)
		if isAPI && apiErr.RetryAfter > 0 {
			wait = apiErr.RetryAfter
		}
		a.log.Debug("genesys call failed, retrying", "op", op, "attempt", attempt, "wait", wait, "err", err)
		if err := sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (a *api) once(ctx context.Context, op string, fn func(*platformclientv2.Configuration) (*platformclientv2.APIResponse, error)) error {
	token, err := a.tokens.Token(ctx)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.inUse = token
	a.cfg.AccessToken = token.Value
	a.http.ctx = ctx
	sdkGlobals.RLock()
	resp, err := fn(a.cfg)
	sdkGlobals.RUnlock()
	a.http.ctx = context.Background()
	return asAPIError(op, resp, err)
}

// asAPIError turns the SDK's answer into nil, an *APIError for an HTTP
// status, or a wrapped transport error.
func asAPIError(op string, resp *platformclientv2.APIResponse, err error) error {
	if resp == nil {
		if err == nil {
			return nil
		}
		return fmt.Errorf("%s: %w", op, err)
	}
	if resp.IsSuccess {
		if err != nil {
			return fmt.Errorf("%s: decode answer: %w", op, err)
		}
		return nil
	}
	apiErr := &APIError{Op: op, Status: resp.StatusCode}
	if resp.Error != nil {
		apiErr.Code = resp.Error.Code
		apiErr.Message = resp.Error.Message
	}
	if apiErr.Message == "" {
		apiErr.Message = http.StatusText(resp.StatusCode)
	}
	if v := resp.Response.Header.Get("Retry-After"); v != "" {
		if secs, perr := strconv.Atoi(strings.TrimSpace(v)); perr == nil && secs >= 0 {
			apiErr.RetryAfter = time.Duration(secs) * time.Second
		}
	}
	return apiErr
}

// backoff is exponential with full jitter between min and max.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt-1, 20)
	if d <= 0 || d > hi {
		d = hi
	}
	return lo/2 + rand.N(d-lo/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// channelInfo is a notification channel as Genesys answered its creation.
type channelInfo struct {
	ID         string
	ConnectURI string
	Expires    time.Time
	// TokenExpires is when the token that created the channel expires:
	// Genesys ends the channel with it.
	TokenExpires time.Time
}

// createChannel makes a channel with a token that outlives tokenAfter
// (zero: any valid token).
func (a *api) createChannel(ctx context.Context, tokenAfter time.Time) (channelInfo, error) {
	if !tokenAfter.IsZero() {
		if _, err := a.tokens.TokenAfter(ctx, tokenAfter); err != nil {
			return channelInfo{}, err
		}
	}
	var ch *platformclientv2.Channel
	var tokenExpiry time.Time
	var date string // the answer's Date header: Genesys' clock
	err := a.call(ctx, "create channel", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		tokenExpiry = a.inUse.Expiry
		var resp *platformclientv2.APIResponse
		var err error
		ch, resp, err = platformclientv2.NewNotificationsApiWithConfig(cfg).PostNotificationsChannels()
		if resp != nil && len(resp.Header["Date"]) > 0 {
			date = resp.Header["Date"][0]
		}
		return resp, err
	})
	if err != nil {
		return channelInfo{}, err
	}
	if ch == nil || ch.Id == nil || ch.ConnectUri == nil {
		return channelInfo{}, errors.New("create channel: answer has no id or connectUri")
	}
	info := channelInfo{ID: *ch.Id, ConnectURI: *ch.ConnectUri, TokenExpires: tokenExpiry}
	now := time.Now()
	if ch.Expires == nil {
		info.Expires = now.Add(24 * time.Hour)
		return info, nil
	}
	var skew time.Duration
	info.Expires, skew = localExpiry(*ch.Expires, date, now)
	if skew.Abs() >= time.Minute && !a.skewWarned.Swap(true) {
		a.log.Warn("this machine's clock differs from Genesys'; channel deadlines follow Genesys' clock",
			"genesys_ahead_by", skew.Round(time.Second))
	}
	return info, nil
}

// localExpiry is when a channel that Genesys says expires at expires ends
// by this machine's clock, given the Date header of the answer that said
// so, read at now; and how far Genesys' clock is ahead of this one. The
// expiry is a time on Genesys' clock: read as this machine's, a clock
// behind Genesys' by more than a rotation's lead (at most ten minutes)
// would rotate after the channel had died, a gap, and one far ahead would
// rotate at once, again and again. So the channel lives expires minus
// Date from now, less a second: Date has whole seconds, and rounding the
// life down rotates early rather than late. Without a Date header,
// expires is taken as it is.
func localExpiry(expires time.Time, date string, now time.Time) (time.Time, time.Duration) {
	server, err := http.ParseTime(date)
	if err != nil {
		return expires, 0
	}
	return now.Add(expires.Sub(server) - time.Second), server.Sub(now)
}

// rejectedTopic is a topic Genesys refused in a subscription call made
// with ignoreErrors.
type rejectedTopic struct {
	Topic, Reason string
}

// subscribe replaces the channel's subscriptions with topics. Strict, an
// invalid or forbidden topic fails the call (400, 403), so a typo in the
// settings is found at start. Lenient (ignoreErrors), Genesys subscribes
// what it can and the answer says which topics it refused and why; those
// are returned.
func (a *api) subscribe(ctx context.Context, channelID string, topics []string, lenient bool) ([]rejectedTopic, error) {
	body := make([]platformclientv2.Channeltopic, len(topics))
	for i := range topics {
		body[i].Id = &topics[i]
	}
	var answer *platformclientv2.Channeltopicentitylisting
	err := a.call(ctx, "subscribe channel", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		var resp *platformclientv2.APIResponse
		var err error
		answer, resp, err = platformclientv2.NewNotificationsApiWithConfig(cfg).PutNotificationsChannelSubscriptions(channelID, body, lenient)
		return resp, err
	})
	if err != nil || !lenient {
		return nil, err
	}
	return refusedTopics(topics, answer), nil
}

// refusedTopics compares what was asked with Genesys' answer: a topic the
// answer marks Rejected, or leaves out, was not subscribed.
func refusedTopics(asked []string, answer *platformclientv2.Channeltopicentitylisting) []rejectedTopic {
	state := map[string]platformclientv2.Channeltopic{}
	if answer != nil && answer.Entities != nil {
		for _, e := range *answer.Entities {
			if e.Id != nil {
				state[*e.Id] = e
			}
		}
	}
	var out []rejectedTopic
	for _, entry := range asked {
		for _, t := range expandSubscription(entry) {
			e, ok := state[t]
			switch {
			case !ok:
				out = append(out, rejectedTopic{Topic: t, Reason: "not in Genesys' answer"})
			case e.State != nil && strings.EqualFold(*e.State, "Rejected"):
				reason := "rejected"
				if e.RejectionReason != nil && *e.RejectionReason != "" {
					reason = *e.RejectionReason
				}
				out = append(out, rejectedTopic{Topic: t, Reason: reason})
			}
		}
	}
	return out
}

// expandSubscription names the topics one subscription entry stands for:
// v2.users.{id}?presence&routingStatus is v2.users.{id}.presence and
// v2.users.{id}.routingStatus, and events and answers use those names.
func expandSubscription(entry string) []string {
	base, query, ok := strings.Cut(entry, "?")
	if !ok {
		return []string{entry}
	}
	parts := strings.Split(query, "&")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		out = append(out, base+"."+p)
	}
	return out
}

// listClientChannels lists the ids of the OAuth client's channels across
// all its tokens; another token's channel is listed without its id.
func (a *api) listClientChannels(ctx context.Context) ([]string, error) {
	var listing *platformclientv2.Channelentitylisting
	err := a.call(ctx, "list channels", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		var resp *platformclientv2.APIResponse
		var err error
		listing, resp, err = platformclientv2.NewNotificationsApiWithConfig(cfg).GetNotificationsChannels("oauthclient")
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	var ids []string
	if listing != nil && listing.Entities != nil {
		for _, ch := range *listing.Entities {
			ids = append(ids, deref(ch.Id))
		}
	}
	return ids, nil
}

// unsubscribeAll empties a channel Genesys keeps until its deadline, so
// a channel let go carries nothing and is the first Genesys evicts.
func (a *api) unsubscribeAll(ctx context.Context, channelID string) error {
	return a.call(ctx, "unsubscribe channel", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		return platformclientv2.NewNotificationsApiWithConfig(cfg).DeleteNotificationsChannelSubscriptions(channelID)
	})
}

// channelExists asks Genesys whether the channel is still alive.
func (a *api) channelExists(ctx context.Context, channelID string) (bool, error) {
	err := a.call(ctx, "check channel", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		return platformclientv2.NewNotificationsApiWithConfig(cfg).HeadNotificationsChannel(channelID)
	})
	if IsStatus(err, http.StatusNotFound) {
		return false, nil
	}
	return err == nil, err
}

// Entity is a queue or user of the org, as listed for topic expansion.
type Entity struct {
	ID   string
	Name string
}

const listPageSize = 500

func (a *api) listQueues(ctx context.Context) ([]Entity, error) {
	var out []Entity
	for page := 1; ; page++ {
		var listing *platformclientv2.Queueentitylisting
		err := a.call(ctx, "list queues", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
			var resp *platformclientv2.APIResponse
			var err error
			listing, resp, err = platformclientv2.NewRoutingApiWithConfig(cfg).GetRoutingQueues(page, listPageSize, "", "", nil, nil, nil, "", false, nil)
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		if listing == nil || listing.Entities == nil {
			return out, nil
		}
		for _, q := range *listing.Entities {
			if q.Id != nil {
				out = append(out, Entity{ID: *q.Id, Name: deref(q.Name)})
			}
		}
		if lastPage(listing.PageCount, page, len(*listing.Entities)) {
			return out, nil
		}
	}
}

func (a *api) listUsers(ctx context.Context) ([]Entity, error) {
	var out []Entity
	for page := 1; ; page++ {
		var listing *platformclientv2.Userentitylisting
		err := a.call(ctx, "list users", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
			var resp *platformclientv2.APIResponse
			var err error
			listing, resp, err = platformclientv2.NewUsersApiWithConfig(cfg).GetUsers(listPageSize, page, nil, nil, "", nil, "", "active")
			return resp, err
		})
		if err != nil {
			return nil, err
		}
		if listing == nil || listing.Entities == nil {
			return out, nil
		}
		for _, u := range *listing.Entities {
			if u.Id != nil {
				out = append(out, Entity{ID: *u.Id, Name: deref(u.Name)})
			}
		}
		if lastPage(listing.PageCount, page, len(*listing.Entities)) {
			return out, nil
		}
	}
}

func lastPage(pageCount *int, page, n int) bool {
	if pageCount != nil {
		return page >= *pageCount
	}
	return n < listPageSize
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
