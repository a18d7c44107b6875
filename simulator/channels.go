package simulator

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// channel is a notification channel.
type channel struct {
	id         string
	num        int // for logs: channel ids are capabilities and never logged
	connectURI string
	token      string
	created    time.Time
	expires    time.Time
	topics     map[string]struct{}
	sorted     []string // cached sorted topics, shared read-only; nil when stale
	socket     *socket
	connects   int
	// pending holds topics subscribed but not yet receiving (see
	// SetSubscribeDelay), by the subscription call that added them.
	pending map[string]uint64
	subGen  uint64
}

func (ch *channel) sortedTopics() []string {
	if ch.sorted == nil {
		ch.sorted = make([]string, 0, len(ch.topics))
		for t := range ch.topics {
			ch.sorted = append(ch.sorted, t)
		}
		slices.Sort(ch.sorted)
	}
	return ch.sorted
}

func (s *Server) handleCreateChannel(w http.ResponseWriter, r *http.Request, tok string) {
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	now := time.Now()
	ch := &channel{
		id:      "streaming-0-" + randomString(26),
		token:   tok,
		created: now,
		expires: now.Add(s.opts.ChannelLifetime),
		topics:  map[string]struct{}{},
	}
	ch.connectURI = scheme + "://" + r.Host + "/channels/" + ch.id

	s.mu.Lock()
	for len(s.channels) >= s.opts.MaxChannels {
		restore := s.becauseLocked(causeLimitEvicted)
		victim := s.evictionVictimLocked()
		s.stats.ChannelsEvicted++
		s.log.Debug("channel evicted by channel limit", "channel", victim.num, "limit", s.opts.MaxChannels)
		s.killChannelLocked(victim, fmt.Sprintf("channel evicted: the OAuth client reached its limit of %d channels", s.opts.MaxChannels))
		restore()
	}
	s.channelN++
	ch.num = s.channelN
	s.channels[ch.id] = ch
	s.stats.ChannelsCreated++
	s.changedLocked()
	s.mu.Unlock()
	s.kickJanitor()
	s.log.Debug("channel created", "channel", ch.num)

	writeJSON(w, http.StatusOK, s.channelModel(ch))
}

// evictionVictimLocked picks the oldest channel without a socket, or the
// oldest channel when every one is connected.
func (s *Server) evictionVictimLocked() *channel {
	var idle, any *channel
	older := func(a, b *channel) bool { return b == nil || a.num < b.num }
	for _, ch := range s.channels {
		if older(ch, any) {
			any = ch
		}
		if ch.socket == nil && older(ch, idle) {
			idle = ch
		}
	}
	if idle != nil {
		return idle
	}
	return any
}

func (s *Server) channelModel(ch *channel) platformclientv2.Channel {
	exp := ch.expires.Add(s.opts.ClockOffset).UTC().Truncate(time.Millisecond)
	return platformclientv2.Channel{ConnectUri: ptr(ch.connectURI), Id: ptr(ch.id), Expires: &exp}
}

func (s *Server) handleListChannels(w http.ResponseWriter, r *http.Request, tok string) {
	include := r.URL.Query().Get("includechannels")
	if include != "" && include != "token" && include != "oauthclient" {
		writeAPIError(w, http.StatusBadRequest, "bad.request", "includechannels must be one of token, oauthclient", nil)
		return
	}
	s.mu.Lock()
	var chans []*channel
	for _, ch := range s.channels {
		if include == "oauthclient" || ch.token == tok {
			chans = append(chans, ch)
		}
	}
	slices.SortFunc(chans, func(a, b *channel) int { return a.num - b.num })
	entities := make([]platformclientv2.Channel, 0, len(chans))
	for _, ch := range chans {
		m := s.channelModel(ch)
		if ch.token != tok {
			// Another token's channel counts against the client's 20 but
			// is not this caller's to read: its id is the capability.
			m.Id, m.ConnectUri = nil, nil
		}
		entities = append(entities, m)
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, platformclientv2.Channelentitylisting{Entities: &entities})
}

func (s *Server) handleHeadChannel(w http.ResponseWriter, id string) {
	s.mu.Lock()
	_, ok := s.channels[id]
	s.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) handleSubscriptions(w http.ResponseWriter, r *http.Request, id string) {
	var entries []string
	replace := false
	switch r.Method {
	case http.MethodGet, http.MethodDelete:
	case http.MethodPut, http.MethodPost:
		replace = r.Method == http.MethodPut
		var body []struct {
			ID string `json:"id"`
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
		if err == nil {
			err = json.Unmarshal(raw, &body)
		}
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "bad.request", "The request body is not a list of topics: [{\"id\":\"…\"}]", nil)
			return
		}
		for _, b := range body {
			entries = append(entries, b.ID)
		}
	default:
		writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
		return
	}
	ignore, _ := strconv.ParseBool(r.URL.Query().Get("ignoreErrors"))

	s.mu.Lock()
	ch := s.channels[id]
	if ch == nil {
		s.mu.Unlock()
		writeAPIError(w, http.StatusNotFound, "not.found", "Channel not found or expired.", nil)
		return
	}
	restore := s.becauseLocked(causeClientSubs)
	var rejected []rejection
	switch r.Method {
	case http.MethodDelete:
		s.setTopicsLocked(ch, nil)
		restore()
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
		return
	case http.MethodPut, http.MethodPost:
		res := s.subscribeLocked(ch, entries, replace, ignore)
		if res.status != 0 {
			restore()
			s.mu.Unlock()
			writeAPIError(w, res.status, res.code, res.msg, res.params)
			return
		}
		rejected = res.rejected
	}
	restore()
	topics := ch.sortedTopics()
	s.mu.Unlock()

	// Each entity carries its state: the topics the channel holds are
	// Permitted; with ignoreErrors, a topic the call refused is listed as
	// Rejected with the reason, so a client can tell what it did not get.
	entities := make([]platformclientv2.Channeltopic, 0, len(topics)+len(rejected))
	for _, t := range topics {
		entities = append(entities, platformclientv2.Channeltopic{Id: ptr(t), State: ptr("Permitted")})
	}
	for _, rj := range rejected {
		entities = append(entities, platformclientv2.Channeltopic{Id: ptr(rj.topic), State: ptr("Rejected"), RejectionReason: ptr(rj.reason)})
	}
	writeJSON(w, http.StatusOK, platformclientv2.Channeltopicentitylisting{Entities: &entities})
}

// rejection is a topic a subscription call refused.
type rejection struct {
	topic, reason string
}

// subscribeResult is what a subscription call did: a status other than 0
// failed the whole call with Genesys' code and message.
type subscribeResult struct {
	accepted []string
	rejected []rejection
	status   int
	code     string
	msg      string
	params   map[string]string
}

// subscribeLocked adds entries to (or with replace, replaces) a channel's
// topics and renews the channel's life. Invalid or refused topics (see
// RejectTopics) fail the whole call unless ignoreErrors, which skips them
// and reports each; exceeding the per-channel limit always fails it.
func (s *Server) subscribeLocked(ch *channel, entries []string, replace, ignoreErrors bool) subscribeResult {
	var res subscribeResult
	for _, e := range entries {
		for _, t := range expandTopic(e) {
			status, code, reason, params := 0, "", "", map[string]string(nil)
			if !validTopic(t) {
				status, code, reason = http.StatusBadRequest, "bad.request", fmt.Sprintf("Invalid topic: %q is not a topic this API supports.", t)
			} else if rj, ok := s.rejectedTopics[t]; ok {
				status, code, reason, params = rj.status, errorCode(rj.status), rj.reason, rj.params
			}
			if status != 0 {
				if ignoreErrors {
					res.rejected = append(res.rejected, rejection{topic: t, reason: reason})
					continue
				}
				return subscribeResult{status: status, code: code, msg: reason, params: params}
			}
			res.accepted = append(res.accepted, t)
		}
	}
	next := map[string]struct{}{}
	if !replace {
		for t := range ch.topics {
			next[t] = struct{}{}
		}
	}
	for _, t := range res.accepted {
		next[t] = struct{}{}
	}
	if len(next) > s.opts.MaxTopicsPerChannel {
		return subscribeResult{status: http.StatusBadRequest, code: "bad.request", msg: fmt.Sprintf("The channel subscription limit of %d topics has been exceeded (%d requested).",
			s.opts.MaxTopicsPerChannel, len(next))}
	}
	s.setTopicsLocked(ch, next)
	ch.expires = time.Now().Add(s.opts.ChannelLifetime)
	return res
}

// setTopicsLocked replaces a channel's topic set and the topic index. A
// topic new to the channel reaches the index, and so receives events, only
// after the subscribe delay (SetSubscribeDelay); one it keeps stays live.
func (s *Server) setTopicsLocked(ch *channel, next map[string]struct{}) {
	for t := range ch.topics {
		if _, keep := next[t]; keep {
			continue
		}
		delete(ch.pending, t)
		if set := s.byTopic[t]; set != nil {
			delete(set, ch)
			if len(set) == 0 {
				delete(s.byTopic, t)
			}
		}
	}
	ch.subGen++
	gen, delayed := ch.subGen, false
	for t := range next {
		if _, had := ch.topics[t]; had {
			continue
		}
		if s.subscribeDelay > 0 {
			if ch.pending == nil {
				ch.pending = map[string]uint64{}
			}
			ch.pending[t] = gen
			delayed = true
			continue
		}
		s.indexLocked(ch, t)
	}
	if next == nil {
		next = map[string]struct{}{}
	}
	ch.topics = next
	ch.sorted = nil
	if delayed {
		s.afterLocked(s.subscribeDelay, func() {
			if s.channels[ch.id] != ch {
				return
			}
			defer s.becauseLocked(causeSubscribed)()
			for topic, g := range ch.pending {
				if g == gen {
					delete(ch.pending, topic)
					s.indexLocked(ch, topic)
				}
			}
			s.changedLocked()
		})
	}
	s.noteHeldLocked()
	s.changedLocked()
}

func (s *Server) indexLocked(ch *channel, t string) {
	set := s.byTopic[t]
	if set == nil {
		set = map[*channel]struct{}{}
		s.byTopic[t] = set
	}
	set[ch] = struct{}{}
}

// noteHeldLocked keeps the peak of channels in use at once: subscribed or
// connected. A channel emptied and left without a socket is the first
// Genesys evicts, so it no longer counts against a client's budget.
func (s *Server) noteHeldLocked() {
	n := 0
	for _, ch := range s.channels {
		if ch.socket != nil || len(ch.topics) > 0 {
			n++
		}
	}
	s.stats.PeakChannelsInUse = max(s.stats.PeakChannelsInUse, n)
}

// killChannelLocked ends a channel: it leaves the index, and its socket, if
// any, gets Genesys' 404 frame and is closed.
func (s *Server) killChannelLocked(ch *channel, reason string) {
	if s.channels[ch.id] != ch {
		return
	}
	delete(s.channels, ch.id)
	s.setTopicsLocked(ch, nil)
	if sk := ch.socket; sk != nil {
		if sk.writable() {
			s.writeLocked(sk, goneFrame(reason))
			s.writeCloseLocked(sk, 1000, "")
		}
		s.shutdownLocked(sk)
	}
	s.log.Debug("channel ended", "channel", ch.num, "reason", reason)
	s.changedLocked()
}

// subscribedTopics is the sorted union of every live channel's topics.
func (s *Server) subscribedTopics() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.byTopic))
	for t := range s.byTopic {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

func goneFrame(reason string) []byte {
	b, _ := json.Marshal(map[string]string{"result": "404", "message": reason})
	return b
}
