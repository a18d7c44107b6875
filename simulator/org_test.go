package simulator_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

// listQueues pages GET /api/v2/routing/queues through the SDK, checking on
// every page that total and pageCount describe the whole listing.
func listQueues(t *testing.T, api *platformclientv2.RoutingApi, size int) []string {
	t.Helper()
	var ids []string
	for page := 1; ; page++ {
		l, _, err := api.GetRoutingQueues(page, size, "", "", nil, nil, nil, "", false, nil)
		if err != nil {
			t.Fatalf("queues page %d: %v", page, err)
		}
		for _, q := range *l.Entities {
			ids = append(ids, *q.Id)
		}
		if l.NextUri == nil {
			if *l.Total != len(ids) || *l.PageCount != page || *l.PageCount != (*l.Total+size-1)/size {
				t.Fatalf("queues: paged %d in %d pages, listing says total %d pageCount %d", len(ids), page, *l.Total, *l.PageCount)
			}
			return ids
		}
	}
}

// listUsers pages GET /api/v2/users as listQueues pages queues.
func listUsers(t *testing.T, api *platformclientv2.UsersApi, size int) []string {
	t.Helper()
	var ids []string
	for page := 1; ; page++ {
		l, _, err := api.GetUsers(size, page, nil, nil, "", nil, "", "")
		if err != nil {
			t.Fatalf("users page %d: %v", page, err)
		}
		for _, u := range *l.Entities {
			ids = append(ids, *u.Id)
		}
		if l.NextUri == nil {
			if *l.Total != len(ids) || *l.PageCount != page || *l.PageCount != (*l.Total+size-1)/size {
				t.Fatalf("users: paged %d in %d pages, listing says total %d pageCount %d", len(ids), page, *l.Total, *l.PageCount)
			}
			return ids
		}
	}
}

func ids(es []simulator.Entity) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// membership maps every queue to its members' ids.
func membership(sim *simulator.Server) map[string][]string {
	m := map[string][]string{}
	for _, q := range sim.Queues() {
		m[q.ID] = ids(sim.QueueMembers(q.ID))
	}
	return m
}

func TestAddAndRemoveEntities(t *testing.T) {
	opts := simulator.Options{Queues: 25, Users: 50, Seed: 11}
	sim := simulator.Start(t, opts)
	cfg := sdk(t, sim)
	routing := platformclientv2.NewRoutingApiWithConfig(cfg)
	users := platformclientv2.NewUsersApiWithConfig(cfg)
	before := membership(sim)

	q := sim.AddQueue("Added Sales")
	if q.Name != "Added Sales" || !simulator.ValidTopic("v2.routing.queues."+q.ID+".conversations") || slices.Contains(ids(sim.Users()), q.ID) {
		t.Fatalf("added queue %+v", q)
	}
	got := listQueues(t, routing, 25)
	if len(got) != 26 || got[25] != q.ID || !slices.Equal(got, ids(sim.Queues())) {
		t.Fatalf("queues after add: %d listed, last %s; want 26 ending with %s", len(got), got[len(got)-1], q.ID)
	}
	l, _, err := routing.GetRoutingQueues(1, 25, "", "added sales", nil, nil, nil, "", false, nil)
	if err != nil || *l.Total != 1 || *(*l.Entities)[0].Id != q.ID || (*l.Entities)[0].DateCreated == nil || *(*l.Entities)[0].MemberCount != 0 {
		t.Fatalf("name filter for the added queue: %v %v", err, l)
	}
	if m := sim.QueueMembers(q.ID); len(m) != 0 {
		t.Errorf("added queue has members %v", m)
	}

	u := sim.AddUser("Zoe Added")
	gotU := listUsers(t, users, 25)
	if len(gotU) != 51 || gotU[50] != u.ID || !slices.Equal(gotU, ids(sim.Users())) {
		t.Fatalf("users after add: %d listed, want 51 ending with %s", len(gotU), u.ID)
	}
	for qid, members := range membership(sim) {
		if slices.Contains(members, u.ID) {
			t.Errorf("added user is a member of %s", qid)
		}
	}

	// Remove a generated queue with members and the added one: the rest
	// keep their members (the org reindexes users' queues).
	q3 := sim.Queues()[3]
	if len(sim.QueueMembers(q3.ID)) == 0 {
		t.Fatal("queue 3 has no members to lose")
	}
	if err := sim.RemoveQueue(q3.ID); err != nil {
		t.Fatal(err)
	}
	if err := sim.RemoveQueue(q.ID); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{q.ID, u.ID + "x", "not-an-id"} {
		if err := sim.RemoveQueue(id); !errors.Is(err, simulator.ErrNoEntity) {
			t.Errorf("RemoveQueue(%s) = %v, want ErrNoEntity", id, err)
		}
	}
	if err := sim.RemoveQueue(u.ID); !errors.Is(err, simulator.ErrNoEntity) {
		t.Errorf("RemoveQueue of a user id = %v, want ErrNoEntity", err)
	}
	got = listQueues(t, routing, 25)
	if len(got) != 24 || slices.Contains(got, q3.ID) || slices.Contains(got, q.ID) || !slices.Equal(got, ids(sim.Queues())) {
		t.Fatalf("queues after remove: %v", got)
	}
	l, _, err = routing.GetRoutingQueues(0, 0, "", "", []string{q3.ID}, nil, nil, "", false, nil)
	if err != nil || *l.Total != 0 || *l.PageCount != 0 {
		t.Fatalf("id filter for a removed queue: %v %v", err, l)
	}
	if m := sim.QueueMembers(q3.ID); m != nil {
		t.Errorf("removed queue lists members %v", m)
	}
	after := membership(sim)
	delete(before, q3.ID)
	if len(after) != len(before) {
		t.Fatalf("%d queues with membership, want %d", len(after), len(before))
	}
	for qid, want := range before {
		if !slices.Equal(after[qid], want) {
			t.Fatalf("queue %s members changed by removing another queue: %v, want %v", qid, after[qid], want)
		}
	}

	// Remove a user who is a member: gone from the listing and from every
	// queue, and nobody else moves.
	victim := sim.QueueMembers(sim.Queues()[0].ID)[0]
	if err := sim.RemoveUser(victim.ID); err != nil {
		t.Fatal(err)
	}
	if err := sim.RemoveUser(victim.ID); !errors.Is(err, simulator.ErrNoEntity) {
		t.Errorf("second RemoveUser = %v, want ErrNoEntity", err)
	}
	gotU = listUsers(t, users, 25)
	if len(gotU) != 50 || slices.Contains(gotU, victim.ID) || !slices.Equal(gotU, ids(sim.Users())) {
		t.Fatalf("users after remove: %d listed", len(gotU))
	}
	for qid, members := range membership(sim) {
		want := slices.DeleteFunc(slices.Clone(after[qid]), func(id string) bool { return id == victim.ID })
		if !slices.Equal(members, want) {
			t.Fatalf("queue %s members after removing a user: %v, want %v", qid, members, want)
		}
	}
	if err := sim.RemoveUser(u.ID); err != nil {
		t.Fatal(err)
	}
	if gotU = listUsers(t, users, 500); len(gotU) != 49 {
		t.Fatalf("users after removing two: %d", len(gotU))
	}

	// Added ids depend on the seed and the count of additions only.
	again := simulator.Start(t, opts)
	if a, b := again.AddQueue("other name"), again.AddUser(""); a.ID != q.ID || b.ID != u.ID || b.Name == "" {
		t.Errorf("same seed, same additions: ids %s %s, want %s %s", a.ID, b.ID, q.ID, u.ID)
	}
}

// TestOrgChangesWakeWait checks each change wakes a Wait that is already
// blocked: nothing else changes in an idle simulator, so without the wake
// the Wait would run into its deadline.
func TestOrgChangesWakeWait(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	var q, u simulator.Entity
	steps := []struct {
		name   string
		change func()
		done   func() bool
	}{
		{"AddQueue", func() { q = sim.AddQueue("") }, func() bool { return len(sim.Queues()) == 3 }},
		{"AddUser", func() { u = sim.AddUser("") }, func() bool { return len(sim.Users()) == 3 }},
		{"RemoveQueue", func() { _ = sim.RemoveQueue(q.ID) }, func() bool { return len(sim.Queues()) == 2 }},
		{"RemoveUser", func() { _ = sim.RemoveUser(u.ID) }, func() bool { return len(sim.Users()) == 2 }},
	}
	for _, st := range steps {
		blocked := make(chan struct{})
		var once sync.Once
		errc := make(chan error, 1)
		go func() {
			errc <- sim.Wait(ctxT(t), func(simulator.Snapshot) bool {
				if st.done() {
					return true
				}
				once.Do(func() { close(blocked) })
				return false
			})
		}()
		<-blocked
		st.change()
		if err := <-errc; err != nil {
			t.Fatalf("%s did not wake Wait: %v", st.name, err)
		}
	}
}

func TestAddedEntityEvents(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 3, Users: 4, Seed: 5})
	q := sim.AddQueue("Fresh Queue")
	u := sim.AddUser("Fresh User")
	qConv := "v2.routing.queues." + q.ID + ".conversations"
	qCalls := qConv + ".calls"
	qUsers := "v2.routing.queues." + q.ID + ".users"
	uPresence := "v2.users." + u.ID + ".presence"
	uRouting := "v2.users." + u.ID + ".routingStatus"
	uConv := "v2.users." + u.ID + ".conversations"
	list := []string{qConv, qCalls, qUsers, uPresence, uRouting, uConv}

	ch := createChannel(t, sdk(t, sim), list...)
	c := dialConnected(t, sim, ch)
	current := ids(sim.Users())
	// Eight of each, so the conversations go through every phase and
	// agent count (agents of a memberless queue are any users).
	for _, ev := range sim.EmitN(8*len(list), list...) {
		if ev.Delivered != 1 {
			t.Fatalf("%s delivered to %d sockets", ev.Topic, ev.Delivered)
		}
		if f := c.next(); string(f.raw) != string(ev.Frame) {
			t.Fatalf("socket read %s, want %s", f.raw, ev.Frame)
		}
		switch ev.Topic {
		case qConv:
			conv := roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, ev.Body)
			var acd bool
			for _, p := range *conv.Participants {
				acd = acd || (*p.Purpose == "acd" && *p.QueueId == q.ID && *p.Name == q.Name)
				if *p.Purpose == "agent" && !slices.Contains(current, *p.UserId) {
					t.Fatalf("agent %s is not an org user", *p.UserId)
				}
			}
			if !acd {
				t.Fatalf("no acd participant for the added queue: %s", ev.Body)
			}
		case qCalls:
			conv := roundTrip[platformclientv2.Queueconversationcalleventtopiccallconversation](t, ev.Body)
			if p := (*conv.Participants)[1]; *p.Purpose != "acd" || *p.Queue.Id != q.ID || *p.Queue.Name != q.Name {
				t.Fatalf("acd participant %s", ev.Body)
			}
		case qUsers:
			m := roundTrip[platformclientv2.Queueusereventtopicqueuemember](t, ev.Body)
			if *m.QueueId != q.ID || !slices.Contains(current, *m.User.Id) {
				t.Fatalf("queue member %s", ev.Body)
			}
		case uPresence:
			roundTrip[platformclientv2.Presenceeventuserpresence](t, ev.Body)
		case uRouting:
			if r := roundTrip[platformclientv2.Userroutingstatususerroutingstatus](t, ev.Body); *r.Id != u.ID {
				t.Fatalf("routing status of %s, want %s", *r.Id, u.ID)
			}
		case uConv:
			conv := roundTrip[platformclientv2.Conversationeventtopicconversation](t, ev.Body)
			var mine bool
			for _, p := range *conv.Participants {
				mine = mine || (p.UserId != nil && *p.UserId == u.ID && *p.Name == u.Name)
			}
			if !mine {
				t.Fatalf("the added user's conversation lacks the user: %s", ev.Body)
			}
		}
	}

	// Removed, the queue's topics stay subscribed and an explicit Emit
	// still delivers an event that names the queue as before.
	if err := sim.RemoveQueue(q.ID); err != nil {
		t.Fatal(err)
	}
	if err := sim.RemoveUser(u.ID); err != nil {
		t.Fatal(err)
	}
	info, _ := sim.Snapshot().Channel(*ch.Id)
	if !slices.Contains(info.Topics, qConv) || !slices.Contains(info.Topics, uRouting) {
		t.Fatalf("removal dropped subscriptions: %v", info.Topics)
	}
	for _, ev := range sim.Emit(qCalls, uRouting) {
		if ev.Delivered != 1 {
			t.Fatalf("%s after removal delivered to %d sockets", ev.Topic, ev.Delivered)
		}
		if f := c.next(); string(f.raw) != string(ev.Frame) {
			t.Fatalf("socket read %s, want %s", f.raw, ev.Frame)
		}
	}
	evs := sim.EventsSince(sim.Snapshot().LastSeq - 2)
	conv := roundTrip[platformclientv2.Queueconversationcalleventtopiccallconversation](t, evs[0].Body)
	if p := (*conv.Participants)[1]; *p.Queue.Id != q.ID || *p.Queue.Name != q.Name {
		t.Errorf("removed queue's event names %s %q", *p.Queue.Id, *p.Queue.Name)
	}
	if r := roundTrip[platformclientv2.Userroutingstatususerroutingstatus](t, evs[1].Body); *r.Id != u.ID {
		t.Errorf("removed user's routing status for %s", *r.Id)
	}
}

// TestEmptyOrgEvents builds events for an added queue in an org with no
// other queue and no user at all: every member list is empty.
func TestEmptyOrgEvents(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: -1, Users: -1})
	q := sim.AddQueue("")
	if q.Name == "" || len(sim.Queues()) != 1 || len(sim.Users()) != 0 {
		t.Fatalf("org: %v %v", sim.Queues(), sim.Users())
	}
	base := "v2.routing.queues." + q.ID
	for _, ev := range sim.EmitN(24, base+".conversations", base+".conversations.calls", base+".users") {
		switch ev.Topic {
		case base + ".conversations":
			roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, ev.Body)
		case base + ".conversations.calls":
			roundTrip[platformclientv2.Queueconversationcalleventtopiccallconversation](t, ev.Body)
		default:
			if m := roundTrip[platformclientv2.Queueusereventtopicqueuemember](t, ev.Body); *m.QueueId != q.ID {
				t.Fatalf("queue member %s", ev.Body)
			}
		}
	}
	u := sim.AddUser("Only User")
	if err := sim.RemoveQueue(q.ID); err != nil {
		t.Fatal(err)
	}
	for _, ev := range sim.EmitN(8, "v2.users."+u.ID+".conversations", base+".conversations") {
		if ev.Topic == base+".conversations" {
			roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, ev.Body)
		} else {
			roundTrip[platformclientv2.Conversationeventtopicconversation](t, ev.Body)
		}
	}
}

// TestRemovedEntityTopicsFallSilent checks that the EventInterval generator
// stops producing events for a removed queue's topic while the channel
// keeps the subscription and other topics keep flowing.
func TestRemovedEntityTopicsFallSilent(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 3, EventInterval: 5 * time.Millisecond})
	q := sim.AddQueue("Doomed")
	keep := queueTopic(sim, 0, "users")
	doomed := "v2.routing.queues." + q.ID + ".users"
	ch := createChannel(t, sdk(t, sim), keep, doomed)

	count := func(evs []simulator.Event, topic string) int {
		n := 0
		for _, ev := range evs {
			if ev.Topic == topic {
				n++
			}
		}
		return n
	}
	waitFor(t, sim, func(simulator.Snapshot) bool { return count(sim.Events(), doomed) >= 2 })
	if err := sim.RemoveQueue(q.ID); err != nil {
		t.Fatal(err)
	}
	cut := sim.Snapshot().LastSeq

	// Rounds run one at a time, so at most one round read the org before
	// the removal and emits after cut; every event after the second keep
	// event past cut comes from a round that knows the queue is gone.
	var after []simulator.Event
	waitFor(t, sim, func(simulator.Snapshot) bool {
		after = sim.EventsSince(cut)
		return count(after, keep) >= 3
	})
	if n := count(after, doomed); n > 1 {
		t.Fatalf("%d events for the removed queue after its removal, want at most the one in flight", n)
	}
	seen := 0
	for _, ev := range after {
		switch {
		case ev.Topic == keep:
			seen++
		case ev.Topic == doomed && seen >= 2:
			t.Fatalf("event %d for the removed queue after two later rounds", ev.Seq)
		}
	}
	info, ok := sim.Snapshot().Channel(*ch.Id)
	if !ok || !slices.Contains(info.Topics, doomed) {
		t.Fatalf("channel lost the removed queue's subscription: %+v", info)
	}
	ev := sim.Emit(doomed)[0]
	if m := roundTrip[platformclientv2.Queueusereventtopicqueuemember](t, ev.Body); *m.QueueId != q.ID {
		t.Fatalf("explicit event for the removed queue: %s", ev.Body)
	}
}

// TestOrgChangesConcurrent changes the org while REST listings and event
// builders read it; run with -race.
func TestOrgChangesConcurrent(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 6, Users: 12, Seed: 2})
	cfg := sdk(t, sim)
	q0, u0 := sim.Queues()[0], sim.Users()[0]
	ctx, cancel := context.WithCancel(ctxT(t))
	defer cancel()

	var wg sync.WaitGroup
	wg.Go(func() {
		defer cancel()
		for i := range 30 {
			q, u := sim.AddQueue(""), sim.AddUser("")
			sim.Emit("v2.routing.queues."+q.ID+".conversations", "v2.users."+u.ID+".conversations")
			if err := sim.RemoveQueue(q.ID); err != nil {
				t.Error(err)
			}
			if err := sim.RemoveUser(u.ID); err != nil {
				t.Error(err)
			}
			// Generated entities go too, reindexing the members of q0
			// while its conversations are being built.
			if i < 5 {
				_ = sim.RemoveQueue(sim.Queues()[1].ID)
				_ = sim.RemoveUser(sim.Users()[1].ID)
			}
		}
	})
	wg.Go(func() {
		routing := platformclientv2.NewRoutingApiWithConfig(cfg)
		users := platformclientv2.NewUsersApiWithConfig(cfg)
		for ctx.Err() == nil {
			if _, _, err := routing.GetRoutingQueues(1, 3, "", "", nil, nil, nil, "", false, nil); err != nil {
				t.Error(err)
				return
			}
			if _, _, err := users.GetUsers(5, 2, nil, nil, "", nil, "", ""); err != nil {
				t.Error(err)
				return
			}
		}
	})
	wg.Go(func() {
		for ctx.Err() == nil {
			for _, ev := range sim.EmitN(64, "v2.routing.queues."+q0.ID+".conversations",
				"v2.routing.queues."+q0.ID+".users", "v2.users."+u0.ID+".conversations.calls") {
				if len(ev.Body) < 100 {
					t.Errorf("short body %s", ev.Body)
					return
				}
			}
		}
	})
	wg.Wait()
	if q, u := len(sim.Queues()), len(sim.Users()); q != 1 || u != 7 {
		t.Errorf("%d queues and %d users left, want 1 and 7", q, u)
	}
	for _, m := range sim.QueueMembers(q0.ID) {
		if !slices.Contains(ids(sim.Users()), m.ID) {
			t.Errorf("member %s of %s is not a user", m.ID, q0.ID)
		}
	}
}
