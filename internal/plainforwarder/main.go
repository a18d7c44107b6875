// Command plainforwarder is the benchmarks' baseline for what the job costs
// when done the straightforward way: one channel per 1,000 topics, each
// frame decoded with encoding/json and its eventBody published with a
// synchronous JetStream publish (Nats-Msg-Id from the CorrelationId). It
// has none of gcnats' guarantees (no rotation, retries or backpressure
// handling); BenchmarkProcess measures it beside gcnats, in the same run,
// as a separate process the same way.
//
// Settings (environment): GENESYSCLOUD_API_URL (the simulated org; OAuth
// on the same host), GENESYSCLOUD_OAUTHCLIENT_ID and _SECRET, NATS_URL,
// PLAIN_TOPICS_FILE (one topic per line), PLAIN_READY_FILE (created once
// every socket is subscribed), PLAIN_PREFIX (subject prefix, default
// "plain"), PLAIN_READ_ONLY (when set, frames are read and dropped: the
// cost of the socket alone) and PLAIN_RAW_IO (when set, the socket and the
// NATS connection do their reads and writes as gcnats does, with package
// rawio).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/rawio"
)

// wsDialer dials the channels' sockets.
var wsDialer = *websocket.DefaultDialer

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "plainforwarder:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	api := strings.TrimRight(os.Getenv("GENESYSCLOUD_API_URL"), "/")
	data, err := os.ReadFile(os.Getenv("PLAIN_TOPICS_FILE"))
	if err != nil {
		return err
	}
	topics := strings.Fields(string(data))
	prefix := os.Getenv("PLAIN_PREFIX")
	if prefix == "" {
		prefix = "plain"
	}
	token, err := oauthToken(api, os.Getenv("GENESYSCLOUD_OAUTHCLIENT_ID"), os.Getenv("GENESYSCLOUD_OAUTHCLIENT_SECRET"))
	if err != nil {
		return err
	}
	var natsOpts []nats.Option
	if os.Getenv("PLAIN_RAW_IO") != "" {
		wsDialer.NetDialContext = (&rawio.Dialer{}).DialContext
		natsOpts = append(natsOpts, nats.SetCustomDialer(&rawio.Dialer{}))
	}
	nc, err := nats.Connect(os.Getenv("NATS_URL"), natsOpts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	readOnly := os.Getenv("PLAIN_READ_ONLY") != ""
	errs := make(chan error, 1)
	for len(topics) > 0 {
		chunk := topics[:min(1000, len(topics))]
		topics = topics[len(chunk):]
		conn, err := openChannel(api, token, chunk)
		if err != nil {
			return err
		}
		defer conn.Close()
		go func() { errs <- forward(ctx, conn, js, prefix, readOnly) }()
	}
	if err := os.WriteFile(os.Getenv("PLAIN_READY_FILE"), nil, 0o600); err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errs:
		return err
	}
}

func oauthToken(api, id, secret string) (string, error) {
	req, err := http.NewRequest(http.MethodPost, api+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"client_credentials"}}.Encode()))
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(id, secret)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(req, &tok); err != nil {
		return "", fmt.Errorf("oauth: %w", err)
	}
	return tok.AccessToken, nil
}

// openChannel creates a channel, subscribes topics over REST and dials it.
func openChannel(api, token string, topics []string) (*websocket.Conn, error) {
	req, _ := http.NewRequest(http.MethodPost, api+"/api/v2/notifications/channels", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	var ch struct {
		ID         string `json:"id"`
		ConnectURI string `json:"connectUri"`
	}
	if err := call(req, &ch); err != nil {
		return nil, fmt.Errorf("create channel: %w", err)
	}
	var body []map[string]string
	for _, t := range topics {
		body = append(body, map[string]string{"id": t})
	}
	b, _ := json.Marshal(body)
	req, _ = http.NewRequest(http.MethodPut, api+"/api/v2/notifications/channels/"+ch.ID+"/subscriptions", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if err := call(req, nil); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	conn, _, err := wsDialer.Dial(ch.ConnectURI, nil)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	return conn, nil
}

func call(req *http.Request, out any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s", req.Method, req.URL.Path, resp.Status)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// forward publishes every event frame of conn, one synchronous publish at
// a time.
func forward(ctx context.Context, conn *websocket.Conn, js jetstream.JetStream, prefix string, readOnly bool) error {
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if readOnly {
			continue
		}
		var f struct {
			TopicName string          `json:"topicName"`
			EventBody json.RawMessage `json:"eventBody"`
			Metadata  struct {
				CorrelationID string `json:"CorrelationId"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(data, &f); err != nil || f.TopicName == "" || strings.HasPrefix(f.TopicName, "channel.") {
			continue
		}
		msg := &nats.Msg{Subject: prefix + "." + f.TopicName, Data: f.EventBody, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, f.Metadata.CorrelationID)
		msg.Header.Set("Genesys-Topic", f.TopicName)
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
}
