package simulator

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	pc "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// Routes of the state reads, as counted in Stats.Requests.
const (
	RoutePresenceBulk     = "/api/v2/users/presences/purecloud/bulk"
	RouteUserPresence     = "/api/v2/users/{id}/presences/purecloud"
	RouteUserRoutingState = "/api/v2/users/{id}/routingstatus"
	RouteQueueMembers     = "/api/v2/routing/queues/{id}/members"
)

// Genesys' limits on the state reads.
const (
	// MaxPresenceBulkIDs is how many users one bulk presence call may name.
	MaxPresenceBulkIDs = 50
	// MaxQueueMembersPageSize is the largest pageSize of a queue's members.
	MaxQueueMembersPageSize = 100
)

// stateRoute names the state reads; ok is false for any other path.
func stateRoute(path string) (name, id string, ok bool) {
	if path == RoutePresenceBulk {
		return RoutePresenceBulk, "", true
	}
	if rest, found := strings.CutPrefix(path, RouteUsers+"/"); found {
		if id, found := strings.CutSuffix(rest, "/presences/purecloud"); found && validID(id) {
			return RouteUserPresence, id, true
		}
		if id, found := strings.CutSuffix(rest, "/routingstatus"); found && validID(id) {
			return RouteUserRoutingState, id, true
		}
	}
	if rest, found := strings.CutPrefix(path, RouteQueues+"/"); found {
		if id, found := strings.CutSuffix(rest, "/members"); found && validID(id) {
			return RouteQueueMembers, id, true
		}
	}
	return "", "", false
}

func validID(id string) bool { return id != "" && !strings.Contains(id, "/") }

// serveState answers a state read; false if name is not one.
func (s *Server) serveState(w http.ResponseWriter, r *http.Request, name, id string) bool {
	switch name {
	case RoutePresenceBulk, RouteUserPresence, RouteUserRoutingState, RouteQueueMembers:
	default:
		return false
	}
	if r.Method != http.MethodGet {
		writeAPIError(w, http.StatusMethodNotAllowed, "", "", nil)
		return true
	}
	switch name {
	case RoutePresenceBulk:
		s.handlePresenceBulk(w, r)
	case RouteUserPresence:
		s.handleUserPresence(w, id)
	case RouteUserRoutingState:
		s.handleUserRoutingStatus(w, id)
	case RouteQueueMembers:
		s.handleQueueMembers(w, r, id)
	}
	return true
}

func presenceDefinition(p PresenceState) *pc.Presencedefinition {
	return &pc.Presencedefinition{
		Id:             ptr(p.DefinitionID),
		SystemPresence: ptr(restSystemPresence(p.SystemPresence)),
		SelfUri:        ptr("/api/v2/presencedefinitions/" + p.DefinitionID),
	}
}

func (s *Server) handlePresenceBulk(w http.ResponseWriter, r *http.Request) {
	ids := multi(r.URL.Query(), "id")
	switch {
	case len(ids) == 0:
		writeAPIError(w, http.StatusBadRequest, "bad.request", "At least one user id is required.", nil)
		return
	case len(ids) > MaxPresenceBulkIDs:
		writeAPIError(w, http.StatusBadRequest, "bad.request",
			fmt.Sprintf("The number of user ids (%d) exceeds the limit of %d.", len(ids), MaxPresenceBulkIDs), nil)
		return
	}
	o := s.org.Load()
	out := make([]pc.Ucuserpresence, 0, len(ids))
	s.mu.Lock()
	for _, id := range ids {
		if _, ok := o.userByID[id]; !ok {
			continue // Genesys leaves unknown users out of the answer
		}
		p := s.state.presenceOf(o, id)
		out = append(out, pc.Ucuserpresence{
			Id:                 ptr(p.Source),
			UserId:             ptr(id),
			Source:             ptr(p.Source),
			SourceId:           ptr(p.Source),
			PresenceDefinition: presenceDefinition(p),
			Message:            optional(p.Message),
			ModifiedDate:       ptr(p.Modified),
			SelfUri:            ptr(RouteUsers + "/" + id + "/presences/" + p.Source),
		})
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleUserPresence(w http.ResponseWriter, id string) {
	o := s.org.Load()
	if _, ok := o.userByID[id]; !ok {
		writeAPIError(w, http.StatusNotFound, "", "", nil)
		return
	}
	p := s.UserPresence(id)
	writeJSON(w, http.StatusOK, pc.Userpresence{
		Id:                 ptr(p.Source),
		Name:               ptr("Genesys Cloud"),
		Source:             ptr(p.Source),
		SourceId:           ptr(p.Source),
		Primary:            ptr(p.Primary),
		PresenceDefinition: presenceDefinition(p),
		Message:            optional(p.Message),
		ModifiedDate:       ptr(p.Modified),
		SelfUri:            ptr(RouteUsers + "/" + id + "/presences/" + p.Source),
	})
}

// handleUserRoutingStatus answers OFF_QUEUE, without a start time, for a
// user that does not exist, as Genesys documents.
func (s *Server) handleUserRoutingStatus(w http.ResponseWriter, id string) {
	o := s.org.Load()
	if _, ok := o.userByID[id]; !ok {
		writeJSON(w, http.StatusOK, pc.Routingstatus{UserId: ptr(id), Status: ptr("OFF_QUEUE")})
		return
	}
	rs := s.UserRoutingStatus(id)
	writeJSON(w, http.StatusOK, pc.Routingstatus{UserId: ptr(id), Status: ptr(rs.Status), StartTime: ptr(rs.Start)})
}

// memberFilter is what GET …/members narrows its answer by.
type memberFilter struct {
	name     string
	joined   *bool
	routing  []string
	presence []string
	memberBy string
}

func readMemberFilter(q map[string][]string) (memberFilter, string) {
	f := memberFilter{
		name:     strings.ToLower(first(q["name"])),
		routing:  multi(q, "routingStatus"),
		presence: multi(q, "presence"),
		memberBy: strings.ToLower(first(q["memberBy"])),
	}
	if v := first(q["joined"]); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, "joined must be true or false"
		}
		f.joined = &b
	}
	if f.memberBy != "" && f.memberBy != "user" && f.memberBy != "group" {
		return f, "memberBy must be user or group"
	}
	return f, ""
}

func first(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// keeps reports whether a member passes the filter. Presence matches in
// either spelling ("On Queue" or "ON_QUEUE"), case-insensitively.
func (f memberFilter) keeps(m queueMember, rs RoutingState, p PresenceState) bool {
	if f.memberBy == "group" {
		return false // the simulated org adds members one by one, never by group
	}
	if f.joined != nil && m.joined != *f.joined {
		return false
	}
	if f.name != "" && !strings.Contains(strings.ToLower(m.user.Name), f.name) {
		return false
	}
	if len(f.routing) > 0 && !slices.ContainsFunc(f.routing, func(v string) bool { return strings.EqualFold(v, rs.Status) }) {
		return false
	}
	if len(f.presence) > 0 && !slices.ContainsFunc(f.presence, func(v string) bool {
		return strings.EqualFold(v, p.SystemPresence) || strings.EqualFold(v, restSystemPresence(p.SystemPresence))
	}) {
		return false
	}
	return true
}

func (s *Server) handleQueueMembers(w http.ResponseWriter, r *http.Request, queueID string) {
	q := r.URL.Query()
	p, bad := readPaging(q)
	if bad == "" && p.size > MaxQueueMembersPageSize {
		bad = fmt.Sprintf("pageSize must be less than or equal to %d", MaxQueueMembersPageSize)
	}
	if bad != "" {
		writeAPIError(w, http.StatusBadRequest, "bad.request", bad, nil)
		return
	}
	filter, bad := readMemberFilter(q)
	if bad != "" {
		writeAPIError(w, http.StatusBadRequest, "bad.request", bad, nil)
		return
	}
	expand := multi(q, "expand")
	withRouting := slices.Contains(expand, "routingStatus")
	withPresence := slices.Contains(expand, "presence")

	o := s.org.Load()
	if _, ok := o.queueByID[queueID]; !ok {
		writeAPIError(w, http.StatusNotFound, "not.found", "Queue "+queueID+" not found", nil)
		return
	}
	type row struct {
		m  queueMember
		rs RoutingState
		p  PresenceState
	}
	var rows []row
	s.mu.Lock()
	for _, m := range s.state.membersOf(o, queueID) {
		rw := row{m: m, rs: s.state.routingOf(o, m.user.ID), p: s.state.presenceOf(o, m.user.ID)}
		if filter.keeps(m, rw.rs, rw.p) {
			rows = append(rows, rw)
		}
	}
	s.mu.Unlock()
	// Genesys sorts members by name.
	slices.SortStableFunc(rows, func(a, b row) int { return strings.Compare(a.m.user.Name, b.m.user.Name) })
	if strings.EqualFold(q.Get("sortOrder"), "desc") {
		slices.Reverse(rows)
	}

	path := RouteQueues + "/" + queueID + "/members"
	lp := pageOf(path, q, p, len(rows))
	entities := make([]pc.Queuemember, 0, lp.to-lp.from)
	div := o.division
	for _, rw := range rows[lp.from:lp.to] {
		u := rw.m.user
		user := &pc.User{
			Id:       ptr(u.ID),
			Name:     ptr(u.Name),
			Division: &pc.Division{Id: ptr(div.ID), Name: ptr(div.Name), SelfUri: ptr("/api/v2/authorization/divisions/" + div.ID)},
			State:    ptr("active"),
			SelfUri:  ptr(RouteUsers + "/" + u.ID),
		}
		member := pc.Queuemember{
			Id:         ptr(u.ID),
			Name:       ptr(u.Name),
			User:       user,
			RingNumber: ptr(1),
			Joined:     ptr(rw.m.joined),
			MemberBy:   ptr("user"),
			SelfUri:    ptr(path + "/" + u.ID),
		}
		if withRouting {
			member.RoutingStatus = &pc.Routingstatus{UserId: ptr(u.ID), Status: ptr(rw.rs.Status), StartTime: ptr(rw.rs.Start)}
		}
		if withPresence {
			user.Presence = &pc.Userpresence{
				Id:                 ptr(rw.p.Source),
				Source:             ptr(rw.p.Source),
				Primary:            ptr(rw.p.Primary),
				PresenceDefinition: presenceDefinition(rw.p),
				Message:            optional(rw.p.Message),
				ModifiedDate:       ptr(rw.p.Modified),
			}
		}
		entities = append(entities, member)
	}
	// The members listing has no total or pageCount: a reader follows
	// nextUri until it is absent.
	writeJSON(w, http.StatusOK, pc.Queuememberentitylisting{
		Entities:    &entities,
		PageSize:    ptr(lp.pageSizeOut),
		PageNumber:  ptr(lp.pageNumOut),
		FirstUri:    ptr(lp.first),
		SelfUri:     ptr(lp.self),
		PreviousUri: lp.previous,
		NextUri:     lp.next,
	})
}

// restBudget is one access token's recent REST calls, for
// Options.RESTRateLimit: a sliding window, as Genesys counts a token's
// calls per minute.
type restBudget struct {
	calls []time.Time // oldest first, all within the window
}

// allowRESTLocked counts a REST call of token and reports whether it is
// within Options.RESTRateLimit; when not, it returns how long until the
// oldest call in the window leaves it (the answer's Retry-After).
func (s *Server) allowRESTLocked(token string, now time.Time) (bool, time.Duration) {
	limit, window := s.opts.RESTRateLimit, s.opts.RESTRateWindow
	if limit <= 0 {
		return true, 0
	}
	if s.restUse == nil {
		s.restUse = map[string]*restBudget{}
	}
	b := s.restUse[token]
	if b == nil {
		b = &restBudget{}
		s.restUse[token] = b
	}
	cut := 0
	for cut < len(b.calls) && now.Sub(b.calls[cut]) >= window {
		cut++
	}
	b.calls = b.calls[cut:]
	if len(b.calls) >= limit {
		s.stats.RateLimited++
		return false, b.calls[0].Add(window).Sub(now)
	}
	b.calls = append(b.calls, now)
	return true, 0
}

// rateLimit answers 429 with Retry-After when token has used its budget;
// false means the request was answered.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request, token string) bool {
	s.mu.Lock()
	ok, wait := s.allowRESTLocked(token, time.Now())
	s.mu.Unlock()
	if !ok {
		writeFault(w, r, &Fault{Status: http.StatusTooManyRequests, RetryAfter: wait})
	}
	return ok
}
