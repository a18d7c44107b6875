package connector

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// nextEvent steps every event the slot's box holds until want accepts
// one, which it returns unstepped; the rest of that batch stays pending in
// *held, in order.
func nextEvent(t *testing.T, s *slot, m *machine, held *[]any, want func(any) bool) any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		*held = append(*held, s.box.take()...)
		for i, ev := range *held {
			if want(ev) {
				*held = append((*held)[:i:i], (*held)[i+1:]...)
				return ev
			}
		}
		for len(*held) > 0 {
			ev := (*held)[0]
			*held = (*held)[1:]
			if err := m.step(ev); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-s.box.wake:
		case <-deadline:
			t.Fatal("the awaited event never came")
		}
	}
}

func ended(sock *socket) bool {
	select {
	case <-sock.done:
		return true
	default:
		return false
	}
}

// TestSwapSocketEndedBeforeItsDialAnswerIsNotKeptLive: after a closing
// warning the slot dials a second socket on its channel; that socket ends
// (the network drops it) after its pong, and its reader reports the end
// before the machine hears the dial's answer. The slot must not keep it as
// its live socket, read from by nobody: it connects again.
func TestSwapSocketEndedBeforeItsDialAnswerIsNotKeptLive(t *testing.T) {
	sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
	var held []any
	m.connect()
	if err := m.step(nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evConnected); return ok })); err != nil {
		t.Fatal(err)
	}
	if m.state != live {
		t.Fatalf("connected slot is %s", m.state)
	}
	chID := m.cur.info.ID
	if err := sim.SendClosingWarning(chID, time.Hour); err != nil {
		t.Fatal(err)
	}
	// Every event up to the swap's dial answer is stepped: the warning
	// starts the swap, and the old socket, which Genesys drops for the
	// second, ends.
	ev := nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evReplaced); return ok })
	replaced := ev.(evReplaced)
	if replaced.err != nil {
		t.Fatal(replaced.err)
	}
	fresh, old := replaced.sock, m.sock
	if err := sim.CloseSocket(chID); err != nil {
		t.Fatal(err)
	}
	// Both readers have reported their ends (a reader posts before it
	// returns): the old socket's, dropped by Genesys for the second, and
	// the new one's. They are stepped first, then the dial's answer.
	<-fresh.done
	if old != nil {
		<-old.done
	}
	held = append(held, s.box.take()...)
	for _, ev := range append(held, replaced) {
		if err := m.step(ev); err != nil {
			t.Fatal(err)
		}
	}
	held = nil
	m.unstrand()
	if m.sock != nil && ended(m.sock) {
		t.Fatalf("the slot holds a socket that has ended as its own (state %s)", m.state)
	}
	if m.sock == nil && !m.connectJob.busy && m.timers[tRetry].t == nil {
		t.Fatalf("the slot has no socket and brings none back (state %s)", m.state)
	}
}

// TestSwapSocketDroppedAtItsPongIsReplaced: the same race end to end. The
// network drops each closing swap's new socket right after its pong; the
// slot must connect again and deliver, round after round, rather than stay
// live on the dropped socket.
func TestSwapSocketDroppedAtItsPongIsReplaced(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1})
	rec := newRecorder()
	topics := fixedTopics(sim, 1)
	c, done := runWith(t, sim, topics, rec)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	id := sim.Channels()[0].ID
	for round := range 5 {
		before, _ := sim.Snapshot().Channel(id)
		sim.DropNewSockets(1, simulator.DropAfterPong)
		if err := sim.SendClosingWarning(id, time.Hour); err != nil {
			t.Fatal(err)
		}
		// The swap's socket and at least one more: the slot's reconnect.
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		err := sim.Wait(ctx, func(s simulator.Snapshot) bool {
			ch, ok := s.Channel(id)
			return ok && ch.Connected && ch.Connects >= before.Connects+2
		})
		cancel()
		if err != nil {
			ch, _ := sim.Snapshot().Channel(id)
			t.Fatalf("round %d: no socket on the channel after its swap socket was dropped (connected %v, %d connects): %v", round, ch.Connected, ch.Connects, err)
		}
		// The slot has taken the new socket (it hears the next warning).
		waitStatus(t, c, "the slot connected", func(s Status) bool { return len(s.Channels) == 1 && s.Channels[0].Connected })
		evs := sim.Emit(topics...)
		ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
		err = rec.waitAll(ctx, evs)
		cancel()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
	}
}

// TestClosingWarningBeforeTheDialAnswerStartsASwap: Genesys warns a socket
// it closes soon right after it connected, and the reader reports the
// warning before the machine hears the dial's answer. The warning must
// still start a swap once the socket is the slot's, not be dropped, which
// would leave the slot to lose the socket a minute later.
func TestClosingWarningBeforeTheDialAnswerStartsASwap(t *testing.T) {
	sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
	var held []any
	m.connect()
	connected := nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evConnected); return ok }).(evConnected)
	if connected.res.err != nil {
		t.Fatal(connected.res.err)
	}
	if err := sim.SendClosingWarning(connected.res.ch.ID, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The warning first, then the dial's answer.
	warning := nextEvent(t, s, m, &held, func(ev any) bool {
		se, ok := ev.(socketEvent)
		return ok && se.sock == connected.res.sock && se.reason == ReasonClosing
	})
	for _, ev := range append(append(held, warning), connected) {
		if err := m.step(ev); err != nil {
			t.Fatal(err)
		}
	}
	if m.state != handover || m.ho.rot != nil {
		t.Fatalf("the slot is %s after a closing warning on its socket, want a swap under way", m.state)
	}
}

// TestFailedDialLeavesNoEarlyNews: a dial whose socket ends before its
// pong closes that socket itself, and no job answers with it. What the
// machine kept of the socket's reader must go with it, or every failed
// dial of a long outage leaves an entry behind.
func TestFailedDialLeavesNoEarlyNews(t *testing.T) {
	sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
	sim.SetPongDelay(time.Hour)
	m.connect()
	// The socket is up, its pong held: the network drops it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var chID string
	if err := sim.Wait(ctx, func(snap simulator.Snapshot) bool {
		for _, ch := range snap.Channels {
			if ch.Connected {
				chID = ch.ID
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	if err := sim.CloseSocket(chID); err != nil {
		t.Fatal(err)
	}
	var held []any
	var failed *socket
	var dialFailed bool
	for failed == nil || !dialFailed {
		ev := nextEvent(t, s, m, &held, func(ev any) bool {
			switch ev := ev.(type) {
			case socketEvent:
				return ev.ended
			case evConnected:
				return true
			}
			return false
		})
		switch ev := ev.(type) {
		case socketEvent:
			failed = ev.sock
		case evConnected: // after the dial's evAbandoned, if it sent one: both are stepped below
			if ev.res.err == nil {
				t.Fatal("the dial succeeded on a socket that ended before its pong")
			}
			dialFailed = true
		}
		if err := m.step(ev); err != nil {
			t.Fatal(err)
		}
	}
	for _, ev := range held {
		if err := m.step(ev); err != nil {
			t.Fatal(err)
		}
	}
	if news, kept := m.early[failed]; kept {
		t.Fatalf("the machine still keeps %d reports of a socket its failed dial closed", len(news))
	}
}
