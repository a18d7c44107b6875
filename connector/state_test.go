package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	pc "github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

func presenceTopics(users []simulator.Entity) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = "v2.users." + u.ID + ".presence"
	}
	return out
}

// lastBodies maps each topic to the body of its last event.
func lastBodies(events []simulator.Event) map[string][]byte {
	out := map[string][]byte{}
	for _, ev := range events {
		out[ev.Topic] = ev.Body
	}
	return out
}

func newTestReader(t *testing.T, sim *simulator.Server, limiter *RESTLimiter) *StateReader {
	t.Helper()
	return NewStateReader(sim.URL(), NewTokenSource(sim.URL(), sim.ClientID(), sim.ClientSecret(), nil), limiter, nil)
}

func TestStateReaderSnapshotsAreTheEventsBodies(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 120})
	users := sim.Users()
	queue := sim.Queues()[0].ID
	membersTopic := "v2.routing.queues." + queue + ".users"
	routing := []string{"v2.users." + users[0].ID + ".routingStatus", "v2.users." + users[1].ID + ".routingStatus"}

	events := sim.EmitN(200, presenceTopics(users[:100])...) // 20 users untouched
	events = append(events, sim.EmitN(3, routing...)...)
	events = append(events, sim.EmitN(3, membersTopic)...)
	last := lastBodies(events)

	topics := append(presenceTopics(users), routing...)
	topics = append(topics, membersTopic, "v2.routing.queues."+queue+".conversations")
	snaps, unreadable, err := newTestReader(t, sim, NewRESTLimiter(6000, 0)).Read(ctxFor(t), topics)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(unreadable, []string{"v2.routing.queues." + queue + ".conversations"}) {
		t.Fatalf("unreadable %v, want the conversations topic alone", unreadable)
	}
	members := sim.QueueMemberJoined(queue)
	if want := len(users) + len(routing) + len(members); len(snaps) != want {
		t.Fatalf("%d snapshots, want %d", len(snaps), want)
	}
	var memberEvent pc.Queueusereventtopicqueuemember
	_ = json.Unmarshal(last[membersTopic], &memberEvent)
	sawMemberEvent := false
	for _, s := range snaps {
		if s.Topic == membersTopic {
			var m pc.Queueusereventtopicqueuemember
			if err := json.Unmarshal(s.Body, &m); err != nil || *m.QueueId != queue {
				t.Fatalf("member snapshot %s: %v", s.Body, err)
			}
			if *m.Joined != members[*m.Id] {
				t.Fatalf("member %s: snapshot joined %v, the simulator %v", *m.Id, *m.Joined, members[*m.Id])
			}
			if *m.Id == *memberEvent.Id {
				sawMemberEvent = true
				if !bytes.Equal(s.Body, last[membersTopic]) {
					t.Fatalf("member snapshot\n%s\nlast event\n%s", s.Body, last[membersTopic])
				}
			}
			continue
		}
		if want, ok := last[s.Topic]; ok {
			// The same state, marshalled by the same SDK model: the same bytes.
			if !bytes.Equal(s.Body, want) {
				t.Fatalf("%s: snapshot\n%s\nlast event\n%s", s.Topic, s.Body, want)
			}
			continue
		}
		var p pc.Presenceeventuserpresence
		if err := json.Unmarshal(s.Body, &p); err != nil || *p.PresenceDefinition.SystemPresence != "OFFLINE" || s.Since.IsZero() {
			t.Fatalf("untouched user's snapshot %s (since %v): %v", s.Body, s.Since, err)
		}
	}
	if !sawMemberEvent {
		t.Fatalf("no snapshot for member %s, whose event was sent", *memberEvent.Id)
	}
	st := sim.Stats()
	if got := st.Calls(http.MethodGet, simulator.RoutePresenceBulk); got != 3 {
		t.Fatalf("%d bulk presence calls for 120 users, want 3", got)
	}
	// The SDK sends joined on every members call: one listing each side.
	if got := st.Calls(http.MethodGet, simulator.RouteQueueMembers); got != 2 {
		t.Fatalf("%d queue member calls, want 2", got)
	}
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestStateReaderRepairs5000PresencesThrough429s(t *testing.T) {
	const (
		users      = 5000
		perMinute  = 1200 // 20 a second: the limiter, not the calls, sets the pace
		burst      = 5
		injected   = 3
		retryAfter = time.Second
	)
	sim := simulator.Start(t, simulator.Options{Users: users, RESTRateLimit: 300})
	list := sim.Users()
	topics := presenceTopics(list)
	last := lastBodies(sim.EmitN(users, topics...))
	sim.AddFault(simulator.Fault{Method: http.MethodGet, Path: simulator.RoutePresenceBulk, Status: http.StatusTooManyRequests, RetryAfter: retryAfter, Times: injected})
	limiter := NewRESTLimiter(perMinute, burst)
	reader := newTestReader(t, sim, limiter)

	start := time.Now()
	snaps, _, err := reader.Read(ctxFor(t), topics)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != users {
		t.Fatalf("%d snapshots, want %d", len(snaps), users)
	}
	for _, s := range snaps {
		if !bytes.Equal(s.Body, last[s.Topic]) {
			t.Fatalf("%s: snapshot %s, the simulator's truth %s", s.Topic, s.Body, last[s.Topic])
		}
	}
	st := sim.Stats()
	ok := st.Requests[simulator.RequestKey{Method: http.MethodGet, Route: simulator.RoutePresenceBulk, Status: http.StatusOK}]
	limited := st.Requests[simulator.RequestKey{Method: http.MethodGet, Route: simulator.RoutePresenceBulk, Status: http.StatusTooManyRequests}]
	if ok != users/50 || limited != injected {
		t.Fatalf("%d bulk calls answered 200 and %d 429, want %d and %d", ok, limited, users/50, injected)
	}
	// Each 429 pauses the limiter for its Retry-After and empties it; the
	// 100 calls after the last pause come at the limiter's rate.
	floor := injected*retryAfter + time.Duration(float64(users/50-burst)/(perMinute/60.0)*float64(time.Second))
	if elapsed < floor || elapsed > floor+5*time.Second {
		t.Fatalf("repair took %s; the limiter's rate and Retry-After make it at least %s", elapsed, floor)
	}
	ls := limiter.Stats()
	if ls.Paused != injected || ls.RepairCalls != users/50+injected ||
		ls.Results[RESTResult{Priority: "repair", Result: "ok"}] != users/50 ||
		ls.Results[RESTResult{Priority: "repair", Result: "429"}] != injected {
		t.Fatalf("limiter %+v", ls)
	}
	t.Logf("%d presences in %d bulk calls and %d 429s: %s (floor %s), repair calls waited %s in all",
		users, ok, limited, elapsed.Round(time.Millisecond), floor, ls.RepairWait.Round(time.Millisecond))
}

func TestStateReaderWaitsWhileAChannelCallGoesFirst(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 5000})
	limiter := NewRESTLimiter(600, 1) // a token every 100ms
	reader, channels := sharingLimiter(sim, limiter)

	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	repaired := make(chan error, 1)
	go func() {
		_, err := reader.Presences(ctx, userIDs(sim.Users()))
		repaired <- err
	}()
	// Wait until the repair is under way and the next of its calls queued.
	waitRepairCalls(t, limiter, 5)
	waitQueued(t, limiter, 0, 1)

	before := limiter.Stats().RepairCalls
	start := time.Now()
	if _, err := channels.createChannel(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	created := time.Since(start)
	ch, err := channels.createChannel(ctx, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := channels.channelExists(ctx, ch.ID); err != nil {
		t.Fatal(err)
	}
	all := time.Since(start)
	st := limiter.Stats()
	// Borrowing, the first goes at once; the next two take the next
	// tokens, ahead of the waiting repair.
	if st.MaxChannelWait > 250*time.Millisecond || created > 100*time.Millisecond {
		t.Fatalf("channel calls waited up to %s (first call %s) behind a repair", st.MaxChannelWait, created)
	}
	if n := st.Results[RESTResult{Priority: "channel", Result: "ok"}]; n != 3 {
		t.Fatalf("%d channel calls counted ok, want 3", n)
	}
	if served := st.RepairCalls - before; served > 1 {
		t.Fatalf("%d repair calls went while three channel calls waited", served)
	}
	waitRepairCalls(t, limiter, st.RepairCalls+2) // the repair goes on
	cancel()
	if err := <-repaired; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled repair: %v", err)
	}
	t.Logf("3 channel calls during a repair: the first in %s, all in %s, longest limiter wait %s",
		created.Round(time.Microsecond), all.Round(time.Millisecond), st.MaxChannelWait.Round(time.Millisecond))
}

func userIDs(users []simulator.Entity) []string {
	out := make([]string, len(users))
	for i, u := range users {
		out[i] = u.ID
	}
	return out
}

// waitRepairCalls waits until the limiter has let n repair calls through.
func waitRepairCalls(t *testing.T, l *RESTLimiter, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for l.Stats().RepairCalls < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d repair calls, want %d", l.Stats().RepairCalls, n)
		}
		l.mu.Lock()
		wake := l.wake
		l.mu.Unlock()
		select {
		case <-wake:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// A repair that reads faster than Genesys allows a token meets 429s, and
// so does every channel call made meanwhile: without the limiter a channel
// call waits out a Retry-After. With it, the repair stays under the
// budget and the channel call goes at once.
func TestStateReaderRepairNeverCostsAChannelCallA429(t *testing.T) {
	const budget, window = 50, 2 * time.Second // Genesys' 300 a minute, scaled down
	sim := simulator.Start(t, simulator.Options{Users: 400, RESTRateLimit: budget, RESTRateWindow: window})
	limiter := NewRESTLimiter(600, 10) // 20 a window, and bursts of 10 plus 10 borrowed
	reader, channels := sharingLimiter(sim, limiter)

	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	repaired := make(chan error, 1)
	go func() {
		_, err := reader.RoutingStatuses(ctx, userIDs(sim.Users()))
		repaired <- err
	}()
	// The channel call comes a second into the repair, once it has read
	// at least 15 users: by then a repair at full speed has spent the
	// window's budget.
	began := time.Now()
	for deadline := began.Add(10 * time.Second); sim.Stats().Calls(http.MethodGet, simulator.RouteUserRoutingState) < 15; {
		if time.Now().After(deadline) {
			t.Fatal("the repair does not get going")
		}
		time.Sleep(5 * time.Millisecond) // REST answers wake no Wait
	}
	time.Sleep(time.Until(began.Add(time.Second)))
	start := time.Now()
	if _, err := channels.createChannel(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	waited := time.Since(start)
	cancel()
	<-repaired
	limited := sim.Stats().RateLimited
	t.Logf("channel call during a repair: %s; %d calls answered 429", waited.Round(time.Millisecond), limited)
	if limited != 0 || waited > 200*time.Millisecond {
		t.Fatalf("the channel call took %s, and Genesys answered %d calls 429", waited, limited)
	}
}

// sharingLimiter is a state reader and a channel-calling API on one token
// and one limiter, as the connector holds them.
func sharingLimiter(sim *simulator.Server, limiter *RESTLimiter) (*StateReader, *api) {
	tokens := NewTokenSource(sim.URL(), sim.ClientID(), sim.ClientSecret(), nil)
	channels := newAPI(sim.URL(), tokens, slog.New(slog.DiscardHandler))
	channels.http.limiter = limiter
	return NewStateReader(sim.URL(), tokens, limiter, nil), channels
}
