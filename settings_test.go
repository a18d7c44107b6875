package main

import (
	"maps"
	"strings"
	"testing"
	"time"
)

func validEnv() map[string]string {
	return map[string]string{
		"GENESYSCLOUD_REGION":             "eu-west-1",
		"GENESYSCLOUD_OAUTHCLIENT_ID":     "client-id",
		"GENESYSCLOUD_OAUTHCLIENT_SECRET": "client-secret-value",
		"GCNATS_TOPICS":                   "v2.routing.queues.*.conversations, v2.users.*.presence",
	}
}

func TestSettingsDefaults(t *testing.T) {
	s, err := loadSettings(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := Settings{
		Region: "eu-west-1", APIURL: "https://api.mypurecloud.ie",
		ClientID: "client-id", ClientSecret: "client-secret-value",
		Topics:   []string{"v2.routing.queues.*.conversations", "v2.users.*.presence"},
		StoreDir: "./data", EmbeddedListen: "127.0.0.1:4222", Stream: "GENESYS", SubjectPrefix: "genesys",
		StreamReplicas: 1, StreamMaxAge: 168 * time.Hour, DedupWindow: 2 * time.Minute, Payload: "event",
		HTTPAddr: ":8080", LogLevel: "info", LogFormat: "json", MaxChannels: 10, TopicRefresh: 5 * time.Minute,
		BufferBytes: 64 << 20, ShutdownTimeout: 20 * time.Second, HeartbeatTimeout: 75 * time.Second,
		HandoverGrace: 3 * time.Second,
	}
	if s.APIURL != want.APIURL || strings.Join(s.Topics, ",") != strings.Join(want.Topics, ",") ||
		s.StoreDir != want.StoreDir || s.EmbeddedListen != want.EmbeddedListen || s.Stream != want.Stream ||
		s.SubjectPrefix != want.SubjectPrefix || s.StreamReplicas != want.StreamReplicas ||
		s.StreamMaxAge != want.StreamMaxAge || s.DedupWindow != want.DedupWindow || s.Payload != want.Payload ||
		s.HTTPAddr != want.HTTPAddr || s.LogLevel != want.LogLevel || s.LogFormat != want.LogFormat ||
		s.MaxChannels != want.MaxChannels || s.TopicRefresh != want.TopicRefresh || s.BufferBytes != want.BufferBytes ||
		s.ShutdownTimeout != want.ShutdownTimeout || s.HeartbeatTimeout != want.HeartbeatTimeout ||
		s.HandoverGrace != want.HandoverGrace {
		t.Fatalf("defaults:\n got %+v\nwant %+v", s, want)
	}
}

func TestSettingsRegionsAndURLs(t *testing.T) {
	for region, api := range map[string]string{
		"eu-west-1":              "https://api.mypurecloud.ie",
		"mypurecloud.ie":         "https://api.mypurecloud.ie",
		"ap-southeast-2":         "https://api.mypurecloud.com.au",
		"US-EAST-1":              "https://api.mypurecloud.com",
		"usw2.pure.cloud":        "https://api.usw2.pure.cloud",
		"use2.us-gov-pure.cloud": "https://api.use2.us-gov-pure.cloud",
	} {
		env := validEnv()
		env["GENESYSCLOUD_REGION"] = region
		s, err := loadSettings(env)
		if err != nil || s.APIURL != api {
			t.Errorf("%s: %q, %v; want %s", region, s.APIURL, err, api)
		}
	}
	env := validEnv()
	env["GENESYSCLOUD_API_URL"] = "http://127.0.0.1:9080/"
	s, err := loadSettings(env)
	if err != nil || s.APIURL != "http://127.0.0.1:9080" {
		t.Errorf("API URL wins over region: %q, %v", s.APIURL, err)
	}
}

func TestSettingsSecretFiles(t *testing.T) {
	env := validEnv()
	delete(env, "GENESYSCLOUD_OAUTHCLIENT_SECRET")
	env["GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE"] = writeFile(t, "secret", "from-a-file\n")
	s, err := loadSettings(env)
	if err != nil || s.ClientSecret != "from-a-file" {
		t.Fatalf("secret %q, %v", s.ClientSecret, err)
	}
	env["GENESYSCLOUD_OAUTHCLIENT_SECRET"] = "both"
	if _, err := loadSettings(env); err == nil || !strings.Contains(err.Error(), "set one, not both") {
		t.Fatalf("both set: %v", err)
	}
}

// TestSettingsErrors checks that every bad value is refused with one line
// naming its variable and never echoing a secret.
func TestSettingsErrors(t *testing.T) {
	for _, tc := range []struct {
		set  map[string]string
		drop string
		want string
	}{
		{drop: "GENESYSCLOUD_REGION", want: "GENESYSCLOUD_REGION: not set"},
		{set: map[string]string{"GENESYSCLOUD_REGION": "mars-north-1"}, want: "GENESYSCLOUD_REGION: unknown region"},
		{set: map[string]string{"GENESYSCLOUD_API_URL": "ftp://x"}, want: "GENESYSCLOUD_API_URL"},
		{set: map[string]string{"GENESYSCLOUD_LOGIN_URL": "not a url"}, want: "GENESYSCLOUD_LOGIN_URL"},
		{drop: "GENESYSCLOUD_OAUTHCLIENT_ID", want: "GENESYSCLOUD_OAUTHCLIENT_ID: not set"},
		{drop: "GENESYSCLOUD_OAUTHCLIENT_SECRET", want: "GENESYSCLOUD_OAUTHCLIENT_SECRET: not set"},
		{set: map[string]string{"GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE": "/nonexistent/secret"}, want: "GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE"},
		{set: map[string]string{"GCNATS_TOPICS": " , "}, want: "GCNATS_TOPICS: not set"},
		{set: map[string]string{"GCNATS_ROUTES_FILE": "/nonexistent/routes.yaml"}, want: "GCNATS_ROUTES_FILE: cannot read"},
		{set: map[string]string{"NATS_CREDS": "/nonexistent/x.creds"}, want: "NATS_CREDS: cannot read"},
		{set: map[string]string{"NATS_CERT": "/etc/hostname"}, want: "NATS_CERT and NATS_KEY"},
		{set: map[string]string{"GCNATS_EMBEDDED_LISTEN": "4222"}, want: "GCNATS_EMBEDDED_LISTEN"},
		{set: map[string]string{"GCNATS_STREAM": "a.b"}, want: "GCNATS_STREAM"},
		{set: map[string]string{"GCNATS_SUBJECT_PREFIX": "a..b"}, want: "GCNATS_SUBJECT_PREFIX"},
		{set: map[string]string{"GCNATS_STREAM_REPLICAS": "7"}, want: "GCNATS_STREAM_REPLICAS"},
		{set: map[string]string{"GCNATS_STREAM_REPLICAS": "three"}, want: "GCNATS_STREAM_REPLICAS: expected a whole number"},
		{set: map[string]string{"GCNATS_STREAM_MAX_AGE": "a week"}, want: "GCNATS_STREAM_MAX_AGE: expected a duration"},
		{set: map[string]string{"GCNATS_DEDUP_WINDOW": "0s"}, want: "GCNATS_DEDUP_WINDOW"},
		{set: map[string]string{"GCNATS_DEDUP_WINDOW": "200h"}, want: "GCNATS_DEDUP_WINDOW: longer than GCNATS_STREAM_MAX_AGE"},
		{set: map[string]string{"GCNATS_PAYLOAD": "body"}, want: "GCNATS_PAYLOAD"},
		{set: map[string]string{"GCNATS_HTTP_ADDR": "8080"}, want: "GCNATS_HTTP_ADDR"},
		{set: map[string]string{"GCNATS_LOG_LEVEL": "loud"}, want: "GCNATS_LOG_LEVEL"},
		{set: map[string]string{"GCNATS_LOG_FORMAT": "xml"}, want: "GCNATS_LOG_FORMAT"},
		{set: map[string]string{"GCNATS_MAX_CHANNELS": "21"}, want: "GCNATS_MAX_CHANNELS"},
		{set: map[string]string{"GCNATS_MAX_CHANNELS": "1"}, want: "GCNATS_MAX_CHANNELS: 1; expected 2 to 20"},
		{set: map[string]string{"GCNATS_REST_RATE": "400"}, want: "GCNATS_REST_RATE: 400; expected 1 to 300"},
		{set: map[string]string{"GCNATS_REST_RATE": "0"}, want: "GCNATS_REST_RATE: 0; expected 1 to 300"},
		{set: map[string]string{"GCNATS_HANDOVER_GRACE": "0s"}, want: "GCNATS_HANDOVER_GRACE"},
		{set: map[string]string{"GCNATS_TOPIC_REFRESH": "10ms"}, want: "GCNATS_TOPIC_REFRESH"},
		{set: map[string]string{"GCNATS_BUFFER_BYTES": "lots"}, want: "GCNATS_BUFFER_BYTES: expected a size"},
		{set: map[string]string{"GCNATS_BUFFER_BYTES": "512KiB"}, want: "GCNATS_BUFFER_BYTES: expected at least 1MiB"},
		{set: map[string]string{"GCNATS_SHUTDOWN_TIMEOUT": "-1s"}, want: "GCNATS_SHUTDOWN_TIMEOUT"},
		{set: map[string]string{"GCNATS_HEARTBEAT_TIMEOUT": "1ms"}, want: "GCNATS_HEARTBEAT_TIMEOUT"},
	} {
		env := validEnv()
		delete(env, tc.drop)
		maps.Copy(env, tc.set)
		_, err := loadSettings(env)
		if err == nil {
			t.Errorf("%v: accepted, want %q", tc.set, tc.want)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") || strings.Contains(msg, "client-secret-value") {
			t.Errorf("%v: %q, want one line with %q and no secret", tc.set, msg, tc.want)
		}
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"67108864": 64 << 20, "64MiB": 64 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30, "10 MiB": 10 << 20} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q: %d, %v", in, b, err)
		}
	}
	for _, in := range []string{"", "-1", "1.5MiB", "MiB", "1TB"} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

// A newcomer with nothing set learns every required variable at once.
func TestSettingsNameEveryProblemAtOnce(t *testing.T) {
	_, err := loadSettings(map[string]string{"GCNATS_STREAM_REPLICAS": "three"})
	if err == nil {
		t.Fatal("empty environment accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"GENESYSCLOUD_REGION: not set",
		"GENESYSCLOUD_OAUTHCLIENT_ID: not set",
		"GENESYSCLOUD_OAUTHCLIENT_SECRET: not set",
		"GCNATS_TOPICS: not set",
		"GCNATS_STREAM_REPLICAS: expected a whole number",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name %q", msg, want)
		}
	}
	if strings.Count(msg, "GCNATS_STREAM_REPLICAS") != 1 || strings.Contains(msg, "\n") {
		t.Errorf("%q: want one line naming each variable once", msg)
	}
}
