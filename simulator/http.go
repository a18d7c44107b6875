package simulator

import (
	"bufio"
	"crypto/subtle"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Routes, as counted in Stats.Requests.
const (
	RouteToken         = "/oauth/token"
	RouteChannels      = "/api/v2/notifications/channels"
	RouteChannel       = "/api/v2/notifications/channels/{id}"
	RouteSubscriptions = "/api/v2/notifications/channels/{id}/subscriptions"
	RouteTopics        = "/api/v2/notifications/availabletopics"
	RouteQueues        = "/api/v2/routing/queues"
	RouteUsers         = "/api/v2/users"
	RouteSocket        = "/channels/{id}"
	RouteOther         = "other"
)

// token is an access token the org issued.
type token struct {
	value   string
	issued  time.Time
	expires time.Time
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack lets the WebSocket upgrader, which asserts http.Hijacker directly,
// take over the connection.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	return &coalescer{Conn: c}, rw, nil
}

// route names a request's endpoint and extracts the channel id, if any.
func route(path string) (name, id string) {
	switch path {
	case RouteToken, RouteChannels, RouteQueues, RouteUsers, RouteTopics:
		return path, ""
	}
	if rest, ok := strings.CutPrefix(path, RouteChannels+"/"); ok {
		if id, ok := strings.CutSuffix(rest, "/subscriptions"); ok && id != "" && !strings.Contains(id, "/") {
			return RouteSubscriptions, id
		}
		if rest != "" && !strings.Contains(rest, "/") {
			return RouteChannel, rest
		}
		return RouteOther, ""
	}
	if rest, ok := strings.CutPrefix(path, "/channels/"); ok && rest != "" && !strings.Contains(rest, "/") {
		return RouteSocket, rest
	}
	if name, id, ok := stateRoute(path); ok {
		return name, id
	}
	return RouteOther, ""
}

func (s *Server) serveHTTP(rw http.ResponseWriter, r *http.Request) {
	name, id := route(r.URL.Path)
	rw.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	w := &statusWriter{ResponseWriter: rw}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		writeAPIError(w, http.StatusServiceUnavailable, "", "", nil)
		return
	}
	// Handlers count as server goroutines: a hijacked socket handler runs
	// for the socket's whole life, and Close must wait for it.
	s.wg.Add(1)
	fault := s.takeFaultLocked(r.Method, r.URL.Path)
	hold := s.takeHangLocked(r.Method, r.URL.Path)
	s.mu.Unlock()
	defer s.wg.Done()
	if hold > 0 {
		s.hold(r, hold)
	}

	// A socket's handler runs for the socket's life, so an upgrade is
	// counted when it happens rather than when the handler returns.
	var once sync.Once
	count := func(status int) {
		once.Do(func() {
			s.mu.Lock()
			s.stats.Requests[RequestKey{Method: r.Method, Route: name, Status: status}]++
			s.mu.Unlock()
		})
	}
	defer func() { count(w.status) }()

	if fault != nil {
		writeFault(w, r, fault)
		return
	}

	switch name {
	case RouteToken:
		if r.Method != http.MethodPost {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		s.handleToken(w, r)
		return
	case RouteSocket:
		if r.Method != http.MethodGet {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		s.handleSocket(w, r, id, func() { count(http.StatusSwitchingProtocols) })
		return
	}

	if !strings.HasPrefix(r.URL.Path, "/api/v2/") {
		writeAPIError(w, http.StatusNotFound, "", "", nil)
		return
	}
	tok, ok := s.authenticate(w, r)
	if !ok || !s.rateLimit(w, r, tok) {
		return
	}
	switch name {
	case RouteChannels:
		switch r.Method {
		case http.MethodPost:
			s.handleCreateChannel(w, r, tok)
		case http.MethodGet:
			s.handleListChannels(w, r, tok)
		default:
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
		}
	case RouteChannel:
		if r.Method != http.MethodHead {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		s.handleHeadChannel(w, id)
	case RouteSubscriptions:
		s.handleSubscriptions(w, r, id)
	case RouteTopics:
		if r.Method != http.MethodGet {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		handleAvailableTopics(w, r)
	case RouteQueues:
		if r.Method != http.MethodGet {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		s.handleQueues(w, r)
	case RouteUsers:
		if r.Method != http.MethodGet {
			writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
			return
		}
		s.handleUsers(w, r)
	default:
		if !s.serveState(w, r, name, id) {
			writeAPIError(w, http.StatusNotFound, "", "", nil)
		}
	}
}

// handleToken implements the client credentials grant.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	if !ok {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "client authentication is required (HTTP Basic)")
		return
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(s.opts.ClientID)) == 1
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) == 1
	if !idOK || !secretOK {
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if err := r.ParseForm(); err != nil {
		writeOAuthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	if gt := r.PostForm.Get("grant_type"); gt != "client_credentials" {
		writeOAuthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant type is not supported for this client")
		return
	}
	now := time.Now()
	tk := &token{value: randomString(86), issued: now, expires: now.Add(s.opts.TokenLifetime)}
	s.mu.Lock()
	s.tokens[tk.value] = tk
	s.stats.TokensIssued++
	s.changedLocked()
	s.mu.Unlock()
	s.kickJanitor()
	s.log.Debug("access token issued", "expires", tk.expires)
	// expires_in is whole seconds, rounded up so a sub-second lifetime in a
	// test still reads as "valid"; the token dies at its exact deadline.
	secs := int((s.opts.TokenLifetime + time.Second - 1) / time.Second)
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tk.value,
		"token_type":   "bearer",
		"expires_in":   secs,
	})
}

// authenticate checks the bearer token the way Genesys does: no token is
// authentication.required, an unknown or expired one is bad.credentials.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, v, _ := strings.Cut(h, " ")
	v = strings.TrimSpace(v)
	if !strings.EqualFold(scheme, "bearer") || v == "" {
		writeAPIError(w, http.StatusUnauthorized, "authentication.required",
			"No authentication bearer token specified in authorization header.", nil)
		return "", false
	}
	s.mu.Lock()
	tk := s.tokens[v]
	live := tk != nil && time.Now().Before(tk.expires)
	s.mu.Unlock()
	if !live {
		writeAPIError(w, http.StatusUnauthorized, "bad.credentials", "Invalid login credentials.", nil)
		return "", false
	}
	return v, true
}
