package simulator

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// Entity is a queue or user of the simulated org.
type Entity struct {
	ID   string
	Name string
}

type queue struct {
	Entity
	created time.Time
	members []int // indexes into org.users
}

type user struct {
	Entity
	email  string
	queues []int // indexes into org.queues
}

// org is one version of the directory: queues and users with stable ids,
// each generated user a member of one or two queues. A version is never
// modified once published (member and queue index slices included, which
// versions share): AddQueue and the like build the next version and swap
// it in, so the REST handlers and the event builders read a consistent
// directory with one atomic load and no lock.
type org struct {
	seed      uint64
	created   time.Time
	division  Entity
	queues    []queue
	users     []user
	queueByID map[string]int
	userByID  map[string]int
	// added counts the entities added after generation; it numbers their
	// ids and default names.
	added uint64
	// removed keeps removed queues and users by id, so that an event a
	// test still emits for one names it as before.
	removed map[string]Entity
}

func newOrg(seed uint64, nQueues, nUsers int) *org {
	rnd := rand.New(rand.NewPCG(seed, 0x6763_6e61_7473)) // "gcnats"
	o := &org{
		seed:      seed,
		created:   time.Date(2024, 1, 15, 9, 0, 0, 0, time.UTC),
		division:  Entity{ID: randUUID(rnd), Name: "Home"},
		queueByID: map[string]int{},
		userByID:  map[string]int{},
		removed:   map[string]Entity{},
	}
	for i := range nQueues {
		q := queue{
			Entity:  Entity{ID: randUUID(rnd), Name: queueName(i)},
			created: o.created.Add(time.Duration(i) * time.Hour),
		}
		o.queueByID[q.ID] = i
		o.queues = append(o.queues, q)
	}
	for i := range nUsers {
		first, last := firstNames[i%len(firstNames)], lastNames[(i/len(firstNames)+i)%len(lastNames)]
		u := user{
			Entity: Entity{ID: randUUID(rnd), Name: fmt.Sprintf("%s %s", first, last)},
			email:  fmt.Sprintf("%s.%s.%d@example.com", strings.ToLower(first), strings.ToLower(last), i+1),
		}
		if nQueues > 0 {
			u.queues = append(u.queues, i%nQueues)
			if nQueues > 1 && i%3 == 0 {
				u.queues = append(u.queues, (i+1)%nQueues)
			}
			for _, q := range u.queues {
				o.queues[q].members = append(o.queues[q].members, i)
			}
		}
		o.userByID[u.ID] = i
		o.users = append(o.users, u)
	}
	return o
}

// addedStream is the PCG stream of added entities' ids ("added" and the
// entity's number), apart from the generated org's and the events'.
const addedStream = 0x6164_6465_6400_0000

// clone starts the next version. The index slices inside queues and users
// stay shared, so a change replaces them rather than writing into them.
func (o *org) clone() *org {
	c := *o
	c.queues = slices.Clone(o.queues)
	c.users = slices.Clone(o.users)
	c.queueByID = maps.Clone(o.queueByID)
	c.userByID = maps.Clone(o.userByID)
	c.removed = maps.Clone(o.removed)
	if c.removed == nil {
		c.removed = map[string]Entity{}
	}
	return &c
}

// newID numbers the next added entity and returns its id, which is
// deterministic for the seed and the number of entities added before it.
func (o *org) newID() string {
	for {
		o.added++
		id := randUUID(rand.New(rand.NewPCG(o.seed, addedStream+o.added)))
		_, q := o.queueByID[id]
		_, u := o.userByID[id]
		_, r := o.removed[id]
		if !q && !u && !r {
			return id
		}
	}
}

func (o *org) withQueue(name string) (*org, Entity) {
	c := o.clone()
	id := c.newID()
	if name == "" {
		name = fmt.Sprintf("Added Queue %d", c.added)
	}
	q := queue{Entity: Entity{ID: id, Name: name}, created: time.Now().UTC().Truncate(time.Millisecond)}
	c.queueByID[id] = len(c.queues)
	c.queues = append(c.queues, q)
	return c, q.Entity
}

func (o *org) withUser(name string) (*org, Entity) {
	c := o.clone()
	id := c.newID()
	if name == "" {
		name = fmt.Sprintf("Added User %d", c.added)
	}
	local := strings.Join(strings.Fields(strings.ToLower(name)), ".")
	u := user{
		Entity: Entity{ID: id, Name: name},
		email:  fmt.Sprintf("%s.a%d@example.com", local, c.added),
	}
	c.userByID[id] = len(c.users)
	c.users = append(c.users, u)
	return c, u.Entity
}

func (o *org) withoutQueue(id string) (*org, bool) {
	qi, ok := o.queueByID[id]
	if !ok {
		return nil, false
	}
	c := o.clone()
	c.removed[id] = c.queues[qi].Entity
	c.queues = slices.Delete(c.queues, qi, qi+1)
	for i := range c.users {
		c.users[i].queues = dropIndex(c.users[i].queues, qi)
	}
	c.queueByID = indexByID(c.queues, func(q queue) string { return q.ID })
	return c, true
}

func (o *org) withoutUser(id string) (*org, bool) {
	ui, ok := o.userByID[id]
	if !ok {
		return nil, false
	}
	c := o.clone()
	c.removed[id] = c.users[ui].Entity
	c.users = slices.Delete(c.users, ui, ui+1)
	for i := range c.queues {
		c.queues[i].members = dropIndex(c.queues[i].members, ui)
	}
	c.userByID = indexByID(c.users, func(u user) string { return u.ID })
	return c, true
}

// dropIndex removes gone from a list of indexes into a slice that lost
// element gone, shifting the later ones down. It returns idx itself when
// nothing changes, and a new slice otherwise: idx may be shared with other
// versions.
func dropIndex(idx []int, gone int) []int {
	if !slices.ContainsFunc(idx, func(i int) bool { return i >= gone }) {
		return idx
	}
	out := make([]int, 0, len(idx))
	for _, i := range idx {
		switch {
		case i < gone:
			out = append(out, i)
		case i > gone:
			out = append(out, i-1)
		}
	}
	return out
}

func indexByID[T any](list []T, id func(T) string) map[string]int {
	m := make(map[string]int, len(list))
	for i, v := range list {
		m[id(v)] = i
	}
	return m
}

// live drops the topics about a removed queue or user: Genesys generates
// nothing for a deleted entity, though a channel keeps the subscription.
// It may reuse list's array.
func (o *org) live(list []string) []string {
	if len(o.removed) == 0 {
		return list
	}
	out := list[:0]
	for _, t := range list {
		_, ids := topics.match(t)
		if !slices.ContainsFunc(ids, func(id string) bool { _, gone := o.removed[id]; return gone }) {
			out = append(out, t)
		}
	}
	return out
}

// ErrNoEntity is returned by RemoveQueue and RemoveUser for an id that is
// not a current queue or user.
var ErrNoEntity = errors.New("simulator: no such queue or user")

// changeOrg publishes the next org version. orgMu serializes changes so
// none is lost; it is taken before s.mu, never while holding it.
func (s *Server) changeOrg(next func(*org) *org) bool {
	s.orgMu.Lock()
	defer s.orgMu.Unlock()
	o := next(s.org.Load())
	if o == nil {
		return false
	}
	s.org.Store(o)
	s.mu.Lock()
	s.changedLocked()
	s.mu.Unlock()
	return true
}

// AddQueue adds a queue with no members, listed last by GET
// /api/v2/routing/queues from now on. Its id is fresh, and the same for the
// same Seed and the same sequence of additions. An empty name gets a
// generated one.
func (s *Server) AddQueue(name string) Entity {
	var e Entity
	s.changeOrg(func(o *org) *org {
		var c *org
		c, e = o.withQueue(name)
		return c
	})
	s.log.Debug("queue added", "queue", e.ID)
	return e
}

// AddUser adds a user in no queue, listed last by GET /api/v2/users from
// now on. Ids are as AddQueue's; an empty name gets a generated one.
func (s *Server) AddUser(name string) Entity {
	var e Entity
	s.changeOrg(func(o *org) *org {
		var c *org
		c, e = o.withUser(name)
		return c
	})
	s.log.Debug("user added", "user", e.ID)
	return e
}

// RemoveQueue deletes a queue: it is no longer listed and its users are no
// longer its members. Channels keep their subscriptions to its topics, as
// Genesys' do, but the EventInterval generator no longer produces events
// for them; Emit still does, naming the queue as before.
func (s *Server) RemoveQueue(id string) error {
	ok := s.changeOrg(func(o *org) *org {
		c, _ := o.withoutQueue(id)
		return c
	})
	if !ok {
		return fmt.Errorf("remove queue %s: %w", id, ErrNoEntity)
	}
	s.log.Debug("queue removed", "queue", id)
	return nil
}

// RemoveUser deletes a user, as RemoveQueue deletes a queue: no longer
// listed, a member of no queue, and its topics silent unless emitted.
func (s *Server) RemoveUser(id string) error {
	ok := s.changeOrg(func(o *org) *org {
		c, _ := o.withoutUser(id)
		return c
	})
	if !ok {
		return fmt.Errorf("remove user %s: %w", id, ErrNoEntity)
	}
	s.log.Debug("user removed", "user", id)
	return nil
}

var queueTopics = []string{"Sales", "Support", "Billing", "Claims", "Renewals", "Onboarding", "Retention", "Technical", "Priority", "Escalations"}

func queueName(i int) string {
	return fmt.Sprintf("%s %03d", queueTopics[i%len(queueTopics)], i+1)
}

var (
	firstNames = []string{"Ada", "Bram", "Chloe", "Dev", "Elif", "Femi", "Greta", "Hiro", "Ines", "Jonas", "Kaia", "Luca", "Mira", "Nils", "Omar", "Priya"}
	lastNames  = []string{"Andersen", "Baptiste", "Costa", "Duarte", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jansen", "Kowalski", "Laurent", "Moreau", "Novak"}
)

func randUUID(rnd *rand.Rand) string {
	var b [16]byte
	for i := 0; i < 16; i += 8 {
		v := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return formatUUID(b)
}

// Queues lists the org's queues, in the order GET /api/v2/routing/queues
// pages them.
func (s *Server) Queues() []Entity {
	o := s.org.Load()
	out := make([]Entity, len(o.queues))
	for i, q := range o.queues {
		out[i] = q.Entity
	}
	return out
}

// Users lists the org's users, in the order GET /api/v2/users pages them.
func (s *Server) Users() []Entity {
	o := s.org.Load()
	out := make([]Entity, len(o.users))
	for i, u := range o.users {
		out[i] = u.Entity
	}
	return out
}

// QueueMembers lists the users of a queue (none for an unknown or removed
// queue, or one added by AddQueue).
func (s *Server) QueueMembers(queueID string) []Entity {
	o := s.org.Load()
	qi, ok := o.queueByID[queueID]
	if !ok {
		return nil
	}
	var out []Entity
	for _, ui := range o.queues[qi].members {
		out = append(out, o.users[ui].Entity)
	}
	return out
}

// paging reads pageSize and pageNumber the way Genesys does. The SDK sends
// 0 for an unset int, so 0 means the default.
type paging struct {
	size, number int
}

func readPaging(q url.Values) (paging, string) {
	p := paging{size: 25, number: 1}
	if v := q.Get("pageSize"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0:
			return p, "pageSize must be a positive integer"
		case n > 500:
			return p, "pageSize must be less than or equal to 500"
		case n > 0:
			p.size = n
		}
	}
	if v := q.Get("pageNumber"); v != "" {
		n, err := strconv.Atoi(v)
		switch {
		case err != nil || n < 0:
			return p, "pageNumber must be a positive integer"
		case n > 0:
			p.number = n
		}
	}
	return p, ""
}

// multi reads a list parameter sent either repeated or comma-joined (the
// SDK joins with commas).
func multi(q url.Values, key string) []string {
	var out []string
	for _, v := range q[key] {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// nameMatches implements Genesys' name filter: exact (case-insensitive)
// unless a leading or trailing '*' makes it a suffix, prefix or contains
// match.
func nameMatches(filter, name string) bool {
	if filter == "" {
		return true
	}
	f, n := strings.ToLower(filter), strings.ToLower(name)
	lead, trail := strings.HasPrefix(f, "*"), strings.HasSuffix(f, "*")
	f = strings.Trim(f, "*")
	switch {
	case lead && trail:
		return strings.Contains(n, f)
	case trail:
		return strings.HasPrefix(n, f)
	case lead:
		return strings.HasSuffix(n, f)
	default:
		return n == f
	}
}

type listPage struct {
	from, to                int
	total, pageCount        int
	first, last, self       string
	previous, next          *string
	pageSizeOut, pageNumOut int
}

func pageOf(path string, q url.Values, p paging, total int) listPage {
	lp := listPage{total: total, pageSizeOut: p.size, pageNumOut: p.number}
	lp.pageCount = (total + p.size - 1) / p.size
	lp.from = min((p.number-1)*p.size, total)
	lp.to = min(lp.from+p.size, total)
	uri := func(n int) string {
		v := url.Values{}
		for k, vs := range q {
			if k != "pageNumber" && k != "pageSize" {
				v[k] = vs
			}
		}
		v.Set("pageSize", strconv.Itoa(p.size))
		v.Set("pageNumber", strconv.Itoa(n))
		return path + "?" + v.Encode()
	}
	lp.first = uri(1)
	lp.last = uri(max(lp.pageCount, 1))
	lp.self = uri(p.number)
	if p.number > 1 {
		prev := uri(min(p.number-1, max(lp.pageCount, 1)))
		lp.previous = &prev
	}
	if p.number < lp.pageCount {
		next := uri(p.number + 1)
		lp.next = &next
	}
	return lp
}

func (s *Server) handleQueues(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, bad := readPaging(q)
	if bad != "" {
		writeAPIError(w, http.StatusBadRequest, "bad.request", bad, nil)
		return
	}
	ids := multi(q, "id")
	name := q.Get("name")
	o := s.org.Load()
	var picked []int
	for i, qu := range o.queues {
		if len(ids) > 0 && !slices.Contains(ids, qu.ID) {
			continue
		}
		if !nameMatches(name, qu.Name) {
			continue
		}
		picked = append(picked, i)
	}
	if strings.EqualFold(q.Get("sortOrder"), "desc") {
		slices.Reverse(picked)
	}
	lp := pageOf(RouteQueues, q, p, len(picked))
	entities := make([]platformclientv2.Queue, 0, lp.to-lp.from)
	div := o.division
	for _, i := range picked[lp.from:lp.to] {
		qu := o.queues[i]
		members, joined := s.memberCounts(o, qu.ID)
		entities = append(entities, platformclientv2.Queue{
			Id:                ptr(qu.ID),
			Name:              ptr(qu.Name),
			Division:          &platformclientv2.Division{Id: ptr(div.ID), Name: ptr(div.Name), SelfUri: ptr("/api/v2/authorization/divisions/" + div.ID)},
			Description:       ptr("Simulated queue " + qu.Name),
			DateCreated:       ptr(qu.created),
			DateModified:      ptr(qu.created),
			MemberCount:       ptr(members),
			UserMemberCount:   ptr(members),
			JoinedMemberCount: ptr(joined),
			ScoringMethod:     ptr("TimestampAndPriority"),
			SelfUri:           ptr(RouteQueues + "/" + qu.ID),
		})
	}
	writeJSON(w, http.StatusOK, platformclientv2.Queueentitylisting{
		Entities:    &entities,
		PageSize:    ptr(lp.pageSizeOut),
		PageNumber:  ptr(lp.pageNumOut),
		Total:       ptr(lp.total),
		PageCount:   ptr(lp.pageCount),
		FirstUri:    ptr(lp.first),
		LastUri:     ptr(lp.last),
		SelfUri:     ptr(lp.self),
		PreviousUri: lp.previous,
		NextUri:     lp.next,
	})
}

func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p, bad := readPaging(q)
	if bad != "" {
		writeAPIError(w, http.StatusBadRequest, "bad.request", bad, nil)
		return
	}
	ids := multi(q, "id")
	state := strings.ToLower(q.Get("state"))
	o := s.org.Load()
	var picked []int
	if state == "" || state == "active" || state == "any" {
		for i, u := range o.users {
			if len(ids) > 0 && !slices.Contains(ids, u.ID) {
				continue
			}
			picked = append(picked, i)
		}
	}
	if strings.EqualFold(q.Get("sortOrder"), "desc") {
		slices.Reverse(picked)
	}
	lp := pageOf(RouteUsers, q, p, len(picked))
	entities := make([]platformclientv2.User, 0, lp.to-lp.from)
	div := o.division
	for _, i := range picked[lp.from:lp.to] {
		u := o.users[i]
		entities = append(entities, platformclientv2.User{
			Id:       ptr(u.ID),
			Name:     ptr(u.Name),
			Division: &platformclientv2.Division{Id: ptr(div.ID), Name: ptr(div.Name), SelfUri: ptr("/api/v2/authorization/divisions/" + div.ID)},
			Email:    ptr(u.email),
			Username: ptr(u.email),
			State:    ptr("active"),
			Version:  ptr(1),
			Title:    ptr("Agent"),
			SelfUri:  ptr(RouteUsers + "/" + u.ID),
		})
	}
	writeJSON(w, http.StatusOK, platformclientv2.Userentitylisting{
		Entities:    &entities,
		PageSize:    ptr(lp.pageSizeOut),
		PageNumber:  ptr(lp.pageNumOut),
		Total:       ptr(lp.total),
		PageCount:   ptr(lp.pageCount),
		FirstUri:    ptr(lp.first),
		LastUri:     ptr(lp.last),
		SelfUri:     ptr(lp.self),
		PreviousUri: lp.previous,
		NextUri:     lp.next,
	})
}

func ptr[T any](v T) *T { return &v }
