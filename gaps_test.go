package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/simulator"
)

// storedGaps reads the whole stream once the sidecar has stopped and splits
// it into gap records and the rest.
func (h *harness) storedGaps() (gaps []gapBody, rest []storedMsg) {
	h.t.Helper()
	if err := h.stop(); err != nil {
		h.t.Fatalf("sidecar stopped with %v", err)
	}
	for _, m := range h.collectAll("GENESYS", int(h.streamMsgs("GENESYS"))) {
		if m.Header.Get(headerGap) != "true" {
			rest = append(rest, m)
			continue
		}
		if m.Subject != "genesys.gcnats.gap" {
			h.t.Errorf("gap record on %s, want genesys.gcnats.gap", m.Subject)
		}
		if m.Header.Get("Nats-Msg-Id") == "" {
			h.t.Errorf("gap record without a Nats-Msg-Id: %v", m.Header)
		}
		var g gapBody
		if err := json.Unmarshal(m.Data, &g); err != nil {
			h.t.Fatalf("gap record %s: %v", m.Data, err)
		}
		gaps = append(gaps, g)
	}
	return gaps, rest
}

// TestUnplannedLossIsOneGapRecord drops the socket without warning, stalls
// it until the watchdog ends it, or ends its channel, while events flow:
// the stream must
// hold exactly one gap record, and its interval must hold every event that
// reached no socket.
func TestUnplannedLossIsOneGapRecord(t *testing.T) {
	for _, tc := range []struct {
		name      string
		inject    func(*simulator.Server, string) error
		recovered func(*harness, simulator.ChannelInfo, simulator.Snapshot) bool
		reason    string
		wiredLate bool // the new channel's subscriptions deliver 300 ms late
	}{
		{"abrupt close", (*simulator.Server).CloseSocket, sameChannelBack, "closed", false},
		{"silent stall", (*simulator.Server).StallSocket, sameChannelBack, "stall", false},
		{"channel 404", (*simulator.Server).ExpireChannel, replaced, "gone", false},
		{"channel evicted", (*simulator.Server).EvictChannel, replaced, "gone", false},
		// Genesys takes a moment to wire a new channel's subscriptions:
		// the new socket's pong comes before its events do.
		{"channel 404, subscriptions wired late", func(s *simulator.Server, id string) error {
			s.SetSubscribeDelay(300 * time.Millisecond)
			return s.ExpireChannel(id)
		}, replaced, "gone", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := faultHarness(t, simulator.Options{}, nil)
			h.start(faultTopicCount)
			first := h.onlyChannel()
			// Every topic by name, whether a channel holds it or not.
			em := startEmitter(h.sim, 5*time.Millisecond, first.Topics...)
			em.waitMore(h, 30)
			if !tc.wiredLate {
				// Redials refused for a while: the gap outlasts a few
				// rounds of events whatever the fault.
				h.sim.RefuseDials(300 * time.Millisecond)
			}
			if err := tc.inject(h.sim, first.ID); err != nil {
				t.Fatal(err)
			}
			h.waitSim("recovery", func(s simulator.Snapshot) bool { return tc.recovered(h, first, s) })
			em.waitMore(h, 60)
			events := em.finish()
			sc := h.sc
			gaps, rest := h.storedGaps()
			if len(gaps) != 1 {
				t.Fatalf("%d gap records, want 1: %+v\n%s", len(gaps), gaps, h.logs)
			}
			g := gaps[0]
			if g.Reason != tc.reason || !g.To.After(g.From) || len(g.Topics) != faultTopicCount || g.Sidecar == "" {
				t.Errorf("gap record %+v: want reason %q, from before to, %d topics, a sidecar", g, tc.reason, faultTopicCount)
			}
			lost := 0
			for _, ev := range events {
				if ev.Delivered > 0 {
					continue
				}
				lost++
				if ev.At.Before(g.From) || ev.At.After(g.To) {
					t.Errorf("event %d (%s) reached no socket at %s, outside the gap [%s, %s]",
						ev.Seq, ev.Topic, ev.At.Format(time.RFC3339Nano), g.From.Format(time.RFC3339Nano), g.To.Format(time.RFC3339Nano))
				}
			}
			if lost == 0 {
				t.Errorf("no event reached no socket: the fault left no gap to report")
			}
			if acc := account(events, rest, func(ev simulator.Event) bool { return ev.Delivered == 0 }); acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
				t.Errorf("%v; lost %v", acc, acc.lost)
			}
			if got := counterValue(sc.metrics.gaps.WithLabelValues(tc.reason)); got != 1 {
				t.Errorf("gaps_total{reason=%q} = %v, want 1", tc.reason, got)
			}
			if got := counterValue(sc.metrics.gapSeconds); got <= 0 {
				t.Errorf("gap_seconds_total = %v, want > 0", got)
			}
			t.Logf("gap %s for %s; %d events reached no socket", g.Reason, g.To.Sub(g.From), lost)
		})
	}
}

// TestPlannedHandoversWriteNoGap rotates short-lived channels and answers
// closing warnings for about 20 s: a receiving socket is kept throughout,
// so no gap record may be written.
//
// Genesys closes a warned socket about a minute after the warning; a
// second here is still far harsher. With 200 ms, one run in four on a
// loaded 2-core machine lost 12 events for 63 ms: the socket closed before
// its replacement was up, and the gap record said so.
func TestPlannedHandoversWriteNoGap(t *testing.T) {
	const closeAfter = time.Second
	h := faultHarness(t, simulator.Options{ChannelLifetime: 3 * time.Second}, nil)
	h.start(faultTopicCount)
	em := startEmitter(h.sim, 5*time.Millisecond)
	end := time.Now().Add(20 * time.Second)
	warnings := 0
	for time.Now().Before(end) {
		em.waitMore(h, 1500) // about 1.3 s of events
		for _, c := range h.sim.Snapshot().Channels {
			if c.Connected && !c.Stalled && len(c.Topics) == faultTopicCount {
				if err := h.sim.SendClosingWarning(c.ID, closeAfter); err == nil {
					warnings++
				}
				break
			}
		}
	}
	events := em.finish()
	sc := h.sc
	gaps, rest := h.storedGaps()
	if len(gaps) != 0 {
		t.Errorf("%d gap records after planned handovers only: %+v\n%s", len(gaps), gaps, h.logs)
	}
	for _, ev := range events {
		if ev.Delivered == 0 {
			t.Errorf("event %d (%s) reached no socket: a planned handover left a gap", ev.Seq, ev.Topic)
		}
	}
	if acc := account(events, rest, nil); acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		t.Errorf("%v; lost %v", acc, acc.lost)
	}
	rotations := counterValue(sc.metrics.reconnects.WithLabelValues("rotate"))
	if rotations < 3 || warnings < 5 {
		t.Errorf("%v rotations and %d closing warnings: too few handovers to show anything", rotations, warnings)
	}
	if got := counterValue(sc.metrics.gapSeconds); got != 0 {
		t.Errorf("gcnats_gap_seconds_total = %v, want 0", got)
	}
	t.Logf("%d events, %v rotations, %d closing warnings, no gap", len(events), rotations, warnings)
}

// gapsReported is how many gap records the sidecar published.
func gapsReported(sc *sidecar) int {
	n := 0
	for _, reason := range []string{connector.ReasonClosed, connector.ReasonStall, connector.ReasonGone, connector.ReasonRefused} {
		n += int(counterValue(sc.metrics.gaps.WithLabelValues(reason)))
	}
	return n
}

// TestRefusedTopicAcceptedLaterIsAGapRecord: a topic Genesys refuses when
// a new channel subscribes (a permission taken away) receives nothing until
// a later subscription is accepted; that interval is a gap record for that
// topic alone, besides the one for the channel lost.
func TestRefusedTopicAcceptedLaterIsAGapRecord(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_TOPIC_REFRESH": "1s"})
	h.start(faultTopicCount)
	refused := "v2.users." + h.sim.Users()[0].ID + ".presence"
	first := h.onlyChannel()
	// Every topic by name: a round of events covers the refused topic
	// too, subscribed or not.
	em := startEmitter(h.sim, 5*time.Millisecond, first.Topics...)
	em.waitMore(h, 30)
	h.sim.RejectTopics(http.StatusForbidden, "", refused)
	if err := h.sim.ExpireChannel(first.ID); err != nil {
		t.Fatal(err)
	}
	h.waitSim("a new channel without the refused topic", func(s simulator.Snapshot) bool {
		_, alive := s.Channel(first.ID)
		return !alive && s.Topics(true) == faultTopicCount-1
	})
	em.waitMore(h, 60)
	h.sim.AcceptTopics(refused)
	h.waitSim("the refused topic subscribed at a topic refresh", func(s simulator.Snapshot) bool {
		return s.Topics(true) == faultTopicCount
	})
	em.waitMore(h, 60)
	events := em.finish()
	sc := h.sc
	gaps, rest := h.storedGaps()
	var refusal *gapBody
	for i, g := range gaps {
		if g.Reason == connector.ReasonRefused {
			if refusal != nil {
				t.Errorf("a second refusal gap: %+v", g)
			}
			refusal = &gaps[i]
		}
	}
	if len(gaps) != 2 || refusal == nil {
		t.Fatalf("%d gap records, want one for the channel gone and one for the refusal: %+v\n%s", len(gaps), gaps, h.logs)
	}
	if !slices.Equal(refusal.Topics, []string{refused}) || !refusal.To.After(refusal.From) {
		t.Errorf("refusal gap %+v: want %s alone, from before to", *refusal, refused)
	}
	lost, lostRefused := 0, 0
	for _, ev := range events {
		if ev.Delivered > 0 {
			continue
		}
		lost++
		if ev.At.After(refusal.From) && ev.Topic == refused {
			lostRefused++
		}
		if !inSomeGap(gaps, ev) {
			t.Errorf("event %d (%s) reached no socket at %s, in no gap record of its topic: %+v",
				ev.Seq, ev.Topic, ev.At.Format(time.RFC3339Nano), gaps)
		}
	}
	if lostRefused == 0 {
		t.Errorf("no event of the refused topic was lost after the refusal: nothing to show")
	}
	if acc := account(events, rest, func(ev simulator.Event) bool { return ev.Delivered == 0 }); acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		t.Errorf("%v; lost %v", acc, acc.lost)
	}
	if got := counterValue(sc.metrics.gaps.WithLabelValues(connector.ReasonRefused)); got != 1 {
		t.Errorf("gaps_total{reason=refused} = %v, want 1", got)
	}
	t.Logf("refusal gap for %s; %d events reached no socket, %d of the refused topic after its refusal", refusal.To.Sub(refusal.From), lost, lostRefused)
}

// inSomeGap says whether a gap record names ev's topic and holds its time.
func inSomeGap(gaps []gapBody, ev simulator.Event) bool {
	for _, g := range gaps {
		if slices.Contains(g.Topics, ev.Topic) && !ev.At.Before(g.From) && !ev.At.After(g.To) {
			return true
		}
	}
	return false
}
