package connector

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// TestTopicAddedDuringRotationStaysCovered: a queue created while a
// rotation's replacement is made (its dials refused, so the handover lasts)
// reaches the old channel at the next topic refresh. The replacement must
// hold it too before the old channel is let go: every event on it, from
// the moment the old channel receives it, reaches a socket. Genesys takes
// 300 ms to wire a topic new to a channel; with serverError, the
// replacement's first subscription to it fails with a 503.
func TestTopicAddedDuringRotationStaysCovered(t *testing.T) {
	for _, tc := range []struct {
		name        string
		serverError bool
	}{{"wired late", false}, {"first subscribe 503", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			topicAddedDuringRotation(t, tc.serverError)
		})
	}
}

func topicAddedDuringRotation(t *testing.T, serverError bool) {
	// The rotation starts 2 s before the first channel's end.
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1, ChannelLifetime: 12 * time.Second})
	sim.SetSubscribeDelay(300 * time.Millisecond)
	rec := newRecorder()
	// A refresh every 100 ms asks for more listings than Genesys allows a
	// token (about 5 a second), so the REST limiter would queue them behind
	// each other and the added topic would reach the old channel seconds
	// late, in 1 run of 4: the test is of the handover, not of the limiter
	// (ratelimit_test.go), so it goes without.
	c, done := runWith(t, sim, []string{"v2.routing.queues.*.conversations"}, rec, func(o *Options) {
		o.TopicRefresh = 100 * time.Millisecond
		o.RESTRate = -1
	})
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 10*time.Second, "the first channel receiving", func(s simulator.Snapshot) bool {
		return len(s.Channels) == 1 && s.Channels[0].Pending == 0
	})
	first := sim.Channels()[0].ID
	kept := sim.Channels()[0].Topics[0]

	// The replacement is made and subscribed, but cannot be dialled yet.
	sim.SetRefuseDials(true)
	var next string
	waitSim(t, sim, 30*time.Second, "the replacement made", func(s simulator.Snapshot) bool {
		if len(s.Channels) < 2 || sim.Stats().DialsRefused < 1 {
			return false
		}
		next = s.Channels[1].ID
		return true
	})
	if serverError {
		sim.AddFault(simulator.Fault{Method: http.MethodPut, Path: "/api/v2/notifications/channels/" + next + "/subscriptions", Status: http.StatusServiceUnavailable})
	}
	added := "v2.routing.queues." + sim.AddQueue("added").ID + ".conversations"
	receives := func(s simulator.Snapshot, id string) bool {
		ch, ok := s.Channel(id)
		return ok && ch.Pending == 0 && slices.Contains(ch.Topics, added)
	}
	waitSim(t, sim, 10*time.Second, "the old channel receiving the added topic", func(s simulator.Snapshot) bool { return receives(s, first) })

	stop := make(chan struct{})
	emitted := emitUntil(sim, []string{kept, added}, 10*time.Millisecond, stop)
	sim.SetRefuseDials(false)
	waitSim(t, sim, 30*time.Second, "the rotation to complete", func(s simulator.Snapshot) bool {
		old, ok := s.Channel(first)
		return (!ok || !old.Connected) && s.Sockets == 1 && receives(s, next)
	})
	// A few events more, on the replacement alone.
	time.Sleep(100 * time.Millisecond)
	close(stop)
	evs := <-emitted
	var onAdded, lost int
	for _, ev := range evs {
		if ev.Topic != added {
			continue
		}
		onAdded++
		if ev.Delivered == 0 {
			lost++
		}
	}
	t.Logf("%d events on the added topic across the rotation, %d reached no socket; %d faults served", onAdded, lost, sim.Stats().FaultsServed)
	if serverError && sim.Stats().FaultsServed != 1 {
		t.Fatalf("the replacement's 503 was served %d times, want 1", sim.Stats().FaultsServed)
	}
	if lost > 0 {
		t.Fatalf("%d of %d events on the topic added during the rotation reached no socket", lost, onAdded)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// TestTopicRefusedByReplacementStaysOnOldChannel: Genesys refuses the
// replacement a topic the old channel holds (as after a permission
// flaps: a channel keeps what it holds). The old channel keeps reading it
// until the replacement takes it, rather than losing it until the next
// topic refresh.
func TestTopicRefusedByReplacementStaysOnOldChannel(t *testing.T) {
	t.Parallel()
	// The rotation starts 4 s before the first channel's end.
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 40 * time.Second})
	rec := newRecorder()
	topics := fixedTopics(sim, 2)
	refused := topics[1]
	c, done := runWith(t, sim, topics, rec, func(o *Options) { o.HandoverGrace = 300 * time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	sim.RejectTopics(http.StatusForbidden, "", refused)
	stop := make(chan struct{})
	emitted := emitUntil(sim, topics, 10*time.Millisecond, stop)
	var next string
	waitSim(t, sim, 60*time.Second, "the replacement made", func(s simulator.Snapshot) bool {
		if len(s.Channels) < 2 || len(s.Channels[1].Topics) == 0 {
			return false
		}
		next = s.Channels[1].ID
		return true
	})
	if ch, _ := sim.Snapshot().Channel(next); slices.Contains(ch.Topics, refused) {
		t.Fatal("the replacement took the refused topic")
	}
	sim.AcceptTopics()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	err := sim.Wait(ctx, func(s simulator.Snapshot) bool {
		old, ok := s.Channel(first)
		ch, _ := s.Channel(next)
		return (!ok || !old.Connected) && s.Sockets == 1 && ch.Pending == 0 && slices.Contains(ch.Topics, refused)
	})
	cancel()
	close(stop)
	evs := <-emitted
	var on, lost int
	for _, ev := range evs {
		if ev.Topic == refused {
			on++
			if ev.Delivered == 0 {
				lost++
			}
		}
	}
	t.Logf("%d events on the topic the replacement refused, %d reached no socket", on, lost)
	if err != nil {
		t.Fatalf("the replacement never took the refused topic (%d of %d events on it reached no socket): %v", lost, on, err)
	}
	if lost > 0 {
		t.Fatalf("%d of %d events on the topic the replacement refused reached no socket", lost, on)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
}
