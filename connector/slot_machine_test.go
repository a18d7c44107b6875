package connector

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestStrandedSlotConnectsAgain: a machine left, by a bug, with no socket
// and nothing under way to bring one back says so at error level and
// connects again instead of sleeping for ever.
func TestStrandedSlotConnectsAgain(t *testing.T) {
	var logs lockedBuffer
	_, s, m := newTestMachine(t, slog.New(slog.NewTextHandler(&logs, nil)))
	for _, st := range []slotState{connecting, backingOff, live} {
		m.state = st
		m.unstrand()
		if !m.connectJob.busy {
			t.Fatalf("a stranded %s slot started no connect", st)
		}
		if !strings.Contains(logs.String(), StrandedMessage) {
			t.Fatalf("a stranded %s slot logged nothing:\n%s", st, logs.String())
		}
		// Its answer: a socket on a new channel.
		ev := (<-waitBox(t, s)).(evConnected)
		if err := m.onConnected(ev); err != nil || m.sock == nil {
			t.Fatalf("connect after %s: %v, socket %v", st, err, m.sock)
		}
		m.closeSock(m.sock)
		m.sock = nil
	}
	// Something under way is not stranded.
	before := strings.Count(logs.String(), StrandedMessage)
	m.state = backingOff
	m.after(tRetry, time.Hour)
	m.unstrand()
	if m.connectJob.busy || strings.Count(logs.String(), StrandedMessage) != before {
		t.Fatal("a slot waiting to retry was taken for stranded")
	}
}

// waitBox returns the next evConnected the slot's jobs post.
func waitBox(t *testing.T, s *slot) <-chan any {
	t.Helper()
	out := make(chan any, 1)
	deadline := time.After(30 * time.Second)
	for {
		for _, ev := range s.box.take() {
			if ev, ok := ev.(evConnected); ok {
				out <- ev
				return out
			}
		}
		select {
		case <-s.box.wake:
		case <-deadline:
			t.Fatal("no connect answer")
		}
	}
}

// A socket can end before the machine hears of the dial that made it: its
// reader reports to the slot at once, the dial's job only after. The slot
// must not then hold the dead socket as live, with nothing left to notice;
// it connects again.
func TestSocketEndedBeforeItsDialAnswerIsNotKeptLive(t *testing.T) {
	sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
	m.connect()
	ev := (<-waitBox(t, s)).(evConnected)
	if ev.res.err != nil {
		t.Fatal(ev.res.err)
	}
	dead := ev.res.sock
	if err := sim.CloseSocket(ev.res.ch.ID); err != nil {
		t.Fatal(err)
	}
	<-dead.done // its reader has reported its end to the slot
	var ended []socketEvent
	for _, x := range s.box.take() {
		if se, ok := x.(socketEvent); ok && se.sock == dead && se.ended {
			ended = append(ended, se)
		}
	}
	if len(ended) != 1 {
		t.Fatalf("the reader reported %d ends, want 1", len(ended))
	}
	// The end comes first, then the dial's answer.
	if err := m.onSocket(ended[0]); err != nil {
		t.Fatal(err)
	}
	if err := m.onConnected(ev); err != nil {
		t.Fatal(err)
	}
	if m.sock == dead {
		t.Fatalf("the slot holds a socket that has ended (state %s)", m.state)
	}
	if !m.connectJob.busy && m.timers[tRetry].t == nil {
		t.Fatal("the slot lost its socket and connects no more")
	}
}

// newTestMachine is one slot's machine, for a connector against a
// simulated org of one topic (returned too), driven by the test itself
// rather than by a running slot; it shuts down with the test.
func newTestMachine(t *testing.T, log *slog.Logger) (*simulator.Server, *slot, *machine) {
	t.Helper()
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1})
	c, err := New(Options{
		APIURL: sim.URL(), ClientID: sim.ClientID(), ClientSecret: sim.ClientSecret(),
		Topics: fixedTopics(sim, 1), Logger: log,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := c.newSlot(0, fixedTopics(sim, 1))
	m := newMachine(s, context.Background())
	t.Cleanup(m.shutdown)
	return sim, s, m
}
