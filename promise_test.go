package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/simulator"
)

// TestOversizedEventsCostNoOtherEvent sends, among ordinary events, one
// event over NATS' 1 MiB max_payload, one over the sidecar's read limit
// and one that fits at 600 KiB. The two that cannot be stored are skipped
// and counted; the socket stays up and every other event is stored once,
// the large one byte for byte.
func TestOversizedEventsCostNoOtherEvent(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	ch := h.onlyChannel()
	topic := "v2.routing.queues." + h.sim.Queues()[0].ID + ".conversations"

	emitSized := func(size int) simulator.Event {
		t.Helper()
		body, err := h.sim.BodyOfSize(topic, size)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := h.sim.EmitBody(topic, body)
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	events := h.sim.Emit()
	tooLarge := emitSized(2 << 20)
	events = append(events, h.sim.Emit()...)
	overLimit := emitSized(17 << 20)
	events = append(events, h.sim.Emit()...)
	large := emitSized(600 << 10)
	events = append(events, large)
	events = append(events, h.sim.Emit()...)

	msgs := h.collect("GENESYS", len(events))
	acc := account(append(events, tooLarge, overLimit), msgs, func(ev simulator.Event) bool {
		return ev.Seq == tooLarge.Seq || ev.Seq == overLimit.Seq
	})
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		t.Fatalf("%v; lost %v\n%s", acc, acc.lost, h.logs)
	}
	for _, m := range msgs {
		if m.Header.Get("Genesys-Correlation-Id") == large.CorrelationID && !bytes.Equal(m.Data, large.Body) {
			t.Fatalf("the 600 KiB event is stored as %d bytes, not its body", len(m.Data))
		}
	}
	if c, _ := h.sim.Snapshot().Channel(ch.ID); c.Connects != 1 {
		t.Errorf("oversized events cost a reconnect: %d connects", c.Connects)
	}
	for reason, want := range map[string]float64{"publish_too_large": 1, "too_large": 1} {
		if got := counterValue(h.sc.metrics.droppedFrames.WithLabelValues(reason)); got != want {
			t.Errorf("frames_dropped_total{reason=%q} = %v, want %v", reason, got, want)
		}
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	logs := h.logs.full()
	if !strings.Contains(logs, "skipped an event no retry can store") || !strings.Contains(logs, "v2.routing.queues.{id}.conversations") {
		t.Errorf("the oversized event was not logged with its topic pattern:\n%s", h.logs)
	}
	if strings.Contains(logs, "Simulated padding") {
		t.Error("an event body reached the log")
	}
	t.Logf("oversized: sent %d + 2 oversized, stored %d, lost 0, duplicated 0, 1 socket connect", len(events), len(msgs))
}

// TestIdenticalBodiesAreDistinctEvents has an agent join, leave and join a
// queue again. Queue membership carries no timestamp, so the first and
// third bodies are byte-identical; two replicas read both. Each of the
// three events is stored exactly once.
func TestIdenticalBodiesAreDistinctEvents(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_TOPICS": "v2.routing.queues.*.users"})
	h.start(2)
	second := h.startReplica()
	h.waitBothReplicas(2)
	q, u := h.sim.Queues()[0].ID, h.sim.Users()[0].ID
	topic := "v2.routing.queues." + q + ".users"
	var events []simulator.Event
	for _, joined := range []bool{true, false, true} {
		body := fmt.Appendf(nil, `{"id":%q,"user":{"id":%q},"queueId":%q,"joined":%t}`, u, u, q, joined)
		ev, err := h.sim.EmitBody(topic, body)
		if err != nil {
			t.Fatal(err)
		}
		if ev.Delivered != 2 {
			t.Fatalf("event %d delivered to %d sockets, want both replicas'", ev.Seq, ev.Delivered)
		}
		events = append(events, ev)
	}
	if !bytes.Equal(events[0].Body, events[2].Body) {
		t.Fatal("the test needs byte-identical bodies")
	}
	// The generator repeats membership bodies too.
	events = append(events, h.sim.EmitN(20, topic)...)

	msgs := h.verifyReplicas(second, events)
	var joins []string
	for _, m := range msgs[:3] {
		joins = append(joins, string(m.Data))
	}
	if joins[0] != joins[2] || joins[0] == joins[1] {
		t.Fatalf("join, leave, join stored as %q", joins)
	}
	dups := counterValue(h.sc.metrics.duplicates) + counterValue(second.sc.metrics.duplicates)
	t.Logf("identical bodies, two replicas: sent %d, stored %d, lost 0, duplicated 0 (JetStream collapsed %v)", len(events), len(msgs), dups)
}

// TestNumericCorrelationIDsAreDistinctEvents sends byte-identical bodies on
// one topic whose metadata.CorrelationId is a number, not the string
// Genesys documents: 1, 2, then 1 again. The id is the event's identity
// whatever its kind, so events 1 and 2 are stored, each with its id in
// Genesys-Correlation-Id, and the repeat of 1 is collapsed as a copy.
func TestNumericCorrelationIDsAreDistinctEvents(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	ch := h.onlyChannel()
	topic := "v2.users." + h.sim.Users()[0].ID + ".presence"
	acked := counterValue(h.sc.metrics.acked)
	for _, id := range []string{"1", "2", "1"} {
		frame := fmt.Sprintf(`{"topicName":%q,"version":"2","eventBody":{"presenceDefinition":{"id":"p1"}},"metadata":{"CorrelationId":%s}}`, topic, id)
		if err := h.sim.SendRaw(ch.ID, false, []byte(frame)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, "three acks", func() bool { return counterValue(h.sc.metrics.acked) >= acked+3 })
	if n := h.streamMsgs("GENESYS"); n != 2 {
		t.Fatalf("stream holds %d messages, want 2: the events with CorrelationId 1 and 2 (the repeat of 1 is a copy)", n)
	}
	msgs := h.collect("GENESYS", 2)
	var ids []string
	for _, m := range msgs {
		ids = append(ids, m.Header.Get("Genesys-Correlation-Id"))
	}
	if ids[0] != "1" || ids[1] != "2" || msgs[0].Header.Get("Nats-Msg-Id") == msgs[1].Header.Get("Nats-Msg-Id") {
		t.Fatalf("stored Genesys-Correlation-Id %q with Nats-Msg-Id %q, %q; want 1 and 2 with distinct ids",
			ids, msgs[0].Header.Get("Nats-Msg-Id"), msgs[1].Header.Get("Nats-Msg-Id"))
	}
	if u := counterValue(h.sc.metrics.uncorrelated); u != 0 {
		t.Errorf("gcnats_frames_uncorrelated_total = %v; a numeric id is an id", u)
	}
}

// TestShutdownWithNATSDownAndBufferFull sends SIGTERM while NATS is down
// and the buffer is full, so the socket reader is blocked handing over an
// event: the process still exits within GCNATS_SHUTDOWN_TIMEOUT and says
// how many events it could not flush.
func TestShutdownWithNATSDownAndBufferFull(t *testing.T) {
	h := faultHarness(t, simulator.Options{BodyPadding: 32 << 10}, map[string]string{
		"GCNATS_BUFFER_BYTES":     "1MiB",
		"GCNATS_SHUTDOWN_TIMEOUT": "2s",
	})
	h.start(faultTopicCount)
	h.stopNATS()
	em := startEmitter(h.sim, 5*time.Millisecond)
	defer em.finish()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// Full: a 32 KiB event no longer fits, and the org keeps writing.
	full := func() bool { return h.sc.pub.Stats().BufferedBytes > 1<<20-32<<10 }
	for tick := time.NewTicker(5 * time.Millisecond); !full(); {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the buffer never filled: %d bytes", h.sc.pub.Stats().BufferedBytes)
		}
	}
	em.waitMore(h, 10)

	start := time.Now()
	if err := h.stop(); err != nil {
		t.Fatalf("sidecar stopped with %v", err)
	}
	took := time.Since(start)
	if took > 3*time.Second {
		t.Fatalf("shutdown took %s with a 2s timeout", took)
	}
	if logs := h.logs.full(); !strings.Contains(logs, "shutdown could not flush every event") || !strings.Contains(logs, "unflushed=") {
		t.Errorf("shutdown did not say what it could not flush:\n%s", h.logs)
	}
	t.Logf("shutdown with NATS down and the buffer full took %s (timeout 2s)", took.Round(time.Millisecond))
}

// TestNATSConnectionClosedForGoodIsRedialled closes the sidecar's NATS
// connection for good, as nats.go does after the same authorization error
// twice or when its reconnects run out: gcnats dials a new one, keeps
// what it buffered, and stays healthy and ready.
func TestNATSConnectionClosedForGoodIsRedialled(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	base := "http://" + h.sc.httpAddr.String()
	events := h.sim.Emit()
	first := h.sc.pub.Conn()
	first.Close()
	events = append(events, h.sim.Emit()...)

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for tick := time.NewTicker(10 * time.Millisecond); h.sc.pub.Conn() == first || !h.sc.pub.Conn().IsConnected(); {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("no new NATS connection after the first was closed\n%s", h.logs)
		}
	}
	events = append(events, h.sim.Emit()...)
	if code, body := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d %q after a redial", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 {
		t.Fatalf("/readyz %d %q after a redial", code, body)
	}
	h.verify(events, true)
}

// TestHandoverAuditsCorrelationIDs rotates channels while events flow and
// checks the dedup id's assumption the way production does: bodies both
// sockets of a rotation read share their correlation id. With a simulated
// Genesys that gives each channel its own id, the mismatch is counted and
// a warning logged.
func TestHandoverAuditsCorrelationIDs(t *testing.T) {
	for _, perChannel := range []bool{false, true} {
		t.Run(fmt.Sprintf("id per channel %v", perChannel), func(t *testing.T) {
			h := faultHarness(t, simulator.Options{ChannelLifetime: 2 * time.Second, CorrelationIDPerChannel: perChannel}, nil)
			h.start(faultTopicCount)
			em := startEmitter(h.sim, 5*time.Millisecond)
			first := h.onlyChannel()
			h.waitSim("two rotations", func(s simulator.Snapshot) bool { return rotatedTwice(h, first, s) })
			em.waitMore(h, 30)
			em.finish()
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			match := counterValue(h.sc.metrics.handoverAudit.WithLabelValues("match"))
			mismatch := counterValue(h.sc.metrics.handoverAudit.WithLabelValues("mismatch"))
			warned := strings.Contains(h.logs.full(), "under different correlation ids")
			t.Logf("handover audit: %v bodies matched, %v mismatched", match, mismatch)
			if perChannel {
				if mismatch == 0 || !warned {
					t.Fatalf("per-channel ids: %v mismatches, warned %v; want both", mismatch, warned)
				}
				return
			}
			if match == 0 || mismatch != 0 || warned {
				t.Fatalf("one id per event: %v matches, %v mismatches, warned %v; want matches only", match, mismatch, warned)
			}
		})
	}
}

// TestNATSUserDeniedOneSubject runs the sidecar as a NATS user that may not
// publish presence events, as a deployment's account rules can say: the
// denial is counted at once, the buffer stays flat, and every other topic
// flows on the same socket.
func TestNATSUserDeniedOneSubject(t *testing.T) {
	srv := startNATS(t, &server.Options{
		ServerName: "gcnats-denied", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{
			{Username: "gcnats", Password: "sidecar-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"genesys.v2.users.*.presence"}},
				Subscribe: &server.SubjectPermission{Allow: []string{">"}},
			}},
			{Username: "reader", Password: "reader-pw"},
		},
	})
	h := faultHarness(t, simulator.Options{}, map[string]string{
		"NATS_URL": srv.ClientURL(), "NATS_USER": "gcnats", "NATS_PASSWORD": "sidecar-pw",
	})
	var err error
	h.nc, err = nats.Connect(srv.ClientURL(), nats.UserInfo("reader", "reader-pw"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	h.start(faultTopicCount)
	ch := h.onlyChannel()

	var events, denied []simulator.Event
	for range 20 {
		for _, ev := range h.sim.Emit() {
			if strings.HasSuffix(ev.Topic, ".presence") {
				denied = append(denied, ev)
			} else {
				events = append(events, ev)
			}
		}
	}
	msgs := h.collect("GENESYS", len(events))
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	// Flat: every denied event is given up, none held.
	for tick := time.NewTicker(10 * time.Millisecond); h.sc.pub.Stats().BufferedBytes != 0; {
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("the buffer still holds %d bytes", h.sc.pub.Stats().BufferedBytes)
		}
	}
	acc := account(append(events, denied...), msgs, func(ev simulator.Event) bool { return strings.HasSuffix(ev.Topic, ".presence") })
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 || len(msgs) != len(events) {
		t.Fatalf("%v; %d stored for %d allowed events", acc, len(msgs), len(events))
	}
	if got := counterValue(h.sc.metrics.droppedFrames.WithLabelValues("publish_denied")); got != float64(len(denied)) {
		t.Errorf("frames_dropped_total{reason=publish_denied} = %v, want %d", got, len(denied))
	}
	if c, _ := h.sim.Snapshot().Channel(ch.ID); c.Connects != 1 {
		t.Errorf("a denied subject cost a reconnect: %d connects", c.Connects)
	}
	t.Logf("denied subject: sent %d, stored %d, denied and counted %d, lost 0, duplicated 0", len(events)+len(denied), len(msgs), len(denied))
}

// TestRotationUnderBackpressureLosesNothing rotates the channel while NATS
// is down and the buffer full, so the old socket's reader is held with
// frames still unread. Those frames were sent before the new channel was
// subscribed and reached no other socket: the replaced socket must be read
// to its end, however long backpressure lasts, before it is closed.
func TestRotationUnderBackpressureLosesNothing(t *testing.T) {
	rotateUnderBackpressure(t, 0, 1, 2*time.Second)
}

// A rotation that cannot finish before the old channel ends (dials refused)
// while backpressure holds the old socket's reader: Genesys ends the old
// socket and, its drain over, closes it with frames still in its send
// buffer, waiting for the reader. Any byte gcnats then writes to that
// socket (a close frame as the handover finishes) is answered by a TCP
// reset that discards them. The old socket must be read to its end before
// gcnats writes to it.
func TestHandoverPastTheOldSocketsEndLosesNothing(t *testing.T) {
	// The replacement cannot connect until long after the old channel's
	// end (4 s) and the server's 2 s drain of its socket; a backlog larger
	// than the client's receive buffer waits in the server's send buffer.
	rotateUnderBackpressure(t, 9*time.Second, 8, time.Second)
}

// rotateUnderBackpressure stops NATS, fills gcnats' 1 MiB buffer, emits
// backlog more rounds of events that stay unread in the socket, and waits
// for the channel's rotation (its lifetime is 4 s), dials refused for
// refuse; NATS comes back after down more. Every delivered event must be
// stored once.
func rotateUnderBackpressure(t *testing.T, refuse time.Duration, backlog int, down time.Duration) {
	h := faultHarness(t, simulator.Options{BodyPadding: 32 << 10, ChannelLifetime: 4 * time.Second}, map[string]string{
		"GCNATS_BUFFER_BYTES":   "1MiB",
		"GCNATS_HANDOVER_GRACE": "100ms",
	})
	h.start(faultTopicCount)
	if refuse > 0 {
		h.sim.RefuseDials(refuse)
	}
	addr := h.stopNATS()
	var events []simulator.Event
	for h.sc.pub.Stats().BufferedBytes < 1<<20-64<<10 {
		events = append(events, h.sim.Emit()...)
	}
	for range backlog { // unread, in the old socket's buffers only
		events = append(events, h.sim.Emit()...)
	}

	if !h.waitRotated(testTimeout) {
		t.Fatalf("the channel never rotated\n%s", h.logs)
	}
	// NATS stays down a while after the handover: the scenario's own length.
	time.Sleep(down)
	h.startNATS(addr)
	events = append(events, h.sim.Emit()...)
	h.verify(events, true)
}

// TestRotationWhileEventsFlowUnderBackpressure rotates the channel while
// NATS is down, the buffer full and events still arriving. The new socket
// then reads an event before the answer to its ping, and its reader is
// held by backpressure on that event with the pong unread behind it. The
// event proves what the pong would (Genesys has the socket and writes to
// it) and more (it receives), so the rotation must complete at once while
// NATS is still down, and every event must be stored once when it is
// back.
func TestRotationWhileEventsFlowUnderBackpressure(t *testing.T) {
	h := faultHarness(t, simulator.Options{BodyPadding: 4 << 10, ChannelLifetime: 4 * time.Second}, map[string]string{
		"GCNATS_BUFFER_BYTES": "1MiB",
		// The event read must promote the new socket, not the grace.
		"GCNATS_HANDOVER_GRACE": "1m",
	})
	h.start(faultTopicCount)
	// Events flow ahead of every answer to a ping from now on.
	h.sim.SetPongDelay(200 * time.Millisecond)
	addr := h.stopNATS()
	var events []simulator.Event
	for h.sc.pub.Stats().BufferedBytes < 1<<20-32<<10 {
		events = append(events, h.sim.Emit()...)
	}
	// Events keep coming, a few KB at a time, well within what the
	// sockets' kernel buffers hold while nothing reads them.
	em := startEmitter(h.sim, 50*time.Millisecond, "v2.routing.queues."+h.sim.Queues()[0].ID+".conversations")
	rotated := h.waitRotated(20 * time.Second)
	events = append(events, em.finish()...)
	if !rotated {
		t.Fatalf("no rotation while NATS was down\n%s", h.logs)
	}
	h.startNATS(addr)
	events = append(events, h.sim.Emit()...)
	h.verify(events, true)
}

// TestRotationFollowsGenesysClock runs against an org whose clock is an
// hour behind this machine's, so the expiry it gives a channel is an hour
// in this machine's past. Read as this machine's time, every channel would
// be rotated as soon as it was up, one after another; read on Genesys'
// clock, the first rotation comes in the last part of the channel's
// 6-second life, never before half of it. Nothing is lost either way.
func TestRotationFollowsGenesysClock(t *testing.T) {
	const life = 6 * time.Second
	h := faultHarness(t, simulator.Options{ChannelLifetime: life, ClockOffset: -time.Hour}, nil)
	created := time.Now()
	h.start(faultTopicCount)
	em := startEmitter(h.sim, 5*time.Millisecond)
	if !h.waitRotated(testTimeout) {
		t.Fatalf("no rotation\n%s", h.logs)
	}
	if after := time.Since(created); after < life/2 {
		t.Fatalf("the first rotation came %s after the channel was made, before half its life of %s", after, life)
	}
	em.waitMore(h, 30)
	h.verify(em.finish(), true)
}

// waitRotated waits until the sidecar has rotated a channel; false if it
// has not within the time given.
func (h *harness) waitRotated(within time.Duration) bool {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	rotated := h.sc.metrics.reconnects.WithLabelValues("rotate")
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for counterValue(rotated) < 1 {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false
		}
	}
	return true
}
