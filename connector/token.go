package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// Token is an OAuth access token. Its value is a secret: never log it.
type Token struct {
	Value    string
	Expiry   time.Time
	Lifetime time.Duration
}

func (t Token) String() string { return "Token(redacted)" }

// LogValue keeps the token out of structured logs.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.Time("expiry", t.Expiry))
}

// TokenSource fetches client-credentials tokens through the SDK and caches
// them, refreshing ahead of expiry. The SDK's own AutomaticTokenRefresh is
// never used: it panics when a refresh fails.
type TokenSource struct {
	mu     sync.Mutex
	cfg    *platformclientv2.Configuration
	http   *httpClient
	id     string
	secret string
	log    *slog.Logger
	now    func() time.Time

	current Token
}

// NewTokenSource returns a token source for the OAuth client against the
// login base URL (https://login.{domain}, or the simulator's URL).
func NewTokenSource(loginURL, clientID, clientSecret string, log *slog.Logger) *TokenSource {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// AuthorizeClientCredentials posts to BasePath with "//api." replaced by
	// "//login.", so a login URL as the base path is used as it is.
	cfg, hc := newSDKClient(loginURL)
	return &TokenSource{
		cfg:    cfg,
		http:   hc,
		id:     clientID,
		secret: clientSecret,
		log:    log,
		now:    time.Now,
	}
}

// refreshAhead is how long before expiry a token is replaced: a quarter of
// its life, so channels made with it can be rotated before it dies.
func refreshAhead(t Token) time.Duration { return t.Lifetime / 4 }

// Token returns a token with at least a quarter of its life left, fetching
// a new one when needed. When a refresh fails while the cached token is
// still valid, the cached one is returned and the refresh is tried again on
// the next call.
func (ts *TokenSource) Token(ctx context.Context) (Token, error) {
	return ts.token(ctx, time.Time{})
}

// TokenAfter returns a token that outlives t, fetching a new one when the
// cached token does not: a channel made to replace one that dies with its
// token must not die with the same token.
func (ts *TokenSource) TokenAfter(ctx context.Context, t time.Time) (Token, error) {
	return ts.token(ctx, t)
}

func (ts *TokenSource) token(ctx context.Context, after time.Time) (Token, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	now := ts.now()
	cur := ts.current
	if cur.Value != "" && cur.Expiry.Sub(now) > refreshAhead(cur) && cur.Expiry.After(after) {
		return cur, nil
	}
	if err := ctx.Err(); err != nil {
		return Token{}, err
	}
	tok, err := ts.fetch(ctx)
	if err != nil {
		if cur.Value != "" && now.Before(cur.Expiry) && after.IsZero() && !IsStatus(err, http.StatusUnauthorized) {
			ts.log.Warn("token refresh failed, keeping the current token", "expires_in", cur.Expiry.Sub(now).Round(time.Second), "err", err)
			return cur, nil
		}
		return Token{}, err
	}
	ts.current = tok
	ts.log.Debug("fetched access token", "lifetime", tok.Lifetime)
	return tok, nil
}

// Invalidate drops the cached token after Genesys refused it (401).
func (ts *TokenSource) Invalidate() {
	ts.mu.Lock()
	ts.current = Token{}
	ts.mu.Unlock()
}

var authErrorRE = regexp.MustCompile(`^Auth Error: (\d{3}) - (.*?) \((.*)\)$`)

func (ts *TokenSource) fetch(ctx context.Context) (Token, error) {
	start := ts.now()
	ts.http.ctx = ctx
	defer func() { ts.http.ctx = context.Background() }()
	sdkGlobals.RLock()
	err := ts.cfg.AuthorizeClientCredentials(ts.id, ts.secret)
	sdkGlobals.RUnlock()
	if err != nil {
		// The SDK reports an OAuth refusal only as text; recover its status
		// so callers can tell bad credentials from a network fault.
		if m := authErrorRE.FindStringSubmatch(err.Error()); m != nil {
			status, _ := strconv.Atoi(m[1])
			return Token{}, &APIError{Op: "fetch token", Status: status, Code: m[2], Message: m[3]}
		}
		return Token{}, fmt.Errorf("fetch token: %w", err)
	}
	if ts.cfg.AccessTokenExpiresIn <= 0 {
		return Token{}, errors.New("fetch token: answer has no expires_in")
	}
	life := time.Duration(ts.cfg.AccessTokenExpiresIn) * time.Second
	tok := Token{Value: ts.cfg.AccessToken, Expiry: start.Add(life), Lifetime: life}
	ts.cfg.AccessToken = ""
	return tok, nil
}
