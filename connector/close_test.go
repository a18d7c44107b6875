package connector

import (
	"context"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// slowHandler holds every event until release closes, then hands each on
// after per: a sink that was stuck and now catches up a frame at a time,
// each too quick to count as backpressure.
type slowHandler struct {
	*recorder
	release chan struct{}
	per     time.Duration
}

func (h *slowHandler) HandleEvent(ctx context.Context, f *Frame, at time.Time) error {
	select {
	case <-h.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	time.Sleep(h.per) // the catching-up sink's pace is the scenario itself
	return h.recorder.HandleEvent(ctx, f, at)
}

// TestCloseWaitsForABacklogToBeRead: the old channel ended while its
// reader was held, and Genesys has closed its side with megabytes still
// unsent. The handover then closes the old socket while the reader
// catches up, never held, for longer than a second. A close frame written
// now would meet a closed socket, whose TCP reset discards what the server
// had not yet sent: the close must wait until the reader has drained.
func TestCloseWaitsForABacklogToBeRead(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 4 * time.Second, BodyPadding: 32 << 10})
	h := &slowHandler{recorder: newRecorder(), release: make(chan struct{}), per: 20 * time.Millisecond}
	topics := fixedTopics(sim, 1)
	c, done := runWith(t, sim, topics, h, func(o *Options) { o.HandoverGrace = 100 * time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	// The rotation (due at 2 s) cannot connect until the old channel has
	// ended (at 4 s): the replacement then takes over while the old
	// socket's reader is still held.
	sim.RefuseDials(4500 * time.Millisecond)
	var evs []simulator.Event
	for range 600 { // about 20 MB: more than both sides' socket buffers hold
		evs = append(evs, sim.Emit(topics...)...)
	}
	waitSim(t, sim, 30*time.Second, "the old channel's socket ended by the server", func(s simulator.Snapshot) bool {
		_, live := s.Channel(first)
		return !live && s.Sockets == 0
	})
	// The server has closed its side (after its 2 s drain) with frames
	// unsent. The sink recovers, and the reader works through the backlog
	// for seconds while the handover closes the old socket.
	close(h.release)
	firstRef := channelRef(first)
	waitStatus(t, c, "the replacement taking over", func(s Status) bool {
		return s.Channels[0].Connected && s.Channels[0].Ref != firstRef
	})
	var delivered []simulator.Event
	for _, ev := range evs {
		if got, ok := sim.EventBySeq(ev.Seq); ok && got.Delivered > 0 {
			delivered = append(delivered, got)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := h.waitAll(ctx, delivered); err != nil {
		h.mu.Lock()
		got := 0
		for _, ev := range delivered {
			if h.seen[ev.CorrelationID] > 0 {
				got++
			}
		}
		h.mu.Unlock()
		t.Fatalf("%d of %d events the server wrote to the old socket were handed on: %v", got, len(delivered), err)
	}
	t.Logf("%d of %d events written to the old socket before its end, every one handed on", len(delivered), len(evs))
}

// TestRotationLetsGoOfTheOldSocketUnderSteadyLoad: events arrive more
// often than every few milliseconds, so the old socket's reader never
// waits long with nothing to read. The replaced channel is emptied first,
// which ends its stream, and its socket then closes at once rather than
// reading on beside the new one until the old channel expires.
func TestRotationLetsGoOfTheOldSocketUnderSteadyLoad(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1, ChannelLifetime: 12 * time.Second})
	rec := newRecorder()
	topics := fixedTopics(sim, 2)
	c, done := runWith(t, sim, topics, rec, func(o *Options) { o.HandoverGrace = 100 * time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0].ID
	stop := make(chan struct{})
	emitted := emitUntil(sim, topics, time.Millisecond, stop)
	firstRef := channelRef(first)
	waitStatus(t, c, "the rotation", func(s Status) bool { return s.Channels[0].Connected && s.Channels[0].Ref != firstRef })
	rotated := time.Now()
	waitSim(t, sim, 30*time.Second, "the old socket closed", func(s simulator.Snapshot) bool {
		old, ok := s.Channel(first)
		return !ok || !old.Connected
	})
	took := time.Since(rotated)
	close(stop)
	evs := <-emitted
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var delivered []simulator.Event
	for _, ev := range evs {
		if got, ok := sim.EventBySeq(ev.Seq); ok && got.Delivered > 0 {
			delivered = append(delivered, got)
		}
	}
	if err := rec.waitAll(ctx, delivered); err != nil {
		t.Fatal(err)
	}
	t.Logf("old socket closed %s after the rotation; %d of %d events delivered, all handed on", took.Round(time.Millisecond), len(delivered), len(evs))
	if took > time.Second {
		t.Fatalf("the old socket read on %s after the rotation", took)
	}
}
