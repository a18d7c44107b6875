package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

const e2eRoutes = `
routes:
  - topic: v2.users.*.routingStatus
    subject: "{prefix}.agents.{1}.routing"
    filter:
      - field: routingStatus.status
        not_equals: OFF_QUEUE
  - topic: v2.detail.events.conversation.*.wrapup
    subject: "{prefix}.wrapups.{1}"
`

// TestEndToEnd runs a simulated org → gcnats → a real JetStream server and
// checks every event the org generated: stored exactly once, on the
// expected subject, with the headers the README lists and the eventBody bytes as
// payload; filtered events absent and counted; no control frame published.
func TestEndToEnd(t *testing.T) {
	conversations := []string{"3f0c1a9e-4b52-4d6e-9a3c-0b7e5d2f8a11", "9b2d7c40-1e8f-4a35-b6d9-52c3e1f0a7b4"}
	topics := []string{
		"v2.routing.queues.*.conversations",
		"v2.routing.queues.*.conversations.calls",
		"v2.routing.queues.*.users",
		"v2.users.*.presence",
		"v2.users.*.routingStatus",
		"v2.detail.events.conversation." + conversations[0] + ".wrapup",
		"v2.detail.events.conversation." + conversations[1] + ".wrapup",
	}
	h := newHarness(t, simulator.Options{Queues: 3, Users: 4, HeartbeatInterval: 20 * time.Millisecond, Seed: 7}, map[string]string{
		"GCNATS_TOPICS":      strings.Join(topics, ","),
		"GCNATS_ROUTES_FILE": writeFile(t, "routes.yaml", e2eRoutes),
	})
	const subscribed = 3*3 + 4*2 + 2
	h.start(subscribed)

	events := h.sim.EmitN(12 * subscribed)
	if len(events) != 12*subscribed {
		t.Fatalf("simulator emitted %d events, want %d", len(events), 12*subscribed)
	}
	wantSubject := map[uint64]string{}
	filtered := 0
	families := map[string]bool{}
	for _, ev := range events {
		if ev.Delivered == 0 {
			t.Fatalf("event %d was not delivered to a socket", ev.Seq)
		}
		tokens := strings.Split(ev.Topic, ".")
		switch {
		case strings.HasPrefix(ev.Topic, "v2.users.") && strings.HasSuffix(ev.Topic, ".routingStatus"):
			var body struct {
				RoutingStatus struct{ Status string } `json:"routingStatus"`
			}
			if err := json.Unmarshal(ev.Body, &body); err != nil {
				t.Fatal(err)
			}
			if body.RoutingStatus.Status == "OFF_QUEUE" {
				filtered++
				continue
			}
			wantSubject[ev.Seq] = "genesys.agents." + tokens[2] + ".routing"
		case strings.HasPrefix(ev.Topic, "v2.detail.events.conversation."):
			wantSubject[ev.Seq] = "genesys.wrapups." + tokens[4]
		default:
			wantSubject[ev.Seq] = "genesys." + ev.Topic
		}
		families[strings.Join(tokens[:2], ".")] = true
	}
	if filtered == 0 || filtered == 12*4 {
		t.Fatalf("%d of %d routingStatus events are OFF_QUEUE: the filter is not exercised both ways", filtered, 12*4)
	}
	if len(families) < 3 {
		t.Fatalf("events cover %d topic families, want 3: %v", len(families), families)
	}

	msgs := h.collect("GENESYS", len(wantSubject))
	heartbeatsBefore := h.sim.Stats().Heartbeats
	if err := h.stop(); err != nil {
		t.Fatalf("sidecar stopped with %v", err)
	}
	if heartbeatsBefore == 0 {
		t.Fatal("no heartbeat was sent during the test: control frames are not exercised")
	}
	if n := h.streamMsgs("GENESYS"); n != uint64(len(wantSubject)) {
		t.Fatalf("stream holds %d messages after shutdown, want %d (one per unfiltered event, no control frames)", n, len(wantSubject))
	}

	acc := account(events, msgs, func(ev simulator.Event) bool { _, want := wantSubject[ev.Seq]; return !want })
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		t.Fatalf("accounting: %v (lost seqs %v)", acc, acc.lost)
	}
	seen := map[string]bool{}
	for _, m := range msgs {
		corr := m.Header.Get("Genesys-Correlation-Id")
		ev, ok := h.sim.EventByCorrelationID(corr)
		if !ok {
			t.Fatalf("stored message with unknown correlation id %q", corr)
		}
		want, ok := wantSubject[ev.Seq]
		if !ok {
			t.Errorf("event %d (%s) was filtered but is stored", ev.Seq, ev.Topic)
			continue
		}
		seen[corr] = true
		if m.Subject != want {
			t.Errorf("event %d: subject %q, want %q", ev.Seq, m.Subject, want)
		}
		if !bytes.Equal(m.Data, ev.Body) {
			t.Errorf("event %d: payload differs from the eventBody bytes", ev.Seq)
		}
		if got := m.Header.Get("Genesys-Topic"); got != ev.Topic {
			t.Errorf("event %d: Genesys-Topic %q, want %q", ev.Seq, got, ev.Topic)
		}
		if got := m.Header.Get("Genesys-Version"); got != "2" {
			t.Errorf("event %d: Genesys-Version %q, want 2", ev.Seq, got)
		}
		if got, want := m.Header.Get("Nats-Msg-Id"), string(publisher.MsgID(nil, []byte(ev.Topic), []byte(ev.CorrelationID), ev.Body)); got != want {
			t.Errorf("event %d: Nats-Msg-Id %q, want %q", ev.Seq, got, want)
		}
		at, err := time.Parse(time.RFC3339Nano, m.Header.Get("Genesys-Received-At"))
		if err != nil {
			t.Errorf("event %d: Genesys-Received-At: %v", ev.Seq, err)
		} else if at.Before(ev.At.Add(-time.Second)) || at.After(time.Now()) {
			t.Errorf("event %d: Genesys-Received-At %s is not after it was sent at %s", ev.Seq, at, ev.At)
		}
	}
	if len(seen) != len(wantSubject) {
		t.Fatalf("%d distinct events stored, want %d", len(seen), len(wantSubject))
	}
	if got := counterValue(h.sc.metrics.filtered.WithLabelValues("v2.users.{id}.routingStatus")); int(got) != filtered {
		t.Errorf("filtered counter %v, want %d", got, filtered)
	}
	if got := counterValue(h.sc.metrics.received.WithLabelValues("v2.routing.queues.{id}.conversations")); int(got) != 12*3 {
		t.Errorf("received counter for queue conversations %v, want %d", got, 12*3)
	}
	t.Logf("end to end: %d events over %d topics, %d filtered, %d stored once each, 0 lost, 0 duplicated", len(events), subscribed, filtered, len(msgs))
}

// TestPayloadFrame checks GCNATS_PAYLOAD=frame: the whole frame, exactly
// as Genesys sent it, is the payload; the dedup id still hashes the event.
func TestPayloadFrame(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{"GCNATS_PAYLOAD": "frame"})
	h.start(faultTopicCount)
	events := h.sim.EmitN(2 * faultTopicCount)
	msgs := h.collect("GENESYS", len(events))
	for _, m := range msgs {
		ev, ok := h.sim.EventByCorrelationID(m.Header.Get("Genesys-Correlation-Id"))
		if !ok {
			t.Fatalf("unknown event stored")
		}
		if !bytes.Equal(m.Data, ev.Frame) {
			t.Fatalf("event %d: payload is not the frame", ev.Seq)
		}
		if got, want := m.Header.Get("Nats-Msg-Id"), string(publisher.MsgID(nil, []byte(ev.Topic), []byte(ev.CorrelationID), ev.Body)); got != want {
			t.Fatalf("event %d: Nats-Msg-Id %q, want the event's %q", ev.Seq, got, want)
		}
	}
	if acc := account(events, msgs, nil); acc.Lost+acc.Duplicated+acc.Unexpected != 0 {
		t.Fatal(acc)
	}
}

// TestEmbeddedServer runs the sidecar with no NATS_URL, as one pod alone:
// its own connection to its embedded server is in process (no loopback
// socket), apps in the pod read the events over TCP on
// GCNATS_EMBEDDED_LISTEN, and every event is stored once.
func TestEmbeddedServer(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, map[string]string{
		"NATS_URL":               "",
		"GCNATS_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)),
		"GCNATS_STORE_DIR":       t.TempDir(),
	})
	h.start(faultTopicCount)
	if got := h.sc.nc.ConnectedAddr(); got != "pipe" {
		t.Fatalf("the sidecar's connection to its embedded server goes to %q, want in process (%q)", got, "pipe")
	}
	var err error
	if h.nc, err = nats.Connect(h.sc.embedded.ClientURL()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	events := h.sim.EmitN(200 * faultTopicCount)
	if acc := account(events, h.collect("GENESYS", len(events)), nil); acc.Lost+acc.Duplicated+acc.Unexpected != 0 {
		t.Fatal(acc)
	}
}
