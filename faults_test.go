package main

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

// faultTopics are six topics over three families on a 2-queue, 2-user org.
var faultTopics = []string{
	"v2.routing.queues.*.conversations",
	"v2.users.*.presence",
	"v2.detail.events.conversation.5d0f6a2e-8c1b-4e7a-9f3d-2b6c8e1a4f70.wrapup",
	"v2.detail.events.conversation.a7e3c9b1-2d4f-4a6e-8b0c-1f5e7d9a3c26.wrapup",
}

const faultTopicCount = 2 + 2 + 2

// emitter makes the simulated org produce a round of events (one per
// subscribed topic) every tick, until stopped, as Genesys does whether or
// not a socket is there to receive them.
type emitter struct {
	sim  *simulator.Server
	stop chan struct{}
	done chan struct{}

	mu     sync.Mutex
	events []simulator.Event
}

func startEmitter(sim *simulator.Server, every time.Duration, topics ...string) *emitter {
	return startEmitterOf(sim, every, func() []string { return topics })
}

// startEmitterOf emits one event on each of topics() every interval,
// asking topics anew each time.
func startEmitterOf(sim *simulator.Server, every time.Duration, topics func() []string) *emitter {
	e := &emitter{sim: sim, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-e.stop:
				return
			case <-t.C:
			}
			evs := sim.Emit(topics()...)
			e.mu.Lock()
			e.events = append(e.events, evs...)
			e.mu.Unlock()
		}
	}()
	return e
}

// waitMore blocks until the org has generated n more events.
func (e *emitter) waitMore(h *harness, n uint64) {
	h.t.Helper()
	from := h.sim.Snapshot().LastSeq
	h.waitSim("more events", func(s simulator.Snapshot) bool { return s.LastSeq >= from+n })
}

func (e *emitter) finish() []simulator.Event {
	close(e.stop)
	<-e.done
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.events
}

// verify checks the stream against what the org sent. Planned changes may
// lose nothing; unplanned ones may lose only events no socket of the
// sidecar could have received (Delivered 0).
func (h *harness) verify(events []simulator.Event, planned bool) accounting {
	h.t.Helper()
	mustStore := 0
	for _, ev := range events {
		if ev.Delivered > 0 {
			mustStore++
		} else if planned {
			h.t.Errorf("event %d (%s) was sent while no socket was connected: a planned change left a gap", ev.Seq, ev.Topic)
		}
	}
	msgs := h.collect("GENESYS", mustStore)
	if err := h.stop(); err != nil {
		h.t.Fatalf("sidecar stopped with %v", err)
	}
	if n := h.eventMsgs("GENESYS"); n != mustStore {
		h.t.Errorf("stream holds %d events, want %d", n, mustStore)
	}
	acc := account(events, msgs, func(ev simulator.Event) bool { return ev.Delivered == 0 })
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		h.t.Fatalf("%v; lost seqs %v\n%s", acc, acc.lost, h.logs)
	}
	notReceivable := len(events) - mustStore
	h.t.Logf("%s: sent %d, stored %d, lost %d (sent while no socket was up: %d), duplicated %d",
		h.t.Name(), len(events), len(msgs), acc.Lost, notReceivable, acc.Duplicated)
	return acc
}

func (h *harness) onlyChannel() simulator.ChannelInfo {
	h.t.Helper()
	for _, c := range h.sim.Snapshot().Channels {
		if c.Connected {
			return c
		}
	}
	h.t.Fatal("no connected channel")
	return simulator.ChannelInfo{}
}

func faultHarness(t *testing.T, opts simulator.Options, environ map[string]string) *harness {
	t.Helper()
	opts.Queues, opts.Users = 2, 2
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 50 * time.Millisecond
	}
	env := map[string]string{
		"GCNATS_TOPICS":            strings.Join(faultTopics, ","),
		"GCNATS_HEARTBEAT_TIMEOUT": "1s",
	}
	for k, v := range environ {
		env[k] = v
	}
	return newHarness(t, opts, env)
}

// sameChannelBack holds once the channel has a fresh, unstalled socket.
func sameChannelBack(_ *harness, first simulator.ChannelInfo, s simulator.Snapshot) bool {
	c, ok := s.Channel(first.ID)
	return ok && c.Connects >= 2 && c.Connected && !c.Stalled
}

// replaced holds once the channel is gone and another carries its topics.
func replaced(_ *harness, first simulator.ChannelInfo, s simulator.Snapshot) bool {
	_, alive := s.Channel(first.ID)
	return !alive && s.Topics(true) == faultTopicCount
}

// rotatedTwice holds once the channel is replaced and its replacement has
// been replaced in turn: planned rotations keep following one another.
func rotatedTwice(h *harness, first simulator.ChannelInfo, s simulator.Snapshot) bool {
	return replaced(h, first, s) && h.sim.Stats().ChannelsCreated >= 3
}

// TestFaults runs each socket and channel fault Genesys produces while the
// org generates events, and compares what it sent with what the stream
// holds. Planned changes may lose nothing; unplanned ones only what was
// sent while no socket of the sidecar was connected.
func TestFaults(t *testing.T) {
	for _, tc := range []struct {
		name      string
		opts      simulator.Options
		inject    func(*simulator.Server, string) error // nil: the fault comes with time
		recovered func(*harness, simulator.ChannelInfo, simulator.Snapshot) bool
		planned   bool
		reason    string // the reconnect reason it must count
	}{
		{name: "closing warning", planned: true, reason: "closing", recovered: sameChannelBack,
			inject: func(s *simulator.Server, id string) error { return s.SendClosingWarning(id, 200*time.Millisecond) }},
		{name: "channel expiry", planned: true, reason: "rotate", recovered: rotatedTwice,
			opts: simulator.Options{ChannelLifetime: 2 * time.Second}},
		// The org's clock an hour ahead of this machine's: channel
		// deadlines must follow its clock, or the channel dies before its
		// rotation (see also TestRotationFollowsGenesysClock).
		{name: "channel expiry, the org's clock an hour ahead", planned: true, reason: "rotate", recovered: rotatedTwice,
			opts: simulator.Options{ChannelLifetime: 2 * time.Second, ClockOffset: time.Hour}},
		{name: "token rollover", planned: true, reason: "rotate", recovered: rotatedTwice,
			opts: simulator.Options{TokenLifetime: 2 * time.Second}},
		{name: "abrupt close", reason: "closed", recovered: sameChannelBack, inject: (*simulator.Server).CloseSocket},
		{name: "silent stall", reason: "stall", recovered: sameChannelBack, inject: (*simulator.Server).StallSocket},
		{name: "channel 404", reason: "gone", recovered: replaced, inject: (*simulator.Server).ExpireChannel},
		{name: "channel evicted", reason: "gone", recovered: replaced, inject: (*simulator.Server).EvictChannel},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := faultHarness(t, tc.opts, nil)
			h.start(faultTopicCount)
			em := startEmitter(h.sim, 5*time.Millisecond)
			em.waitMore(h, 30)
			first := h.onlyChannel()
			if tc.inject != nil {
				if err := tc.inject(h.sim, first.ID); err != nil {
					t.Fatal(err)
				}
			}
			h.waitSim("recovery from "+tc.name, func(s simulator.Snapshot) bool { return tc.recovered(h, first, s) })
			if tc.reason == "rotate" {
				// The replaced channel is emptied once its socket is read
				// to its end, which takes its time under load.
				h.waitSim("the replaced channel emptied", func(simulator.Snapshot) bool {
					return h.sim.Stats().Calls("DELETE", simulator.RouteSubscriptions) >= 1
				})
			}
			em.waitMore(h, 60)
			h.verify(em.finish(), tc.planned)
			if got := counterValue(h.sc.metrics.reconnects.WithLabelValues(tc.reason)); got < 1 {
				t.Errorf("reconnects{reason=%q} = %v, want ≥ 1", tc.reason, got)
			}
		})
	}
}

// waitBothReplicas waits until two channels, one a replica, are connected
// with every topic each, so each event reaches both.
func (h *harness) waitBothReplicas(topics int) {
	h.t.Helper()
	h.waitSim("both replicas' channels connected", func(s simulator.Snapshot) bool {
		connected := 0
		for _, c := range s.Channels {
			if c.Connected && len(c.Topics) == topics {
				connected++
			}
		}
		return connected == 2
	})
}

// verifyReplicas stops both replicas and checks that the stream holds each
// event exactly once; it returns what the stream holds.
func (h *harness) verifyReplicas(second *replica, events []simulator.Event) []storedMsg {
	h.t.Helper()
	msgs := h.collect("GENESYS", len(events))
	if err := second.stop(); err != nil {
		h.t.Fatal(err)
	}
	if err := h.stop(); err != nil {
		h.t.Fatal(err)
	}
	if n := h.streamMsgs("GENESYS"); n != uint64(len(events)) {
		h.t.Fatalf("stream holds %d messages for %d events", n, len(events))
	}
	if acc := account(events, msgs, nil); acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		h.t.Fatalf("%v; lost %v", acc, acc.lost)
	}
	return msgs
}

// stopNATS stops the test's JetStream server and returns its address.
func (h *harness) stopNATS() string {
	addr := h.nats.Addr()
	h.nats.Shutdown()
	return addr
}

// startNATS starts the test's JetStream server again on addr with the same
// store, as a restarted server or pod would.
func (h *harness) startNATS(addr string) {
	h.t.Helper()
	var err error
	h.nats, err = publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: addr, StoreDir: h.natsStore})
	if err != nil {
		h.t.Fatalf("restart JetStream: %v", err)
	}
	h.t.Cleanup(h.nats.Shutdown)
}

func natsOutage(t *testing.T, down time.Duration) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_BUFFER_BYTES": "1MiB"})
	h.start(faultTopicCount)
	em := startEmitter(h.sim, 5*time.Millisecond)
	em.waitMore(h, 30)
	addr := h.stopNATS()
	// The outage's length is the scenario itself, not a wait for a
	// condition; it is watched for the buffer filling up.
	var peak int64
	end := time.Now().Add(down)
	tick := time.NewTicker(10 * time.Millisecond)
	for ; time.Now().Before(end); <-tick.C {
		peak = max(peak, h.sc.pub.Stats().BufferedBytes)
	}
	tick.Stop()
	h.startNATS(addr)
	em.waitMore(h, 60)
	h.verify(em.finish(), true)
	if down >= 5*time.Second && peak < 1<<20-64<<10 {
		t.Errorf("the buffer peaked at %d bytes of 1 MiB: the outage never pushed back on the socket", peak)
	}
	t.Logf("buffer peak during the outage: %d bytes of %d", peak, 1<<20)
}

func TestNATSRestartLosesNothing(t *testing.T) {
	natsOutage(t, 0)
}

func TestNATSOutageLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("a 10-second outage")
	}
	natsOutage(t, 10*time.Second)
}

// TestStreamDeletedWhileRunning deletes gcnats' stream under it, as an
// operator might: gcnats creates it again with its settings, and every
// event read after the deletion is stored there once.
func TestStreamDeletedWhileRunning(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_STREAM_MAX_AGE": "3h"})
	h.start(faultTopicCount)
	h.collect("GENESYS", len(h.sim.Emit()))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.js.DeleteStream(ctx, "GENESYS"); err != nil {
		t.Fatal(err)
	}
	h.verify(h.sim.EmitN(20*faultTopicCount), true)
	if !strings.Contains(h.logs.full(), "no stream for the subject; set the stream up again") {
		t.Error("no line saying the stream was created again")
	}
	if n := counterValue(h.sc.metrics.failed); n != 0 {
		t.Errorf("%v events given up", n)
	}
	s, err := h.js.Stream(ctx, "GENESYS")
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxAge != 3*time.Hour || c.Storage != jetstream.FileStorage {
		t.Errorf("created again with max age %s and %s storage; want GCNATS_STREAM_MAX_AGE and file storage", c.MaxAge, c.Storage)
	}
}

func TestFifteenHundredTopicsTwoChannels(t *testing.T) {
	h := newHarness(t, simulator.Options{Queues: 500, Users: -1, HeartbeatInterval: time.Second}, map[string]string{
		"GCNATS_TOPICS": "v2.routing.queues.*.conversations,v2.routing.queues.*.conversations.calls,v2.routing.queues.*.users",
	})
	h.start(1500)
	snap := h.sim.Snapshot()
	if len(snap.Channels) != 2 {
		t.Fatalf("%d channels for 1,500 topics, want 2", len(snap.Channels))
	}
	for _, c := range snap.Channels {
		if len(c.Topics) > 1000 {
			t.Fatalf("a channel holds %d topics, over Genesys' 1,000", len(c.Topics))
		}
	}
	events := h.sim.Emit()
	if len(events) != 1500 {
		t.Fatalf("emitted %d events, want 1500", len(events))
	}
	h.verify(events, true)
}

func TestTwoReplicasStoreEachEventOnce(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	second := h.startReplica()
	h.waitBothReplicas(faultTopicCount)
	events := h.sim.EmitN(40 * faultTopicCount)
	for _, ev := range events {
		if ev.Delivered != 2 {
			t.Fatalf("event %d delivered to %d sockets, want both replicas'", ev.Seq, ev.Delivered)
		}
	}
	msgs := h.verifyReplicas(second, events)
	dups := counterValue(h.sc.metrics.duplicates) + counterValue(second.sc.metrics.duplicates)
	t.Logf("two replicas: sent %d, stored %d, lost 0, duplicated 0 (JetStream collapsed %v)", len(events), len(msgs), dups)
	// What the stream's duplicate window holds is what was stored, each
	// event once, whichever replica stored it: the copies JetStream
	// collapsed take no room there.
	inWindow := gatheredValue(t, h.sc.metrics.reg, "gcnats_dedup_window_events") +
		gatheredValue(t, second.sc.metrics.reg, "gcnats_dedup_window_events")
	if inWindow != float64(len(msgs)) {
		t.Fatalf("gcnats_dedup_window_events sum to %v over the replicas, for %d events stored", inWindow, len(msgs))
	}
}

// TestTopicRefreshFollowsTheOrg checks that '*' topics follow the org: a
// new queue is subscribed and a removed user unsubscribed on the open
// channel, without dropping its socket.
func TestTopicRefreshFollowsTheOrg(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_TOPIC_REFRESH": "1s"})
	h.start(faultTopicCount)
	ch := h.onlyChannel()
	added := h.sim.AddQueue("Overflow")
	removed := h.sim.Users()[0]
	if err := h.sim.RemoveUser(removed.ID); err != nil {
		t.Fatal(err)
	}
	newTopic := "v2.routing.queues." + added.ID + ".conversations"
	oldTopic := "v2.users." + removed.ID + ".presence"
	h.waitSim("the channel following the org", func(s simulator.Snapshot) bool {
		c, ok := s.Channel(ch.ID)
		return ok && slices.Contains(c.Topics, newTopic) && !slices.Contains(c.Topics, oldTopic)
	})
	if c, _ := h.sim.Snapshot().Channel(ch.ID); c.Connects != 1 || !c.Connected {
		t.Fatalf("the socket was dropped for a topic change: %d connects", c.Connects)
	}
	h.replica.waitReady(h)
	events := h.sim.Emit(newTopic)
	h.verify(events, true)
}

// TestBadFramesAreCountedNotFatal sends frames Genesys should never send:
// each is skipped, counted by reason and logged, the socket stays up, and
// the events around them are stored once each.
func TestBadFramesAreCountedNotFatal(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	ch := h.onlyChannel()
	before := h.sim.Emit()
	for _, bad := range []struct {
		binary bool
		frame  string
	}{
		{frame: `{"topicName":"v2.users.x.presence","eventBody":{"unterminated":`},
		{frame: `[1,2,3]`},
		{frame: `not json at all`},
		{frame: `{"topicName":42,"eventBody":{}}`},
		{frame: `{"topicName":"v2.users.x.presence","version":"2"}`},
		{binary: true, frame: `{"topicName":"v2.users.x.presence","eventBody":{}}`},
		{frame: `{"message":"not an event, not an answer"}`},
		{frame: `{}`},
		{frame: `{"correlationId":"c1","topics":[],"result":"200","status":"subscribed"}`},
	} {
		if err := h.sim.SendRaw(ch.ID, bad.binary, []byte(bad.frame)); err != nil {
			t.Fatal(err)
		}
	}
	after := h.sim.Emit()
	h.verify(append(before, after...), true)
	if c, _ := h.sim.Snapshot().Channel(ch.ID); c.Connects != 1 {
		t.Errorf("bad frames cost a reconnect: %d connects", c.Connects)
	}
	for reason, want := range map[string]float64{"malformed": 4, "binary": 1, "no_body": 1, "no_topic": 2} {
		if got := counterValue(h.sc.metrics.droppedFrames.WithLabelValues(reason)); got != want {
			t.Errorf("frames_dropped_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if logs := h.logs.full(); !strings.Contains(logs, "skipped a frame") || !strings.Contains(logs, "without eventBody") {
		t.Errorf("skipped frames were not logged:\n%s", h.logs)
	}
}
