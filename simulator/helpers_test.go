package simulator_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

// sdk returns an SDK configuration pointed at the simulator and authorized
// with its client credentials, as the connector does it (no automatic token
// refresh: the SDK panics when a refresh fails).
func sdk(t testing.TB, sim *simulator.Server) *platformclientv2.Configuration {
	t.Helper()
	cfg := sdkUnauthorized(sim)
	if err := cfg.AuthorizeClientCredentials(sim.ClientID(), sim.ClientSecret()); err != nil {
		t.Fatalf("authorize: %v", err)
	}
	return cfg
}

func sdkUnauthorized(sim *simulator.Server) *platformclientv2.Configuration {
	// A config file path that does not exist keeps the SDK from watching one.
	cfg := platformclientv2.NewConfigurationWithConfigFile("/nonexistent/gcnats-sim-test.ini", false)
	cfg.BasePath = sim.URL()
	cfg.AutomaticTokenRefresh = false
	return cfg
}

func ctxT(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// createChannel makes a channel and subscribes it to topics through the SDK.
func createChannel(t testing.TB, cfg *platformclientv2.Configuration, topics ...string) platformclientv2.Channel {
	t.Helper()
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	ch, _, err := api.PostNotificationsChannels()
	if err != nil {
		t.Fatalf("create channel: %v", err)
	}
	if len(topics) > 0 {
		body := make([]platformclientv2.Channeltopic, len(topics))
		for i, tp := range topics {
			body[i] = platformclientv2.Channeltopic{Id: &tp}
		}
		if _, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, body, false); err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	}
	return *ch
}

// wsClient is a test's end of a notification socket.
type wsClient struct {
	t    testing.TB
	conn *websocket.Conn
}

func dial(t testing.TB, connectURI string) *wsClient {
	t.Helper()
	conn, resp, err := websocket.DefaultDialer.Dial(connectURI, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	t.Cleanup(func() { conn.Close() })
	return &wsClient{t: t, conn: conn}
}

// dialConnected dials and waits until the simulator has attached the socket.
func dialConnected(t testing.TB, sim *simulator.Server, ch platformclientv2.Channel) *wsClient {
	t.Helper()
	before := 0
	if info, ok := sim.Snapshot().Channel(*ch.Id); ok {
		before = info.Connects
	}
	c := dial(t, *ch.ConnectUri)
	waitFor(t, sim, func(s simulator.Snapshot) bool {
		info, ok := s.Channel(*ch.Id)
		return ok && info.Connected && info.Connects > before
	})
	return c
}

// frame is the union of every frame shape the socket carries.
type frame struct {
	TopicName     string          `json:"topicName"`
	Version       string          `json:"version"`
	EventBody     json.RawMessage `json:"eventBody"`
	Metadata      map[string]any  `json:"metadata"`
	Result        string          `json:"result"`
	Status        string          `json:"status"`
	Message       string          `json:"message"`
	CorrelationID string          `json:"correlationId"`
	Topics        []string        `json:"topics"`
	raw           []byte
}

func (c *wsClient) read() (frame, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, data, err := c.conn.ReadMessage()
	if err != nil {
		return frame{}, err
	}
	var f frame
	if err := json.Unmarshal(data, &f); err != nil {
		c.t.Fatalf("frame is not JSON: %v: %s", err, data)
	}
	f.raw = data
	return f, nil
}

func (c *wsClient) mustRead() frame {
	c.t.Helper()
	f, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

// next reads frames until one that is not a heartbeat.
func (c *wsClient) next() frame {
	c.t.Helper()
	for {
		f := c.mustRead()
		if f.TopicName == "channel.metadata" && strings.Contains(string(f.EventBody), "Heartbeat") {
			continue
		}
		return f
	}
}

func (c *wsClient) send(v any) {
	c.t.Helper()
	if err := c.conn.WriteJSON(v); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func waitFor(t testing.TB, sim *simulator.Server, cond func(simulator.Snapshot) bool) {
	t.Helper()
	if err := sim.Wait(ctxT(t), cond); err != nil {
		t.Fatalf("wait: %v", err)
	}
}

// call makes a raw HTTP request, for what the SDK hides (error bodies of
// OAuth, headers).
func call(t testing.TB, method, url, bearer string, body io.Reader) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if len(raw) > 0 {
		_ = json.Unmarshal(raw, &m)
	}
	return resp.StatusCode, resp.Header, m
}

func queueTopic(sim *simulator.Server, i int, suffix string) string {
	return "v2.routing.queues." + sim.Queues()[i].ID + "." + suffix
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }
