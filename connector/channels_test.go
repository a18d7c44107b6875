package connector

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// recorder is a Handler that remembers the correlation ids it saw and
// wakes waiters on each.
type recorder struct {
	mu      sync.Mutex
	seen    map[string]int
	changed chan struct{}
}

func newRecorder() *recorder {
	return &recorder{seen: map[string]int{}, changed: make(chan struct{})}
}

func (r *recorder) HandleEvent(_ context.Context, f *Frame, _ time.Time) error {
	r.mu.Lock()
	r.seen[string(f.CorrelationID)]++
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
	return nil
}

// waitAll waits until every event in evs was handled at least once.
func (r *recorder) waitAll(ctx context.Context, evs []simulator.Event) error {
	for {
		r.mu.Lock()
		missing := 0
		for _, ev := range evs {
			if r.seen[ev.CorrelationID] == 0 {
				missing++
			}
		}
		changed := r.changed
		r.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return errors.New("events never handled")
		}
	}
}

// runWith runs a connector with a handler against sim.
func runWith(t *testing.T, sim *simulator.Server, topics []string, h Handler, opts ...func(*Options)) (*Connector, chan error) {
	t.Helper()
	o := Options{
		APIURL:           sim.URL(),
		ClientID:         sim.ClientID(),
		ClientSecret:     sim.ClientSecret(),
		Topics:           topics,
		HeartbeatTimeout: 2 * time.Second,
	}
	for _, f := range opts {
		f(&o)
	}
	c, err := New(o, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return c, done
}

func fixedTopics(sim *simulator.Server, n int) []string {
	var out []string
	for _, q := range sim.Queues()[:n] {
		out = append(out, "v2.routing.queues."+q.ID+".conversations")
	}
	return out
}

func waitSim(t *testing.T, sim *simulator.Server, d time.Duration, what string, cond func(simulator.Snapshot) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	if err := sim.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestPlanKeepsASpareForRollovers: a plan that fills the whole budget has
// no room for a rollover's second channel, so it is refused at start.
func TestPlanKeepsASpareForRollovers(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 4, Users: 1})
	c, done := runWith(t, sim, fixedTopics(sim, 4), nil, func(o *Options) { o.MaxChannels, o.TopicsPerChannel = 2, 2 })
	err := waitReadyOrFail(t, c, done)
	var pe *PlanError
	if !errors.As(err, &pe) || pe.Needed != 2 || pe.Budget != 2 {
		t.Fatalf("got %v, want a plan error: 2 channels do not fit a budget of 2 with a spare", err)
	}
	for _, want := range []string{"4 topics", "2 channels", "budget of 2", "GCNATS_MAX_CHANNELS", "rollover"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// TestRotationsStayWithinBudget: channels that reach their end together
// (they die with the token that made them) rotate one after the other, so
// the connector never holds more than its budget at once.
func TestRotationsStayWithinBudget(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 6, Users: 1, TokenLifetime: 4 * time.Second})
	c, done := runWith(t, sim, fixedTopics(sim, 6), nil, func(o *Options) {
		o.MaxChannels, o.TopicsPerChannel, o.HandoverGrace = 4, 2, 100*time.Millisecond
	})
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 30*time.Second, "every channel rotated", func(simulator.Snapshot) bool { return sim.Stats().ChannelsCreated >= 6 })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	t.Logf("channels created %d, peak in use at once %d of a budget of 4", sim.Stats().ChannelsCreated, sim.Stats().PeakChannelsInUse)
	if peak := sim.Stats().PeakChannelsInUse; peak > 4 {
		t.Fatalf("%d channels in use at once, over the budget of 4", peak)
	}
}

// TestClientChannelsCounted: channels of the client's other tokens count
// against Genesys' 20; a budget that would pass 20 with them is reported.
func TestClientChannelsCounted(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1})
	other := newAPI(sim.URL(), NewTokenSource(sim.URL(), sim.ClientID(), sim.ClientSecret(), nil), nil)
	for range 12 {
		if _, err := other.createChannel(context.Background(), time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	c, done := runWith(t, sim, fixedTopics(sim, 1), nil)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	st := c.Status()
	if st.OtherChannels != 12 || !st.BudgetAtRisk {
		t.Fatalf("others %d, at risk %v; want 12 others and a budget of 10 at risk", st.OtherChannels, st.BudgetAtRisk)
	}
}

// TestFailedRotationReusesItsChannel: dials are refused from before a
// rotation until after the old channel expired. The rotation makes one
// channel and keeps dialling it, backing off, and events flow again soon
// after dials return.
func TestFailedRotationReusesItsChannel(t *testing.T) {
	// The rotation starts 2s before the first channel's end, and its
	// replacement lives 10s: long enough to be dialled once dials return.
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 10 * time.Second})
	rec := newRecorder()
	topics := fixedTopics(sim, 1)
	c, done := runWith(t, sim, topics, rec)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	sim.SetRefuseDials(true)
	waitSim(t, sim, 30*time.Second, "the old channel to expire", func(simulator.Snapshot) bool { return sim.Stats().ChannelsExpired >= 1 })
	refused := sim.Stats().DialsRefused
	waitSim(t, sim, 30*time.Second, "another refused dial", func(simulator.Snapshot) bool { return sim.Stats().DialsRefused >= refused+1 })
	if got := sim.Stats().ChannelsCreated; got > 2 {
		t.Fatalf("%d channels created while dials were refused, want at most 2", got)
	}
	sim.SetRefuseDials(false)
	back := time.Now()
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	evs := sim.Emit(topics...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
	took := time.Since(back)
	t.Logf("channels created: %d; events flowing %s after dials returned", sim.Stats().ChannelsCreated, took)
	if took > 10*time.Second {
		t.Fatalf("events flowed again %s after dials returned", took)
	}
	if got := sim.Stats().ChannelsCreated; got > 2 {
		t.Fatalf("%d channels created, want at most 2", got)
	}
}

// emitUntil emits an event on each topic every interval until stop closes
// and returns every event emitted.
func emitUntil(sim *simulator.Server, topics []string, interval time.Duration, stop <-chan struct{}) <-chan []simulator.Event {
	out := make(chan []simulator.Event, 1)
	go func() {
		var all []simulator.Event
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				out <- all
				return
			case <-t.C:
				all = append(all, sim.Emit(topics...)...)
			}
		}
	}()
	return out
}

// TestHandoverWaitsForLiveSubscriptions: Genesys takes a moment to wire a
// new channel's subscriptions, so a pong does not prove the new socket
// receives. The old socket is kept until the new one does: no event of the
// rotation is lost.
func TestHandoverWaitsForLiveSubscriptions(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 5 * time.Second})
	sim.SetSubscribeDelay(700 * time.Millisecond)
	rec := newRecorder()
	topics := fixedTopics(sim, 2)
	c, done := runWith(t, sim, topics, rec)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 10*time.Second, "the first channel receiving", func(s simulator.Snapshot) bool {
		return len(s.Channels) == 1 && s.Channels[0].Pending == 0
	})
	first := sim.Channels()[0].ID
	stop := make(chan struct{})
	emitted := emitUntil(sim, topics, 10*time.Millisecond, stop)
	waitSim(t, sim, 30*time.Second, "the rotation to complete", func(s simulator.Snapshot) bool {
		old, ok := s.Channel(first)
		return sim.Stats().ChannelsCreated >= 2 && (!ok || !old.Connected) && s.Sockets == 1 && s.Channels[len(s.Channels)-1].Pending == 0
	})
	close(stop)
	evs := <-emitted
	lost := 0
	for _, ev := range evs {
		if ev.Delivered == 0 {
			lost++
		}
	}
	t.Logf("%d events emitted across the rotation, %d reached no socket", len(evs), lost)
	if lost > 0 {
		t.Fatalf("%d of %d events emitted during the rotation reached no socket", lost, len(evs))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// TestHungRESTDoesNotDelayARedial: the rotation's subscription call hangs
// while the current socket dies; the socket is redialled within its
// normal backoff.
func TestHungRESTDoesNotDelayARedial(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 8 * time.Second})
	c, done := runWith(t, sim, fixedTopics(sim, 1), nil)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	sim.HangREST("PUT", "/api/v2/notifications/channels/", 30*time.Second)
	waitSim(t, sim, 30*time.Second, "the rotation's subscription to hang", func(simulator.Snapshot) bool { return sim.Stats().RequestsHung >= 1 })
	if err := sim.CloseSocket(first); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	waitSim(t, sim, 30*time.Second, "the socket redialled", func(s simulator.Snapshot) bool {
		ch, ok := s.Channel(first)
		return ok && ch.Connected && ch.Connects >= 2
	})
	took := time.Since(dropped)
	t.Logf("redialled %s after the drop, while a REST call hung", took)
	if took > 2*time.Second {
		t.Fatalf("redialled %s after the drop", took)
	}
}

// TestRefreshKeepsAcceptedTopics: a refresh Genesys partly refuses keeps
// what it accepted, counts the rest, and tries them again at the next
// refresh; the process does not stop.
func TestRefreshKeepsAcceptedTopics(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1})
	c, done := runWith(t, sim, []string{"v2.routing.queues.*.conversations"}, nil, func(o *Options) { o.TopicRefresh = 200 * time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	kept, refused := sim.AddQueue("kept"), sim.AddQueue("refused")
	keptTopic, refusedTopic := "v2.routing.queues."+kept.ID+".conversations", "v2.routing.queues."+refused.ID+".conversations"
	sim.RejectTopics(http.StatusForbidden, "", refusedTopic)
	has := func(s simulator.Snapshot, topic string) bool {
		for _, ch := range s.Channels {
			for _, tp := range ch.Topics {
				if tp == topic {
					return true
				}
			}
		}
		return false
	}
	waitSim(t, sim, 30*time.Second, "the accepted topic subscribed", func(s simulator.Snapshot) bool { return has(s, keptTopic) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Wait(ctx, func(s Status) bool { return len(s.Channels) == 1 && s.Channels[0].Rejected == 1 }); err != nil {
		t.Fatalf("the refused topic is not counted: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("the connector stopped: %v", err)
	default:
	}
	sim.AcceptTopics()
	waitSim(t, sim, 30*time.Second, "the refused topic subscribed at a later refresh", func(s simulator.Snapshot) bool { return has(s, refusedTopic) })
	if err := c.Wait(ctx, func(s Status) bool { return s.Channels[0].Rejected == 0 }); err != nil {
		t.Fatal(err)
	}
}

// TestRunLeavesNoGoroutines: after Run returns, nothing the connector
// started runs on: not a socket reader, a job hung in a REST call, or a
// rotation waiting for the spare.
func TestRunLeavesNoGoroutines(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 6, Users: 1, TokenLifetime: 4 * time.Second})
	o := Options{
		APIURL: sim.URL(), ClientID: sim.ClientID(), ClientSecret: sim.ClientSecret(),
		Topics: fixedTopics(sim, 6), HeartbeatTimeout: 2 * time.Second, MaxChannels: 4, TopicsPerChannel: 2,
	}
	c, err := New(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	// Hang the rotations' subscriptions so jobs are mid-call, and others
	// wait for the spare, when Run is stopped.
	sim.HangREST("PUT", "/api/v2/notifications/channels/", time.Minute)
	waitSim(t, sim, 30*time.Second, "a rotation's subscription to hang", func(simulator.Snapshot) bool { return sim.Stats().RequestsHung >= 1 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "gcnats/gcnats/connector.") && !strings.Contains(g, "TestRunLeavesNoGoroutines") && !strings.Contains(g, "testing.tRunner") {
			t.Errorf("still running after Run returned:\n%s", g)
		}
	}
}

// TestHungResubscribeDoesNotDelayARedial: a topic refresh's subscription
// call hangs while the channel's socket drops; the socket is redialled at
// once all the same.
func TestHungResubscribeDoesNotDelayARedial(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1})
	c, done := runWith(t, sim, []string{"v2.routing.queues.*.conversations"}, nil, func(o *Options) { o.TopicRefresh = 100 * time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	sim.HangREST("PUT", "/api/v2/notifications/channels/", 30*time.Second)
	sim.AddQueue("new")
	waitSim(t, sim, 30*time.Second, "the resubscription to hang", func(simulator.Snapshot) bool { return sim.Stats().RequestsHung >= 1 })
	if err := sim.CloseSocket(first); err != nil {
		t.Fatal(err)
	}
	dropped := time.Now()
	waitSim(t, sim, 30*time.Second, "the socket redialled", func(s simulator.Snapshot) bool {
		ch, ok := s.Channel(first)
		return ok && ch.Connected && ch.Connects >= 2
	})
	if took := time.Since(dropped); took > 2*time.Second {
		t.Fatalf("redialled %s after the drop", took)
	}
}

// TestChannelLostWhileARedialRuns: a rotation's replacement takes over
// while a redial of the old channel is still out (its dial refused, its
// HEAD hung), and then Genesys ends the replacement too. The redial's late
// answer is for a channel the slot no longer holds; the slot must still
// make a channel again rather than sit with none.
func TestChannelLostWhileARedialRuns(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 10 * time.Second})
	rec := newRecorder()
	topics := fixedTopics(sim, 1)
	c, done := runWith(t, sim, topics, rec)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	// The rotation (due 2s before the end) hangs in its subscription call,
	// so the old socket's loss finds it under way.
	sim.HangREST("PUT", "/api/v2/notifications/channels/", time.Second)
	waitSim(t, sim, 30*time.Second, "the rotation's subscription to hang", func(simulator.Snapshot) bool { return sim.Stats().RequestsHung >= 1 })
	sim.ClearHangs()
	sim.AddFault(simulator.Fault{Path: "/channels/" + first, Status: http.StatusServiceUnavailable, Times: -1})
	sim.HangREST("HEAD", "/api/v2/notifications/channels/"+first, 6*time.Second)
	if err := sim.CloseSocket(first); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 30*time.Second, "the redial's HEAD to hang", func(simulator.Snapshot) bool { return sim.Stats().RequestsHung >= 2 })
	// The replacement takes over with no socket left to overlap: the
	// connector reports it connected once it answered a ping.
	firstRef := channelRef(first)
	waitStatus(t, c, "the replacement connected", func(s Status) bool {
		return s.Channels[0].Connected && s.Channels[0].Ref != firstRef
	})
	second := ""
	for _, ch := range sim.Channels() {
		if ch.ID != first && ch.Connected {
			second = ch.ID
		}
	}
	if err := sim.EvictChannel(second); err != nil {
		t.Fatal(err)
	}
	evicted := time.Now()
	waitSim(t, sim, 30*time.Second, "a third channel connected", func(s simulator.Snapshot) bool {
		for _, ch := range s.Channels {
			if ch.ID != first && ch.ID != second && ch.Connected {
				return true
			}
		}
		return false
	})
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	// The stale redial still waits on its HEAD: the new channel must not.
	took := time.Since(evicted)
	t.Logf("a new channel ready %s after the replacement's eviction", took)
	if took > 3*time.Second {
		t.Fatalf("a new channel was ready only %s after the eviction: the slot waited for a redial of a channel it no longer holds", took)
	}
	evs := sim.Emit(topics...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// waitStatus waits until the connector's status meets cond.
func waitStatus(t *testing.T, c *Connector, what string, cond func(Status) bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Wait(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v (status %+v)", what, err, c.Status())
	}
}
