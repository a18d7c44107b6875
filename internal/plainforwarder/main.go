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
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/plainchannel"
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
	token, err := plainchannel.Token(api, os.Getenv("GENESYSCLOUD_OAUTHCLIENT_ID"), os.Getenv("GENESYSCLOUD_OAUTHCLIENT_SECRET"))
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
	forwardOnly := os.Getenv("PLAIN_FORWARD_ONLY") != ""
	errs := make(chan error, 1)
	for len(topics) > 0 {
		chunk := topics[:min(1000, len(topics))]
		topics = topics[len(chunk):]
		conn, err := plainchannel.Open(api, token, chunk, &wsDialer)
		if err != nil {
			return err
		}
		defer conn.Close()
		if forwardOnly {
			go func() { errs <- forwardRaw(ctx, conn, nc) }()
			continue
		}
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

// forwardRaw publishes every event frame of conn as it is, with a core
// publish, reading each into one reused buffer.
func forwardRaw(ctx context.Context, conn *websocket.Conn, nc *nats.Conn) error {
	var buf bytes.Buffer
	for {
		_, r, err := conn.NextReader()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		buf.Reset()
		if _, err := buf.ReadFrom(r); err != nil {
			return err
		}
		if plainchannel.IsControl(buf.Bytes()) {
			continue
		}
		if err := nc.Publish("floor.events", buf.Bytes()); err != nil {
			return fmt.Errorf("publish: %w", err)
		}
	}
}
