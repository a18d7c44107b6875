package simulator

import (
	"encoding/json"
	"slices"
	"strings"
	"time"

	pc "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// The state the org's events announced. Genesys never replays an event, but
// what presence, routing status and queue membership events announce can be
// read back over REST; the simulator answers those reads from what its own
// events said, so a client that lost events can repair its view and a test
// can compare that view with the truth. Every event on the three topic
// families changes the state when it is delivered (in Seq order), whether
// or not any socket received it.

// PresenceState is a user's Genesys Cloud presence, as the last presence
// event set it.
type PresenceState struct {
	// SystemPresence is in the events' spelling ("ON_QUEUE"); REST answers
	// spell it as Genesys' presence definitions do ("On Queue").
	SystemPresence string
	DefinitionID   string
	Message        string
	Source         string
	Primary        bool
	Modified       time.Time
}

// RoutingState is a user's routing status, as the last routing status
// event set it.
type RoutingState struct {
	Status string
	Start  time.Time
}

// orgState is what events announced, on top of the org's defaults: a user
// no event has touched is OFFLINE and OFF_QUEUE since the org was created,
// and a generated queue member is joined or not by its place in the queue.
// Guarded by Server.mu.
type orgState struct {
	presence map[string]PresenceState
	routing  map[string]RoutingState
	// joined is queue id → user id → joined, for members an event named
	// (an event may name a user the directory does not list as a member:
	// it is a member from then on, as Genesys' event says).
	joined map[string]map[string]bool
}

func newOrgState() orgState {
	return orgState{
		presence: map[string]PresenceState{},
		routing:  map[string]RoutingState{},
		joined:   map[string]map[string]bool{},
	}
}

// stateChange is what one event announces, decoded outside the lock when
// the event is framed and applied under it when the event is delivered.
type stateChange struct {
	userID, queueID string
	presence        *PresenceState
	routing         *RoutingState
	joined          *bool
}

// Topic families whose state can be read back.
const (
	patternPresence      = "v2.users.{id}.presence"
	patternRoutingStatus = "v2.users.{id}.routingStatus"
	patternQueueMembers  = "v2.routing.queues.{id}.users"
)

// parseStateChange decodes what an event on topic announces; nil for
// topics whose state is not kept, or a body that says nothing usable (an
// EmitBody test input: it is delivered as given and changes nothing).
func parseStateChange(topic string, body []byte) *stateChange {
	p, ids := topics.match(topic)
	if p == nil || len(ids) != 1 {
		return nil
	}
	switch p.Pattern {
	case patternPresence:
		var ev pc.Presenceeventuserpresence
		if json.Unmarshal(body, &ev) != nil || ev.PresenceDefinition == nil || ev.PresenceDefinition.SystemPresence == nil {
			return nil
		}
		ps := PresenceState{
			SystemPresence: *ev.PresenceDefinition.SystemPresence,
			DefinitionID:   deref(ev.PresenceDefinition.Id),
			Message:        deref(ev.Message),
			Source:         deref(ev.Source),
			Primary:        ev.Primary != nil && *ev.Primary,
		}
		if ev.ModifiedDate != nil {
			ps.Modified = ev.ModifiedDate.UTC()
		}
		return &stateChange{userID: ids[0], presence: &ps}
	case patternRoutingStatus:
		var ev pc.Userroutingstatususerroutingstatus
		if json.Unmarshal(body, &ev) != nil || ev.RoutingStatus == nil || ev.RoutingStatus.Status == nil {
			return nil
		}
		rs := RoutingState{Status: *ev.RoutingStatus.Status}
		if ev.RoutingStatus.StartTime != nil {
			rs.Start = ev.RoutingStatus.StartTime.UTC()
		}
		return &stateChange{userID: ids[0], routing: &rs}
	case patternQueueMembers:
		var ev pc.Queueusereventtopicqueuemember
		if json.Unmarshal(body, &ev) != nil || ev.Joined == nil {
			return nil
		}
		user := deref(ev.Id)
		if ev.User != nil && ev.User.Id != nil {
			user = *ev.User.Id
		}
		if user == "" {
			return nil
		}
		joined := *ev.Joined
		return &stateChange{queueID: ids[0], userID: user, joined: &joined}
	}
	return nil
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func (st *orgState) apply(c *stateChange) {
	switch {
	case c == nil:
	case c.presence != nil:
		st.presence[c.userID] = *c.presence
	case c.routing != nil:
		st.routing[c.userID] = *c.routing
	case c.joined != nil:
		m := st.joined[c.queueID]
		if m == nil {
			m = map[string]bool{}
			st.joined[c.queueID] = m
		}
		m[c.userID] = *c.joined
	}
}

// presenceOf is a user's presence: the last event's, or the default.
func (st *orgState) presenceOf(o *org, userID string) PresenceState {
	if p, ok := st.presence[userID]; ok {
		return p
	}
	return PresenceState{
		SystemPresence: "OFFLINE",
		DefinitionID:   presenceDefinitionIDs["OFFLINE"],
		Source:         "PURECLOUD",
		Primary:        true,
		Modified:       o.created,
	}
}

func (st *orgState) routingOf(o *org, userID string) RoutingState {
	if r, ok := st.routing[userID]; ok {
		return r
	}
	return RoutingState{Status: "OFF_QUEUE", Start: o.created}
}

// queueMember is one member of a queue in the state.
type queueMember struct {
	user   Entity
	joined bool
}

// membersOf lists a queue's members: the directory's, in its order, then
// the users events added, by id; joined as the last event said, else by
// place (every other generated member starts joined, as the queue
// listing's joinedMemberCount says).
func (st *orgState) membersOf(o *org, queueID string) []queueMember {
	var out []queueMember
	said := st.joined[queueID]
	seen := map[string]bool{}
	if qi, ok := o.queueByID[queueID]; ok {
		for i, ui := range o.queues[qi].members {
			u := o.users[ui].Entity
			joined, ok := said[u.ID]
			if !ok {
				joined = i%2 == 0
			}
			out = append(out, queueMember{user: u, joined: joined})
			seen[u.ID] = true
		}
	}
	var extra []string
	for id := range said {
		if !seen[id] {
			extra = append(extra, id)
		}
	}
	slices.Sort(extra)
	for _, id := range extra {
		u, ok := o.userEntity(id)
		if !ok {
			continue // a removed user is no longer a member
		}
		out = append(out, queueMember{user: u, joined: said[id]})
	}
	return out
}

func (o *org) userEntity(id string) (Entity, bool) {
	if i, ok := o.userByID[id]; ok {
		return o.users[i].Entity, true
	}
	return Entity{}, false
}

// restSystemPresence spells a system presence as Genesys' REST answers do
// (its presence definitions' "On Queue"), not as events do ("ON_QUEUE").
func restSystemPresence(event string) string {
	words := strings.Split(strings.ToLower(event), "_")
	for i, w := range words {
		if w != "" {
			words[i] = strings.ToUpper(w[:1]) + w[1:]
		}
	}
	return strings.Join(words, " ")
}

// UserPresence is a user's presence as the org's events set it (the
// default, OFFLINE since the org was created, before any event).
func (s *Server) UserPresence(userID string) PresenceState {
	o := s.org.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.presenceOf(o, userID)
}

// UserRoutingStatus is a user's routing status as the org's events set it
// (OFF_QUEUE since the org was created, before any event).
func (s *Server) UserRoutingStatus(userID string) RoutingState {
	o := s.org.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state.routingOf(o, userID)
}

// QueueMemberJoined maps each member of a queue to whether it is joined,
// as the org's directory and events say.
func (s *Server) QueueMemberJoined(queueID string) map[string]bool {
	o := s.org.Load()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, m := range s.state.membersOf(o, queueID) {
		out[m.user.ID] = m.joined
	}
	return out
}

// SetActiveTopics makes topics produce an event every EventInterval
// whether or not a channel subscribes to them, as an org's agents change
// presence whether or not anyone listens: state keeps moving while no
// channel (not just no socket) carries a topic. Called with none, only
// subscribed topics produce events, the default.
func (s *Server) SetActiveTopics(topics ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.activeTopics = slices.Clone(topics)
}

// generatedTopics are the topics the EventInterval generator emits: the
// subscribed ones and the active ones, each once.
func (s *Server) generatedTopics() []string {
	list := s.subscribedTopics()
	s.mu.Lock()
	active := s.activeTopics
	s.mu.Unlock()
	if len(active) == 0 {
		return list
	}
	subscribed := len(list)
	for _, t := range active {
		if _, found := slices.BinarySearch(list[:subscribed], t); !found {
			list = append(list, t)
		}
	}
	return list
}

// memberCounts is a queue's memberCount and joinedMemberCount as its
// members listing answers them.
func (s *Server) memberCounts(o *org, queueID string) (members, joined int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	list := s.state.membersOf(o, queueID)
	for _, m := range list {
		if m.joined {
			joined++
		}
	}
	return len(list), joined
}
