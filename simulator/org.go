package simulator

import (
	"fmt"
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
	members []int // indexes into org.users
}

type user struct {
	Entity
	email  string
	queues []int // indexes into org.queues
}

// org is the generated, immutable directory: queues and users with stable
// ids, each user a member of one or two queues.
type org struct {
	seed      uint64
	created   time.Time
	division  Entity
	queues    []queue
	users     []user
	queueByID map[string]int
	userByID  map[string]int
}

func newOrg(seed uint64, nQueues, nUsers int) *org {
	rnd := rand.New(rand.NewPCG(seed, 0x6763_6e61_7473)) // "gcnats"
	o := &org{
		seed:      seed,
		created:   time.Date(2024, 1, 15, 9, 0, 0, 0, time.UTC),
		division:  Entity{ID: randUUID(rnd), Name: "Home"},
		queueByID: map[string]int{},
		userByID:  map[string]int{},
	}
	for i := range nQueues {
		q := queue{Entity: Entity{ID: randUUID(rnd), Name: queueName(i)}}
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
	out := make([]Entity, len(s.org.queues))
	for i, q := range s.org.queues {
		out[i] = q.Entity
	}
	return out
}

// Users lists the org's users, in the order GET /api/v2/users pages them.
func (s *Server) Users() []Entity {
	out := make([]Entity, len(s.org.users))
	for i, u := range s.org.users {
		out[i] = u.Entity
	}
	return out
}

// QueueMembers lists the users of a queue.
func (s *Server) QueueMembers(queueID string) []Entity {
	qi, ok := s.org.queueByID[queueID]
	if !ok {
		return nil
	}
	var out []Entity
	for _, ui := range s.org.queues[qi].members {
		out = append(out, s.org.users[ui].Entity)
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
	var picked []int
	for i, qu := range s.org.queues {
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
	div := s.org.division
	for _, i := range picked[lp.from:lp.to] {
		qu := s.org.queues[i]
		members := len(qu.members)
		joined := (members + 1) / 2
		entities = append(entities, platformclientv2.Queue{
			Id:                ptr(qu.ID),
			Name:              ptr(qu.Name),
			Division:          &platformclientv2.Division{Id: ptr(div.ID), Name: ptr(div.Name), SelfUri: ptr("/api/v2/authorization/divisions/" + div.ID)},
			Description:       ptr("Simulated queue " + qu.Name),
			DateCreated:       ptr(s.org.created.Add(time.Duration(i) * time.Hour)),
			DateModified:      ptr(s.org.created.Add(time.Duration(i) * time.Hour)),
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
	var picked []int
	if state == "" || state == "active" || state == "any" {
		for i, u := range s.org.users {
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
	div := s.org.division
	for _, i := range picked[lp.from:lp.to] {
		u := s.org.users[i]
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
