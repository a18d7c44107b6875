package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/simulator"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestHealthReadyMetrics checks the HTTP endpoints through a session:
// ready only with every channel connected and JetStream answering, each
// answer saying why, and metrics labelled by topic pattern, never by id.
func TestHealthReadyMetrics(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	base := "http://" + h.sc.httpAddr.String()

	if code, body := get(t, base+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "1 channels connected") {
		t.Fatalf("/readyz: %d %q", code, body)
	}
	h.sim.Emit()

	// JetStream gone: not ready, and the body says why; still live.
	addr := h.stopNATS()
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "jetstream") {
		t.Fatalf("/readyz without JetStream: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz during a NATS outage: %d; an outage is not a reason to restart", code)
	}
	h.startNATS(addr)

	// Every dial refused and the socket dropped: not ready, naming the channel.
	h.sim.SetRefuseDials(true)
	if err := h.sim.CloseSocket(h.onlyChannel().ID); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.sc.conn.Wait(ctx, func(s connector.Status) bool { ok, _ := s.Ready(); return !ok }); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || !strings.Contains(body, "channel 0 not connected") {
		t.Fatalf("/readyz with no socket: %d %q", code, body)
	}
	h.sim.SetRefuseDials(false)
	h.replica.waitReady(h)

	_, metrics := get(t, base+"/metrics")
	for _, want := range []string{
		`gcnats_frames_received_total{pattern="v2.routing.queues.{id}.conversations"}`,
		`gcnats_frames_received_total{pattern="v2.detail.events.conversation.{id}.wrapup"}`,
		`gcnats_reconnects_total{reason="closed"}`,
		`gcnats_channels_active 1`,
		`gcnats_topics_active 6`,
		`gcnats_heartbeat_age_seconds{channel="0"}`,
		`gcnats_publish_ack_seconds_bucket`,
		`gcnats_buffer_bytes`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, q := range h.sim.Queues() {
		if strings.Contains(metrics, q.ID) {
			t.Errorf("/metrics holds the queue id %s: labels must use patterns", q.ID)
		}
	}
}

// TestSecretsStaySecret runs a full session (start, events, a reconnect,
// a new channel, shutdown) and fails if the client secret, an access token
// or a channel id appears in any log line or metric.
func TestSecretsStaySecret(t *testing.T) {
	h := faultHarness(t, simulator.Options{}, nil)
	h.start(faultTopicCount)
	base := "http://" + h.sc.httpAddr.String()
	secrets := map[string]string{"client secret": h.sim.ClientSecret()}
	remember := func() {
		for _, tok := range h.sim.Tokens() {
			secrets["token issued "+tok.Issued.Format(time.RFC3339Nano)] = tok.Token
		}
		for _, c := range h.sim.Snapshot().Channels {
			secrets["channel created "+c.Created.Format(time.RFC3339Nano)] = c.ID
		}
	}
	remember()
	events := h.sim.EmitN(3 * faultTopicCount)
	ch := h.onlyChannel()
	if err := h.sim.CloseSocket(ch.ID); err != nil {
		t.Fatal(err)
	}
	h.waitSim("a reconnect", func(s simulator.Snapshot) bool {
		c, ok := s.Channel(ch.ID)
		return ok && c.Connects >= 2 && c.Connected
	})
	if err := h.sim.ExpireChannel(ch.ID); err != nil {
		t.Fatal(err)
	}
	h.waitSim("a new channel", func(s simulator.Snapshot) bool {
		_, alive := s.Channel(ch.ID)
		return !alive && s.Topics(true) == faultTopicCount
	})
	h.replica.waitReady(h)
	remember()
	_, metrics := get(t, base+"/metrics")
	h.collect("GENESYS", len(events))
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	logs := h.logs.full()
	if !strings.Contains(logs, "socket lost") || !strings.Contains(logs, "flushed every event") {
		t.Fatalf("the session did not log what it should; the test proves nothing:\n%s", logs)
	}
	for what, secret := range secrets {
		if strings.Contains(logs, secret) {
			t.Errorf("the %s appears in the logs", what)
		}
		if strings.Contains(metrics, secret) {
			t.Errorf("the %s appears in the metrics", what)
		}
	}
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets collected", len(secrets))
	}
}

// TestReadyzWhileStarting checks what /readyz says before NATS answers:
// the process is live, not ready, and says what it waits for.
func TestReadyzWhileStarting(t *testing.T) {
	sc := &sidecar{}
	sc.stop = context.Background()
	sc.phase.Store("connecting to NATS")
	rec := httptest.NewRecorder()
	sc.readyz(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "starting: connecting to NATS") {
		t.Fatalf("/readyz while starting: %d %q", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	sc.healthz(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("/healthz while starting: %d", rec.Code)
	}
}
