package connector

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// stepUntil steps the slot's events one at a time until done holds; the
// events not stepped by then stay pending in *held, in order.
func stepUntil(t *testing.T, s *slot, m *machine, held *[]any, what string, done func() bool) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for !done() {
		*held = append(*held, s.box.take()...)
		if len(*held) > 0 {
			ev := (*held)[0]
			*held = (*held)[1:]
			if err := m.step(ev); err != nil {
				t.Fatal(err)
			}
			continue
		}
		select {
		case <-s.box.wake:
		case <-deadline:
			t.Fatalf("%s never happened (state %s)", what, m.state)
		}
	}
}

func isClosingWarning(sock *socket) func(any) bool {
	return func(ev any) bool {
		se, ok := ev.(socketEvent)
		return ok && se.sock == sock && se.reason == ReasonClosing && !se.ended
	}
}

// TestWarnedRotationCandidateIsSwappedWhenItTakesOver: Genesys warns the
// replacement socket of a rotation, adopted but not yet taken over, that
// it closes it soon. Once that socket takes over, the slot must replace
// it in turn at once, by a closing swap, rather than stay live on it until
// Genesys closes it and the slot reconnects with a gap. The warning may
// also be read before the machine hears the rotation's dial answer.
func TestWarnedRotationCandidateIsSwappedWhenItTakesOver(t *testing.T) {
	for _, tc := range []struct {
		name  string
		early bool
	}{{"warned once adopted", false}, {"warned before its dial's answer", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
			s.c.opts.HandoverGrace = 100 * time.Millisecond // no event proves the candidate: the grace does
			var held []any
			m.connect()
			if err := m.step(nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evConnected); return ok })); err != nil {
				t.Fatal(err)
			}
			if m.state != live {
				t.Fatalf("connected slot is %s", m.state)
			}
			m.rotate()
			rotated := nextEvent(t, s, m, &held, func(ev any) bool { ev2, ok := ev.(evConnected); return ok && ev2.rotation }).(evConnected)
			if rotated.res.err != nil {
				t.Fatal(rotated.res.err)
			}
			cand, next := rotated.res.sock, rotated.res.ch.ID
			if tc.early {
				if err := sim.SendClosingWarning(next, time.Hour); err != nil {
					t.Fatal(err)
				}
				warning := nextEvent(t, s, m, &held, isClosingWarning(cand))
				held = append(append(held, warning), rotated)
			} else {
				held = append(held, rotated)
				stepUntil(t, s, m, &held, "the candidate adopted", func() bool { return m.ho != nil && m.ho.cand == cand })
				if err := sim.SendClosingWarning(next, time.Hour); err != nil {
					t.Fatal(err)
				}
				held = append(held, nextEvent(t, s, m, &held, isClosingWarning(cand)))
			}
			stepUntil(t, s, m, &held, "the warned candidate taking over", func() bool { return m.sock == cand && m.rotation() == nil })
			if m.state != handover {
				t.Fatalf("the warned replacement took over and the slot is %s on it, no swap under way: Genesys closes it soon and the slot reconnects with a gap", m.state)
			}
			stepUntil(t, s, m, &held, "a fresh socket taking over from the warned one", func() bool {
				return m.state == live && m.sock != nil && m.sock != cand
			})
			if m.sock.channel.ID != next {
				t.Fatalf("the slot's socket is on channel %s, want the replacement %s", m.sock.channel.ID, next)
			}
		})
	}
}

// stepTo steps the slot's events one at a time until it meets one want
// accepts, which it returns unstepped. Those hold accepts are not stepped
// but set aside in *kept.
func stepTo(t *testing.T, s *slot, m *machine, held, kept *[]any, hold, want func(any) bool) any {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		*held = append(*held, s.box.take()...)
		if len(*held) == 0 {
			select {
			case <-s.box.wake:
			case <-deadline:
				t.Fatalf("the awaited event never came (state %s)", m.state)
			}
			continue
		}
		ev := (*held)[0]
		*held = (*held)[1:]
		switch {
		case want(ev):
			return ev
		case hold(ev):
			*kept = append(*kept, ev)
		default:
			if err := m.step(ev); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestWarnedSwapCandidateIsSwappedWhenItTakesOver: the same for a closing
// swap. Genesys warns the second socket on the channel too, before the
// machine steps the first one's end; once the second takes over, it is
// replaced in turn.
func TestWarnedSwapCandidateIsSwappedWhenItTakesOver(t *testing.T) {
	sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
	s.c.opts.HandoverGrace = time.Hour // the candidate takes over when the old socket ends
	var held, oldEnd []any
	m.connect()
	if err := m.step(nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evConnected); return ok })); err != nil {
		t.Fatal(err)
	}
	old, chID := m.sock, m.cur.info.ID
	if err := sim.SendClosingWarning(chID, time.Hour); err != nil {
		t.Fatal(err)
	}
	// The old socket's end (Genesys drops it for the second one) is set
	// aside until the candidate is adopted and warned.
	oldEnded := func(ev any) bool { se, ok := ev.(socketEvent); return ok && se.sock == old && se.ended }
	replaced := stepTo(t, s, m, &held, &oldEnd, oldEnded, func(ev any) bool { _, ok := ev.(evReplaced); return ok })
	if err := m.step(replaced); err != nil {
		t.Fatal(err)
	}
	if m.sock != old || m.ho == nil || m.ho.cand == nil {
		t.Fatalf("no swap candidate beside the old socket (state %s)", m.state)
	}
	cand := m.ho.cand
	if err := sim.SendClosingWarning(chID, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := m.step(stepTo(t, s, m, &held, &oldEnd, oldEnded, isClosingWarning(cand))); err != nil {
		t.Fatal(err)
	}
	<-old.done // its reader has reported its end
	held = append(held, s.box.take()...)
	var rest []any
	for _, ev := range held {
		if oldEnded(ev) {
			oldEnd = append(oldEnd, ev)
		} else {
			rest = append(rest, ev)
		}
	}
	held = append(oldEnd, rest...)
	stepUntil(t, s, m, &held, "the warned candidate taking over", func() bool { return m.sock == cand })
	if m.state != handover {
		t.Fatalf("the warned swap socket took over and the slot is %s on it, no swap under way: Genesys closes it soon and the slot reconnects with a gap", m.state)
	}
	stepUntil(t, s, m, &held, "a fresh socket taking over from the warned one", func() bool {
		return m.state == live && m.sock != nil && m.sock != cand
	})
}

// TestOldSocketWarnedDuringRotationIsSwapped: Genesys warns the slot's
// socket while a rotation cannot make its replacement (503s; the retry
// backs off up to 30 s, and may outlast the socket). The slot must replace
// the socket at once on its own channel rather than leave it to close with
// no replacement, then rotate after. The warning may come while the
// rotation backs off or while its job is out.
func TestOldSocketWarnedDuringRotationIsSwapped(t *testing.T) {
	for _, tc := range []struct {
		name   string
		jobOut bool
	}{{"while the rotation backs off", false}, {"while the rotation's job is out", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			sim, s, m := newTestMachine(t, slog.New(slog.DiscardHandler))
			s.c.api.maxAttempts = 1 // a 503 fails the rotation's job at once
			var held []any
			m.connect()
			if err := m.step(nextEvent(t, s, m, &held, func(ev any) bool { _, ok := ev.(evConnected); return ok })); err != nil {
				t.Fatal(err)
			}
			old, chID := m.sock, m.cur.info.ID
			sim.AddFault(simulator.Fault{Method: http.MethodPost, Path: simulator.RouteChannels, Status: http.StatusServiceUnavailable, Times: -1})
			m.rotate()
			failed := nextEvent(t, s, m, &held, func(ev any) bool { ev2, ok := ev.(evConnected); return ok && ev2.rotation }).(evConnected)
			if failed.res.err == nil {
				t.Fatal("the rotation made its replacement despite the 503s")
			}
			if !tc.jobOut {
				held = append(held, failed)
				stepUntil(t, s, m, &held, "the rotation backing off", func() bool { return m.rotation() != nil && !m.ho.rot.busy })
			}
			if err := sim.SendClosingWarning(chID, time.Hour); err != nil {
				t.Fatal(err)
			}
			held = append(held, nextEvent(t, s, m, &held, isClosingWarning(old)))
			if tc.jobOut {
				held = append(held, failed)
			}
			stepUntil(t, s, m, &held, "the warning and the rotation's answer stepped", func() bool {
				return len(held) == 0 && (m.rotation() == nil || !m.ho.rot.busy)
			})
			if m.state != handover || m.ho.rot != nil {
				kind := "none"
				if m.ho != nil {
					kind = m.ho.kind()
				}
				t.Fatalf("the slot is %s (handover: %s) with its socket warned and the rotation backing off: no second socket is dialled before Genesys closes it", m.state, kind)
			}
			stepUntil(t, s, m, &held, "a fresh socket taking over from the warned one", func() bool {
				return m.state == live && m.sock != nil && m.sock != old
			})
			if m.sock.channel.ID != chID {
				t.Fatalf("the fresh socket is on channel %s, want the slot's %s", m.sock.channel.ID, chID)
			}
			if m.timers[tRotate].t == nil {
				t.Fatal("the rotation put off for the swap is never tried again")
			}
		})
	}
}

// TestWarnedReplacementTakesOverWithoutGap: end to end, Genesys warns a
// rotation's replacement socket while the handover waits for its
// subscriptions to deliver (wired 1 s late), and closes it 3 s later.
// Every event must reach a socket: the warned socket is replaced on its
// channel before Genesys closes it, not redialled after.
func TestWarnedReplacementTakesOverWithoutGap(t *testing.T) {
	t.Parallel()
	// The rotation starts 2 s before the first channel's end.
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1, ChannelLifetime: 12 * time.Second})
	rec := newRecorder()
	topics := fixedTopics(sim, 1)
	reconnects := &reconnectCounts{n: map[string]int{}}
	c, done := runWith(t, sim, topics, rec, func(o *Options) { o.Observer = reconnects })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 10*time.Second, "the first channel receiving", func(s simulator.Snapshot) bool {
		return len(s.Channels) == 1 && s.Channels[0].Pending == 0
	})
	first := sim.Channels()[0].ID
	sim.SetSubscribeDelay(time.Second)
	stop := make(chan struct{})
	emitted := emitUntil(sim, topics, 2*time.Millisecond, stop)
	var next string
	waitSim(t, sim, 30*time.Second, "the replacement's socket up", func(s simulator.Snapshot) bool {
		if len(s.Channels) < 2 || !s.Channels[1].Connected {
			return false
		}
		next = s.Channels[1].ID
		return true
	})
	if ch, _ := sim.Snapshot().Channel(next); ch.Pending == 0 {
		t.Fatal("the replacement receives already: the warning would not reach a candidate")
	}
	if err := sim.SendClosingWarning(next, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	waitSim(t, sim, 30*time.Second, "a second socket on the replacement, the only one", func(s simulator.Snapshot) bool {
		old, ok := s.Channel(first)
		ch, _ := s.Channel(next)
		return (!ok || !old.Connected) && s.Sockets == 1 && ch.Connected && ch.Connects >= 2
	})
	// A few events more, on the slot's socket alone.
	time.Sleep(100 * time.Millisecond)
	close(stop)
	evs := <-emitted
	var lost int
	for _, ev := range evs {
		if ev.Delivered == 0 {
			lost++
		}
	}
	ch, _ := sim.Snapshot().Channel(next)
	counts := reconnects.snapshot()
	t.Logf("%d events across the rotation, %d reached no socket; %d connects on the replacement; reconnects %v", len(evs), lost, ch.Connects, counts)
	if lost > 0 {
		t.Fatalf("%d of %d events reached no socket after the replacement was warned", lost, len(evs))
	}
	// A gap of a redial may lose no event at this rate, but it is one:
	// every reconnect must be a planned one.
	for reason, n := range counts {
		if reason != ReasonRotate && reason != ReasonClosing {
			t.Fatalf("the slot lost its socket %d times (%s) after the replacement was warned, then redialled: a gap (reconnects %v)", n, reason, counts)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := rec.waitAll(ctx, evs); err != nil {
		t.Fatal(err)
	}
}

// reconnectCounts is an Observer that counts reconnects by reason.
type reconnectCounts struct {
	nopObserver
	mu sync.Mutex
	n  map[string]int
}

func (r *reconnectCounts) Reconnect(reason string) {
	r.mu.Lock()
	r.n[reason]++
	r.mu.Unlock()
}

func (r *reconnectCounts) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.n)
}
