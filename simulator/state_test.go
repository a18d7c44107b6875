package simulator_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	pc "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

func presenceTopic(id string) string { return "v2.users." + id + ".presence" }
func routingTopic(id string) string  { return "v2.users." + id + ".routingStatus" }

// presenceEvent decodes the presence an event announced.
func presenceEvent(t *testing.T, ev simulator.Event) pc.Presenceeventuserpresence {
	t.Helper()
	var p pc.Presenceeventuserpresence
	if err := json.Unmarshal(ev.Body, &p); err != nil || p.PresenceDefinition == nil || p.ModifiedDate == nil {
		t.Fatalf("presence event %s: %v", ev.Body, err)
	}
	return p
}

// restSpelling is how REST spells an event's system presence.
func restSpelling(event string) string {
	return map[string]string{"AVAILABLE": "Available", "AWAY": "Away", "BUSY": "Busy", "OFFLINE": "Offline", "ON_QUEUE": "On Queue"}[event]
}

func TestStatePresenceFollowsEvents(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 60})
	users := sim.Users()
	presence := pc.NewPresenceApiWithConfig(sdk(t, sim))

	// Before any event: offline since the org was created.
	one, _, err := presence.GetUserPresencesPurecloud(users[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := *one.PresenceDefinition.SystemPresence; got != "Offline" || one.ModifiedDate == nil {
		t.Fatalf("untouched user: %s at %v, want Offline with a modifiedDate", got, one.ModifiedDate)
	}

	// Three events for each of the first 50 users: the last one is the state.
	var topics []string
	for _, u := range users[:50] {
		topics = append(topics, presenceTopic(u.ID))
	}
	last := map[string]pc.Presenceeventuserpresence{}
	for _, ev := range sim.EmitN(150, topics...) {
		last[strings.Split(ev.Topic, ".")[2]] = presenceEvent(t, ev)
	}
	ids := make([]string, 50)
	for i, u := range users[:50] {
		ids[i] = u.ID
	}
	bulk, _, err := presence.GetUsersPresencesPurecloudBulk(ids)
	if err != nil {
		t.Fatal(err)
	}
	if len(bulk) != 50 {
		t.Fatalf("bulk answered %d presences, want 50", len(bulk))
	}
	for _, p := range bulk {
		want := last[*p.UserId]
		if got := *p.PresenceDefinition.SystemPresence; got != restSpelling(*want.PresenceDefinition.SystemPresence) ||
			*p.PresenceDefinition.Id != *want.PresenceDefinition.Id || !p.ModifiedDate.Equal(*want.ModifiedDate) {
			t.Fatalf("user %s: bulk says %s (%s) at %v, the last event %s (%s) at %v", *p.UserId,
				got, *p.PresenceDefinition.Id, p.ModifiedDate, *want.PresenceDefinition.SystemPresence, *want.PresenceDefinition.Id, want.ModifiedDate)
		}
		if st := sim.UserPresence(*p.UserId); st.SystemPresence != *want.PresenceDefinition.SystemPresence {
			t.Fatalf("UserPresence(%s) = %s, want %s", *p.UserId, st.SystemPresence, *want.PresenceDefinition.SystemPresence)
		}
	}
	one, _, err = presence.GetUserPresencesPurecloud(users[7].ID)
	if err != nil {
		t.Fatal(err)
	}
	want := last[users[7].ID]
	if *one.PresenceDefinition.SystemPresence != restSpelling(*want.PresenceDefinition.SystemPresence) || !one.ModifiedDate.Equal(*want.ModifiedDate) || !*one.Primary {
		t.Fatalf("one user: %s at %v, want %s at %v", *one.PresenceDefinition.SystemPresence, one.ModifiedDate, *want.PresenceDefinition.SystemPresence, want.ModifiedDate)
	}
	// A user the org does not have is left out of a bulk answer; alone, 404.
	bulk, _, err = presence.GetUsersPresencesPurecloudBulk([]string{users[0].ID, "00000000-0000-4000-8000-000000000000"})
	if err != nil || len(bulk) != 1 {
		t.Fatalf("bulk with an unknown user: %d presences, %v; want 1", len(bulk), err)
	}
	if _, resp, _ := presence.GetUserPresencesPurecloud("00000000-0000-4000-8000-000000000000"); resp == nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("unknown user: %+v, want 404", resp)
	}
}

func TestStatePresenceBulkTakesAtMost50(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 60})
	token := sdk(t, sim).AccessToken
	ids := make([]string, 0, 51)
	for _, u := range sim.Users()[:51] {
		ids = append(ids, u.ID)
	}
	bulk := func(ids []string) (int, map[string]any) {
		st, _, m := call(t, http.MethodGet, sim.URL()+simulator.RoutePresenceBulk+"?id="+url.QueryEscape(strings.Join(ids, ",")), token, nil)
		return st, m
	}
	if st, m := bulk(ids); st != http.StatusBadRequest || m["code"] != "bad.request" {
		t.Fatalf("51 ids: %d %v, want 400 bad.request", st, m)
	}
	if st, m := bulk(ids[:50]); st != http.StatusOK {
		t.Fatalf("50 ids: %d %v, want 200", st, m)
	}
	// Repeated id= parameters count the same as comma-joined ones.
	q := url.Values{"id": ids}
	if st, _, m := call(t, http.MethodGet, sim.URL()+simulator.RoutePresenceBulk+"?"+q.Encode(), token, nil); st != http.StatusBadRequest {
		t.Fatalf("51 repeated ids: %d %v, want 400", st, m)
	}
	if st, m := bulk(nil); st != http.StatusBadRequest {
		t.Fatalf("no ids: %d %v, want 400", st, m)
	}
}

func TestStateRoutingStatusFollowsEvents(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 10})
	u := sim.Users()[3]
	users := pc.NewUsersApiWithConfig(sdk(t, sim))

	rs, _, err := users.GetUserRoutingstatus(u.ID)
	if err != nil || *rs.Status != "OFF_QUEUE" || rs.StartTime == nil {
		t.Fatalf("untouched user: %+v %v, want OFF_QUEUE with a start time", rs, err)
	}
	evs := sim.EmitN(4, routingTopic(u.ID))
	var want pc.Userroutingstatususerroutingstatus
	if err := json.Unmarshal(evs[len(evs)-1].Body, &want); err != nil {
		t.Fatal(err)
	}
	rs, _, err = users.GetUserRoutingstatus(u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if *rs.UserId != u.ID || *rs.Status != *want.RoutingStatus.Status || !rs.StartTime.Equal(*want.RoutingStatus.StartTime) {
		t.Fatalf("routing status %s since %v, the last event %s since %v", *rs.Status, rs.StartTime, *want.RoutingStatus.Status, want.RoutingStatus.StartTime)
	}
	// Genesys answers OFF_QUEUE for a user that does not exist.
	rs, _, err = users.GetUserRoutingstatus("00000000-0000-4000-8000-000000000000")
	if err != nil || *rs.Status != "OFF_QUEUE" {
		t.Fatalf("unknown user: %+v %v", rs, err)
	}
}

// members reads every page of a queue's members over raw HTTP, following
// nextUri, and checks the page size it asked for.
func members(t *testing.T, sim *simulator.Server, token, queueID, query string) []pc.Queuemember {
	t.Helper()
	next := simulator.RouteQueues + "/" + queueID + "/members?" + query
	var out []pc.Queuemember
	for pages := 0; next != ""; pages++ {
		if pages > 50 {
			t.Fatal("nextUri never ends")
		}
		req, _ := http.NewRequest(http.MethodGet, sim.URL()+next, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var page pc.Queuememberentitylisting
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("page %s: %d %v", next, resp.StatusCode, err)
		}
		out = append(out, *page.Entities...)
		next = ""
		if page.NextUri != nil {
			next = *page.NextUri
		}
	}
	return out
}

func TestStateQueueMembersPagesExpandsAndFilters(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 300})
	q := sim.Queues()[0]
	token := sdk(t, sim).AccessToken
	truth := sim.QueueMemberJoined(q.ID)
	if len(truth) <= 100 {
		t.Fatalf("queue has %d members; the test needs more than a page of 100", len(truth))
	}

	all := members(t, sim, token, q.ID, "pageSize=100&expand=routingStatus,presence")
	if len(all) != len(truth) {
		t.Fatalf("paged %d members, the queue has %d", len(all), len(truth))
	}
	for i, m := range all {
		if i > 0 && *all[i-1].Name > *m.Name {
			t.Fatalf("members not sorted by name: %s before %s", *all[i-1].Name, *m.Name)
		}
		if *m.Joined != truth[*m.Id] || m.RoutingStatus == nil || m.RoutingStatus.Status == nil ||
			m.User == nil || m.User.Presence == nil || m.User.Presence.PresenceDefinition == nil {
			t.Fatalf("member %s: joined %v (want %v), expanded %+v", *m.Id, *m.Joined, truth[*m.Id], m)
		}
	}
	if plain := members(t, sim, token, q.ID, "pageSize=100"); plain[0].RoutingStatus != nil || plain[0].User.Presence != nil {
		t.Fatalf("expanded without expand: %+v", plain[0])
	}
	if st, _, m := call(t, http.MethodGet, sim.URL()+simulator.RouteQueues+"/"+q.ID+"/members?pageSize=101", token, nil); st != http.StatusBadRequest {
		t.Fatalf("pageSize 101: %d %v, want 400", st, m)
	}
	if st, _, _ := call(t, http.MethodGet, sim.URL()+simulator.RouteQueues+"/00000000-0000-4000-8000-000000000000/members", token, nil); st != http.StatusNotFound {
		t.Fatalf("unknown queue: %d, want 404", st)
	}

	// An event flips a member's joined; another names a user who was not a
	// member, who is one from then on.
	var flip string
	for id, joined := range truth {
		if joined {
			flip = id
			break
		}
	}
	outsider := sim.Users()[len(sim.Users())-1].ID
	if _, member := truth[outsider]; member {
		t.Fatal("the last user is already a member")
	}
	topic := "v2.routing.queues." + q.ID + ".users"
	for _, id := range []string{flip, outsider} {
		joined := id == outsider
		body, _ := json.Marshal(pc.Queueusereventtopicqueuemember{Id: &id, User: &pc.Queueusereventtopicuserreference{Id: &id}, QueueId: &q.ID, Joined: &joined})
		if _, err := sim.EmitBody(topic, body); err != nil {
			t.Fatal(err)
		}
	}
	after := sim.QueueMemberJoined(q.ID)
	if after[flip] || !after[outsider] || len(after) != len(truth)+1 {
		t.Fatalf("after the events: %s joined %v, outsider joined %v, %d members", flip, after[flip], after[outsider], len(after))
	}

	// Filters: joined, and through the SDK, which always sends joined
	// (false when not asked), so one SDK call lists only one side.
	joined := members(t, sim, token, q.ID, "pageSize=100&joined=true")
	wantJoined := 0
	for _, j := range after {
		if j {
			wantJoined++
		}
	}
	if len(joined) != wantJoined {
		t.Fatalf("joined=true: %d members, want %d", len(joined), wantJoined)
	}
	// The queue listing counts the same members.
	_, _, listing := call(t, http.MethodGet, sim.URL()+simulator.RouteQueues+"?id="+q.ID, token, nil)
	entities, _ := listing["entities"].([]any)
	if len(entities) != 1 {
		t.Fatalf("queue listing: %v", listing)
	}
	counts := entities[0].(map[string]any)
	if counts["memberCount"] != float64(len(after)) || counts["joinedMemberCount"] != float64(wantJoined) {
		t.Fatalf("queue listing counts %v members, %v joined; the members listing %d and %d",
			counts["memberCount"], counts["joinedMemberCount"], len(after), wantJoined)
	}
	routing := pc.NewRoutingApiWithConfig(sdk(t, sim))
	page, _, err := routing.GetRoutingQueueMembers(q.ID, 1, 100, "", nil, "", nil, nil, nil, nil, nil, "", false)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range *page.Entities {
		if *m.Joined {
			t.Fatalf("the SDK's joined=false listed joined member %s", *m.Id)
		}
	}
	// routingStatus and presence filters follow the state.
	rsEv := sim.Emit(routingTopic(flip))[0]
	var rs pc.Userroutingstatususerroutingstatus
	_ = json.Unmarshal(rsEv.Body, &rs)
	byStatus := members(t, sim, token, q.ID, "pageSize=100&routingStatus="+*rs.RoutingStatus.Status)
	found := false
	for _, m := range byStatus {
		found = found || *m.Id == flip
	}
	if !found {
		t.Fatalf("routingStatus=%s left out %s, whose event set it", *rs.RoutingStatus.Status, flip)
	}
	if got := members(t, sim, token, q.ID, "pageSize=100&presence=On%20Queue"); len(got) != 0 {
		t.Fatalf("presence=On Queue: %d members, but no presence event was sent", len(got))
	}
	if got := members(t, sim, token, q.ID, "pageSize=100&presence=Offline"); len(got) != len(after) {
		t.Fatalf("presence=Offline: %d members, want all %d", len(got), len(after))
	}
}

func TestStateMovesOnWhileNoSocketReceives(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 5, EventInterval: 5 * time.Millisecond})
	u := sim.Users()[0]
	topic := presenceTopic(u.ID)
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	c.next()
	if err := sim.CloseSocket(*ch.Id); err != nil {
		t.Fatal(err)
	}
	// The generator goes on: events nobody received, and the state with them.
	lost := waitLost(t, sim, topic, 5)
	want := presenceEvent(t, lost)
	if got := sim.UserPresence(u.ID); !got.Modified.After(want.ModifiedDate.Add(-time.Nanosecond)) {
		t.Fatalf("state at %v, behind the undelivered event of %v", got.Modified, want.ModifiedDate)
	}

	// With no channel at all, an active topic still moves.
	other := presenceTopic(sim.Users()[1].ID)
	sim.SetActiveTopics(other)
	want = presenceEvent(t, waitLost(t, sim, other, 3))
	if got := sim.UserPresence(sim.Users()[1].ID); got.Modified.Before(*want.ModifiedDate) {
		t.Fatalf("active topic's state at %v, behind its event of %v", got.Modified, want.ModifiedDate)
	}
	sim.SetActiveTopics()
}

// waitLost waits for n undelivered events on topic and returns the last.
func waitLost(t *testing.T, sim *simulator.Server, topic string, n int) simulator.Event {
	t.Helper()
	var last simulator.Event
	seen := uint64(0)
	count := 0
	err := sim.Wait(ctxT(t), func(simulator.Snapshot) bool {
		for _, ev := range sim.EventsSince(seen) {
			seen = ev.Seq
			if ev.Topic == topic && ev.Delivered == 0 {
				last = ev
				count++
			}
		}
		return count >= n
	})
	if err != nil {
		t.Fatalf("waiting for %d undelivered events on %s: %v (saw %d)", n, topic, err, count)
	}
	return last
}

func TestStateReadsAreRateLimitedPerToken(t *testing.T) {
	const limit, window = 5, 2 * time.Second
	sim := simulator.Start(t, simulator.Options{Users: 5, RESTRateLimit: limit, RESTRateWindow: window})
	token := sdk(t, sim).AccessToken
	path := sim.URL() + "/api/v2/users/" + sim.Users()[0].ID + "/routingstatus"
	for i := range limit {
		if st, _, m := call(t, http.MethodGet, path, token, nil); st != http.StatusOK {
			t.Fatalf("call %d: %d %v", i+1, st, m)
		}
	}
	st, h, m := call(t, http.MethodGet, path, token, nil)
	answered := time.Now()
	secs, _ := strconv.Atoi(h.Get("Retry-After"))
	if st != http.StatusTooManyRequests || m["code"] != "too.many.requests" || secs < 1 || secs > 2 {
		t.Fatalf("call %d: %d Retry-After %q %v, want 429 with Retry-After 1-2s", limit+1, st, h.Get("Retry-After"), m)
	}
	// Another token has its own budget; channel calls count against it too.
	other := sdk(t, sim).AccessToken
	if st, _, _ := call(t, http.MethodPost, sim.URL()+simulator.RouteChannels, other, nil); st != http.StatusOK {
		t.Fatalf("another token: %d", st)
	}
	if st, _, _ := call(t, http.MethodPost, sim.URL()+simulator.RouteChannels, token, nil); st != http.StatusTooManyRequests {
		t.Fatalf("a channel call over the budget: %d, want 429", st)
	}
	// After Retry-After (whole seconds, rounded up) the window has room.
	time.Sleep(time.Until(answered.Add(time.Duration(secs) * time.Second)))
	if st, _, m := call(t, http.MethodGet, path, token, nil); st != http.StatusOK {
		t.Fatalf("after Retry-After: %d %v", st, m)
	}
	if n := sim.Stats().RateLimited; n != 2 {
		t.Fatalf("RateLimited = %d, want 2", n)
	}
	// An injected 429 on a state read carries Retry-After too.
	sim.AddFault(simulator.Fault{Path: simulator.RoutePresenceBulk, Status: http.StatusTooManyRequests, RetryAfter: 3 * time.Second})
	st, h, _ = call(t, http.MethodGet, sim.URL()+simulator.RoutePresenceBulk+"?id="+sim.Users()[0].ID, other, nil)
	if st != http.StatusTooManyRequests || h.Get("Retry-After") != "3" {
		t.Fatalf("injected 429: %d Retry-After %q", st, h.Get("Retry-After"))
	}
}
