package connector

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// Snapshot is the current state of one topic's entity, read over REST and
// shaped as that topic's eventBody, so it can be published on the topic's
// own subject beside the events it stands in for.
type Snapshot struct {
	// Topic is the notification topic Body belongs to, e.g.
	// v2.users.{id}.presence.
	Topic string
	// Body is JSON in the topic's eventBody model (Presenceeventuserpresence,
	// Userroutingstatususerroutingstatus, Queueusereventtopicqueuemember),
	// marshalled by the SDK as the events are: the same state gives the
	// same bytes, whoever reads it.
	Body []byte
	// Since is when Genesys says the state began (a presence's
	// modifiedDate, a routing status's startTime); zero for queue
	// membership, which carries no time.
	Since time.Time
}

// Topic families whose current state can be read back.
const (
	stateKindNone = iota
	stateKindPresence
	stateKindRouting
	stateKindQueueMembers
)

// stateTopic names the family of a topic and its entity id.
func stateTopic(topic string) (kind int, id string) {
	if rest, ok := strings.CutPrefix(topic, "v2.users."); ok {
		if id, ok := strings.CutSuffix(rest, ".presence"); ok && validStateID(id) {
			return stateKindPresence, id
		}
		if id, ok := strings.CutSuffix(rest, ".routingStatus"); ok && validStateID(id) {
			return stateKindRouting, id
		}
	}
	if rest, ok := strings.CutPrefix(topic, "v2.routing.queues."); ok {
		if id, ok := strings.CutSuffix(rest, ".users"); ok && validStateID(id) {
			return stateKindQueueMembers, id
		}
	}
	return stateKindNone, ""
}

func validStateID(id string) bool { return id != "" && !strings.ContainsAny(id, ".*?&") }

// Readable reports whether a topic's state can be read back over REST:
// user presence, user routing status and queue membership. Conversation
// topics cannot (a conversation's state is not one read).
func Readable(topic string) bool {
	kind, _ := stateTopic(topic)
	return kind != stateKindNone
}

// Genesys' page limits for the state reads.
const (
	presenceBulkMax     = 50
	queueMembersPageMax = 100
)

// StateReader reads back the current state of readable topics through the
// SDK's own calls. Its calls are repair calls for the REST limiter it
// shares with the connector: they wait while any channel call does.
type StateReader struct {
	api *api
}

// NewStateReader reads from the Genesys REST base apiURL with tokens from
// tokens, spaced out by limiter (nil: none). It has an SDK configuration
// of its own, so its calls never hold up the connector's.
func NewStateReader(apiURL string, tokens *TokenSource, limiter *RESTLimiter, log *slog.Logger) *StateReader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := newAPI(apiURL, tokens, log)
	a.http.limiter = limiter
	return &StateReader{api: a}
}

// StateReader returns a reader that shares the connector's token source
// and REST limiter.
func (c *Connector) StateReader() *StateReader {
	return NewStateReader(c.opts.APIURL, c.tokens, c.api.http.limiter, c.log)
}

// Read reads the state of every readable topic: presences 50 users a
// call, routing statuses one user a call, queue members 100 a page. It
// returns the snapshots read, the topics it cannot read, and the first
// error (the snapshots read before it are returned with it).
func (r *StateReader) Read(ctx context.Context, topics []string) (snaps []Snapshot, unreadable []string, err error) {
	var presence, routing, queues []string
	for _, t := range topics {
		switch kind, id := stateTopic(t); kind {
		case stateKindPresence:
			presence = append(presence, id)
		case stateKindRouting:
			routing = append(routing, id)
		case stateKindQueueMembers:
			queues = append(queues, id)
		default:
			unreadable = append(unreadable, t)
		}
	}
	snaps, err = r.Presences(ctx, presence)
	if err != nil {
		return snaps, unreadable, err
	}
	more, err := r.RoutingStatuses(ctx, routing)
	snaps = append(snaps, more...)
	if err != nil {
		return snaps, unreadable, err
	}
	for _, q := range queues {
		more, err := r.QueueMembers(ctx, q)
		snaps = append(snaps, more...)
		if err != nil {
			return snaps, unreadable, err
		}
	}
	return snaps, unreadable, nil
}

// Presences reads the users' Genesys Cloud presences, 50 a call, as
// v2.users.{id}.presence snapshots. A user Genesys does not know is left
// out, as Genesys leaves it out of the answer.
func (r *StateReader) Presences(ctx context.Context, userIDs []string) ([]Snapshot, error) {
	ctx = WithRESTPriority(ctx, PriorityRepair)
	out := make([]Snapshot, 0, len(userIDs))
	for start := 0; start < len(userIDs); start += presenceBulkMax {
		batch := userIDs[start:min(start+presenceBulkMax, len(userIDs))]
		var answer []platformclientv2.Ucuserpresence
		err := r.api.call(ctx, "read presences", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
			var resp *platformclientv2.APIResponse
			var err error
			answer, resp, err = platformclientv2.NewPresenceApiWithConfig(cfg).GetUsersPresencesPurecloudBulk(batch)
			return resp, err
		})
		if err != nil {
			return out, err
		}
		for _, p := range answer {
			snap, err := presenceSnapshot(p)
			if err != nil {
				return out, err
			}
			out = append(out, snap)
		}
	}
	return out, nil
}

// presenceSnapshot turns a bulk answer's presence into the presence event
// body. REST spells a system presence as the presence definitions do ("On
// Queue"), events as an enum ("ON_QUEUE"); the snapshot takes the events'
// spelling. The bulk answer reads the PURECLOUD source, the primary one.
func presenceSnapshot(p platformclientv2.Ucuserpresence) (Snapshot, error) {
	if p.UserId == nil || p.PresenceDefinition == nil || p.PresenceDefinition.SystemPresence == nil {
		return Snapshot{}, fmt.Errorf("read presences: an answer without userId or presenceDefinition")
	}
	source := p.Source
	if source == nil {
		source = ptrTo("PURECLOUD")
	}
	body := platformclientv2.Presenceeventuserpresence{
		Source: source,
		PresenceDefinition: &platformclientv2.Presenceeventorganizationpresence{
			Id:             p.PresenceDefinition.Id,
			SystemPresence: ptrTo(eventSystemPresence(*p.PresenceDefinition.SystemPresence)),
		},
		Primary:      ptrTo(true),
		Message:      emptyToNil(p.Message),
		ModifiedDate: p.ModifiedDate,
	}
	return newSnapshot("v2.users."+*p.UserId+".presence", &body, p.ModifiedDate)
}

// eventSystemPresence spells a REST system presence as events do.
func eventSystemPresence(rest string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(rest), " ", "_"))
}

// RoutingStatuses reads the users' routing statuses, one call each, as
// v2.users.{id}.routingStatus snapshots. (The bulk alternative, the
// analytics user activity query, needs another permission.)
func (r *StateReader) RoutingStatuses(ctx context.Context, userIDs []string) ([]Snapshot, error) {
	ctx = WithRESTPriority(ctx, PriorityRepair)
	out := make([]Snapshot, 0, len(userIDs))
	for _, id := range userIDs {
		var rs *platformclientv2.Routingstatus
		err := r.api.call(ctx, "read routing status", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
			var resp *platformclientv2.APIResponse
			var err error
			rs, resp, err = platformclientv2.NewUsersApiWithConfig(cfg).GetUserRoutingstatus(id)
			return resp, err
		})
		if err != nil {
			return out, err
		}
		if rs == nil || rs.Status == nil {
			return out, fmt.Errorf("read routing status of %s: an answer without status", id)
		}
		body := platformclientv2.Userroutingstatususerroutingstatus{
			Id:            ptrTo(id),
			RoutingStatus: &platformclientv2.Userroutingstatusroutingstatus{Status: rs.Status, StartTime: rs.StartTime},
		}
		snap, err := newSnapshot("v2.users."+id+".routingStatus", &body, rs.StartTime)
		if err != nil {
			return out, err
		}
		out = append(out, snap)
	}
	return out, nil
}

// QueueMembers reads a queue's members, 100 a page, as one
// v2.routing.queues.{id}.users snapshot per member. The SDK always sends
// the joined filter (false when not asked), so the joined and the other
// members are two listings.
func (r *StateReader) QueueMembers(ctx context.Context, queueID string) ([]Snapshot, error) {
	ctx = WithRESTPriority(ctx, PriorityRepair)
	var out []Snapshot
	for _, joined := range []bool{true, false} {
		for page := 1; ; page++ {
			var listing *platformclientv2.Queuememberentitylisting
			err := r.api.call(ctx, "read queue members", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
				var resp *platformclientv2.APIResponse
				var err error
				listing, resp, err = platformclientv2.NewRoutingApiWithConfig(cfg).GetRoutingQueueMembers(
					queueID, page, queueMembersPageMax, "", nil, "", nil, nil, nil, nil, nil, "", joined)
				return resp, err
			})
			if err != nil {
				return out, err
			}
			if listing == nil || listing.Entities == nil {
				break
			}
			for _, m := range *listing.Entities {
				snap, err := memberSnapshot(queueID, m)
				if err != nil {
					return out, err
				}
				out = append(out, snap)
			}
			if listing.NextUri == nil || *listing.NextUri == "" || len(*listing.Entities) == 0 {
				break
			}
		}
	}
	return out, nil
}

func memberSnapshot(queueID string, m platformclientv2.Queuemember) (Snapshot, error) {
	id := m.Id
	if m.User != nil && m.User.Id != nil {
		id = m.User.Id
	}
	if id == nil || m.Joined == nil {
		return Snapshot{}, fmt.Errorf("read queue members of %s: a member without id or joined", queueID)
	}
	body := platformclientv2.Queueusereventtopicqueuemember{
		Id:      id,
		User:    &platformclientv2.Queueusereventtopicuserreference{Id: id},
		QueueId: ptrTo(queueID),
		Joined:  m.Joined,
	}
	return newSnapshot("v2.routing.queues."+queueID+".users", &body, nil)
}

func newSnapshot(topic string, model any, since *time.Time) (Snapshot, error) {
	body, err := json.Marshal(model)
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot of %s: %w", topic, err)
	}
	s := Snapshot{Topic: topic, Body: body}
	if since != nil {
		s.Since = since.UTC()
	}
	return s, nil
}

func ptrTo[T any](v T) *T { return &v }

func emptyToNil(s *string) *string {
	if s == nil || *s == "" {
		return nil
	}
	return s
}

// RESTStats is what the connector's REST limiter, shared with its
// StateReaders, let through; zero without a limiter (RESTRate < 0).
func (c *Connector) RESTStats() RESTLimiterStats {
	if l := c.api.http.limiter; l != nil {
		return l.Stats()
	}
	return RESTLimiterStats{}
}
