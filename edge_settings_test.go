package main

import (
	"log/slog"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/publisher"
)

func TestSettingsEdge(t *testing.T) {
	env := validEnv()
	env["GCNATS_LEAF_REMOTE"] = "nats-leaf://hub-a:7422, nats-leaf://hub-b:7422"
	env["HOSTNAME"] = "Contact-Centre-App-7d9f.x"
	env["GCNATS_LEAF_PASSWORD_FILE"] = writeFile(t, "pw", "leaf-secret\n")
	env["GCNATS_LEAF_USER"] = "edge"
	env["GCNATS_HUB_STREAM"] = "GENESYS_ALL"
	s, err := loadSettings(env)
	if err != nil {
		t.Fatal(err)
	}
	if s.JSDomain != "contact-centre-app-7d9f_x" {
		t.Errorf("domain %q derived from HOSTNAME, want contact-centre-app-7d9f_x", s.JSDomain)
	}
	if s.LeafPassword != "leaf-secret" || s.HubDomain != "hub" || len(s.leafURLs()) != 2 {
		t.Errorf("password %q, hub domain %q, urls %v", s.LeafPassword, s.HubDomain, s.leafURLs())
	}
	// The hub's window covers the buffer: the local max age by default.
	if s.HubDedupWindow != 168*time.Hour {
		t.Errorf("hub dedup window %s, want the local max age 168h", s.HubDedupWindow)
	}
	for _, tc := range []struct{ maxAge, window, want string }{
		{"24h", "", "24h0m0s"}, {"24h", "1h", "1h0m0s"}, {"0", "", "168h0m0s"}, {"0", "720h", "720h0m0s"},
	} {
		e := maps.Clone(env)
		e["GCNATS_STREAM_MAX_AGE"], e["GCNATS_HUB_DEDUP_WINDOW"] = tc.maxAge, tc.window
		if s, err := loadSettings(e); err != nil || s.HubDedupWindow.String() != tc.want {
			t.Errorf("max age %s, hub window %q: got %s, %v; want %s", tc.maxAge, tc.window, s.HubDedupWindow, err, tc.want)
		}
	}
	env["GCNATS_JS_DOMAIN"] = "site-a"
	if s, err = loadSettings(env); err != nil || s.JSDomain != "site-a" {
		t.Errorf("GCNATS_JS_DOMAIN=site-a: domain %q, %v", s.JSDomain, err)
	}

	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "NATS_URL": "nats://nats:4222"}, "GCNATS_LEAF_REMOTE: the embedded server is what joins the hub"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "hub:7422"}, "GCNATS_LEAF_REMOTE: expected URLs"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://edge:s3cret@hub:7422"}, "GCNATS_LEAF_REMOTE: credentials in the URL"},
		{map[string]string{"GCNATS_LEAF_USER": "edge"}, "GCNATS_LEAF_USER: set without GCNATS_LEAF_REMOTE"},
		{map[string]string{"GCNATS_HUB_STREAM": "HUB"}, "GCNATS_HUB_STREAM: set without GCNATS_LEAF_REMOTE"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_JS_DOMAIN": "a.b"}, "GCNATS_JS_DOMAIN: \"a.b\""},
		{map[string]string{"GCNATS_JS_DOMAIN": "edge", "NATS_URL": "nats://nats:4222"}, "GCNATS_JS_DOMAIN: names the embedded server's domain"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_JS_DOMAIN": "hub", "GCNATS_HUB_STREAM": "ALL"}, "GCNATS_HUB_DOMAIN: \"hub\" is also the edge's"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_HUB_STREAM": "A.B"}, "GCNATS_HUB_STREAM: \"A.B\" is not a valid stream name"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_HUB_DEDUP_WINDOW": "1h"}, "GCNATS_HUB_DEDUP_WINDOW: set without GCNATS_HUB_STREAM"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_HUB_STREAM": "ALL", "GCNATS_HUB_DEDUP_WINDOW": "-1s"}, "GCNATS_HUB_DEDUP_WINDOW: must not be negative"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_HUB_STREAM": "ALL", "GCNATS_STREAM_MAX_AGE": "24h", "GCNATS_HUB_DEDUP_WINDOW": "25h"}, "GCNATS_HUB_DEDUP_WINDOW: longer than GCNATS_STREAM_MAX_AGE"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_LEAF_CERT": "/x"}, "GCNATS_LEAF_CERT and GCNATS_LEAF_KEY: set both or neither"},
		{map[string]string{"GCNATS_LEAF_REMOTE": "nats-leaf://hub:7422", "GCNATS_LEAF_CA": "/no/such/ca.pem"}, "GCNATS_LEAF_CA: cannot read /no/such/ca.pem"},
	} {
		env := validEnv()
		maps.Copy(env, tc.env)
		_, err := loadSettings(env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: got %v, want %q", tc.env, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("a password reached the error: %v", err)
		}
	}
}

// TestModeLogLine checks the one start-up line that says where events go,
// for each mode, without the credentials a URL may carry.
func TestModeLogLine(t *testing.T) {
	e, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	for _, tc := range []struct {
		embedded *publisher.Embedded
		url      string
		want     []string
	}{
		{nil, "nats://gcnats:s3cret@nats-0:4222,nats://nats-1:4222", []string{"mode=external", "servers=nats://redacted@nats-0:4222,nats://nats-1:4222", "replicas=3"}},
		{e, e.ClientURL(), []string{"mode=embedded", "url=" + e.ClientURL(), "store=/data"}},
	} {
		var logs syncBuffer
		sc := &sidecar{settings: Settings{StreamReplicas: 3, StoreDir: "/data"}, log: slog.New(slog.NewTextHandler(&logs, nil)), embedded: tc.embedded}
		sc.logMode(tc.url)
		line := logs.full()
		if strings.Count(line, "\n") != 1 || strings.Contains(line, "s3cret") {
			t.Errorf("want one line without the password: %q", line)
		}
		for _, w := range tc.want {
			if !strings.Contains(line, w) {
				t.Errorf("%q lacks %q", line, w)
			}
		}
	}
}

// TestHubWindowWarning checks the start-up warning an edge gives when the
// hub stream's duplicate window is shorter than its buffer, and only then.
func TestHubWindowWarning(t *testing.T) {
	for _, tc := range []struct {
		maxAge, window time.Duration
		want           string // "" for no warning
	}{
		{168 * time.Hour, 168 * time.Hour, ""},
		{24 * time.Hour, 48 * time.Hour, ""},
		{168 * time.Hour, 2 * time.Minute, "hub_dedup_window=2m0s buffer=168h0m0s"},
		{0, 168 * time.Hour, "hub_dedup_window=168h0m0s buffer=forever"},
	} {
		var logs syncBuffer
		sc := &sidecar{settings: Settings{HubStream: "GENESYS_ALL", StreamMaxAge: tc.maxAge}, log: slog.New(slog.NewTextHandler(&logs, nil))}
		sc.checkHubWindow(tc.window)
		line := logs.full()
		switch {
		case tc.want == "" && line != "":
			t.Errorf("max age %s, window %s: warned %q", tc.maxAge, tc.window, line)
		case tc.want != "" && (!strings.Contains(line, "level=WARN") || !strings.Contains(line, tc.want) || !strings.Contains(line, "once per edge")):
			t.Errorf("max age %s, window %s: %q lacks a warning with %q", tc.maxAge, tc.window, line, tc.want)
		}
	}
}
