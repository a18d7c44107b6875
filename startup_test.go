package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/simulator"
)

// TestStartupzWaitsForNATS starts gcnats before its NATS server: /healthz
// answers at once, but /startupz, which the native sidecar's startupProbe
// uses to hold the app back, answers 200 only once NATS accepts clients
// and the streams exist.
func TestStartupzWaitsForNATS(t *testing.T) {
	natsPort := natstest.FreePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", natstest.FreePort(t))
	h := faultHarness(t, simulator.Options{}, map[string]string{
		"NATS_URL":         fmt.Sprintf("nats://127.0.0.1:%d", natsPort),
		"GCNATS_HTTP_ADDR": strings.TrimPrefix(base, "http://"),
	})
	s, err := loadSettings(h.environ)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runSidecar(ctx, s, slog.New(slog.NewTextHandler(h.logs, nil)), sidecarHooks{})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("sidecar stopped with %v", err)
		}
	}()

	// Live while it waits for NATS, and saying it waits.
	waitUntil(t, "gcnats retrying NATS", func() bool { return strings.Contains(h.logs.full(), "nats not reachable; retrying") })
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Fatalf("/healthz %d while NATS is not up yet", code)
	}
	if code, body := get(t, base+"/startupz"); code != 503 || !strings.Contains(body, "connecting to NATS") {
		t.Fatalf("/startupz %d %q before NATS is up; want 503 saying it is connecting", code, body)
	}

	srv := startNATS(t, &server.Options{
		ServerName: "late", Host: "127.0.0.1", Port: natsPort, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(),
	})
	waitUntil(t, "/startupz answering 200", func() bool { code, _ := get(t, base+"/startupz"); return code == 200 })
	// The probe passing means the streams are there for the app.
	if code, body := get(t, base+"/startupz"); code != 200 || !strings.Contains(body, "streams exist") {
		t.Fatalf("/startupz %d %q", code, body)
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Stream(context.Background(), "GENESYS"); err != nil {
		t.Fatalf("/startupz passed before the stream existed: %v", err)
	}
}

// TestStreamRefusalStopsStartup: a refusal no wait can mend stops
// start-up at once with the server's reason, where a cluster that is only
// not ready yet is waited for (TestClusterStartWithoutQuorum).
func TestStreamRefusalStopsStartup(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    func(t *testing.T) map[string]string
		reason string
	}{
		{"three replicas on a server not clustered", func(*testing.T) map[string]string {
			return map[string]string{"GCNATS_STREAM_REPLICAS": "3"}
		}, "non-clustered"},
		{"a user denied the JetStream API", func(t *testing.T) map[string]string {
			srv := startNATS(t, &server.Options{
				ServerName: "no-api", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
				JetStream: true, StoreDir: t.TempDir(),
				Users: []*server.User{{Username: "gcnats", Password: "pw", Permissions: &server.Permissions{
					Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.>"}},
				}}},
			})
			return map[string]string{"NATS_URL": srv.ClientURL(), "NATS_USER": "gcnats", "NATS_PASSWORD": "pw"}
		}, `Permissions Violation for Publish to "$JS.API.STREAM.INFO.GENESYS"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := faultHarness(t, simulator.Options{}, tc.env(t))
			s, err := loadSettings(h.environ)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			err = runSidecar(ctx, s, slog.New(slog.NewTextHandler(h.logs, nil)), sidecarHooks{})
			if ctx.Err() != nil {
				t.Fatalf("start-up still waiting after %s for a stream the server refuses\n%s", testTimeout, h.logs)
			}
			if err == nil || !strings.Contains(err.Error(), "set up stream GENESYS") || !strings.Contains(err.Error(), tc.reason) {
				t.Fatalf("start-up ended with %v; want the stream set-up error with the server's reason (%s)", err, tc.reason)
			}
			if strings.Contains(h.logs.full(), "retrying") {
				t.Errorf("a refusal was retried\n%s", h.logs)
			}
		})
	}
}
