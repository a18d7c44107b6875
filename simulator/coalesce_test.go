package simulator_test

import (
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// A client that stops reading while a delivery round is written: the round
// cannot leave within WriteTimeout, so the socket is dropped, and none of
// the round's frames counts as delivered, since which of them the client
// got is unknown. The frame of an earlier round, which it read, still does.
func TestRoundThatCannotBeWrittenCountsNothingDelivered(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{
		Queues: 1, Users: 1, BodyPadding: 32 << 10,
		WriteTimeout: 300 * time.Millisecond, HeartbeatInterval: time.Hour,
	})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	if first := sim.EmitN(1, topic); first[0].Delivered != 1 {
		t.Fatalf("first event delivered to %d sockets", first[0].Delivered)
	}
	if f := c.mustRead(); f.TopicName != topic {
		t.Fatalf("read %q, want the first event", f.TopicName)
	}
	// The client reads nothing more. 250 events of 32 KiB (8 MiB) in one
	// round outgrow both ends' socket buffers.
	for _, ev := range sim.EmitN(250, topic) {
		if ev.Delivered != 0 {
			t.Fatalf("event %d of a round that could not be written counts as delivered", ev.Seq)
		}
	}
	if st := sim.Stats(); st.Events != 251 || st.Deliveries != 1 {
		t.Fatalf("stats: %d events, %d deliveries; want 251 and 1", st.Events, st.Deliveries)
	}
	waitFor(t, sim, func(s simulator.Snapshot) bool {
		info, ok := s.Channel(*ch.Id)
		return ok && !info.Connected
	})
}
