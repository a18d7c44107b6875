package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
	"github.com/gcnats/gcnats/subjects"
)

// benchFrames are real frames from the simulated org: presence events
// padded to the sizes Genesys sends (a presence change is about 0.5 KB, a
// queue conversation with a few participants 4 KB, a large one 32 KB).
func benchFrames(b *testing.B, size int) [][]byte {
	b.Helper()
	sim := simulator.Start(b, simulator.Options{Queues: 1, Users: 64, BodyPadding: size, Seed: 3})
	var topics []string
	for _, u := range sim.Users() {
		topics = append(topics, "v2.users."+u.ID+".presence")
	}
	var frames [][]byte
	for range 16 {
		for _, ev := range sim.Emit(topics...) {
			frames = append(frames, ev.Frame)
		}
	}
	return frames
}

const benchRoutes = `
routes:
  - topic: v2.routing.queues.*.conversations.>
    subject: "{prefix}.queues.{1}.{2}"
  - topic: v2.users.*.routingStatus
    filter:
      - field: routingStatus.status
        not_equals: OFF_QUEUE
  - topic: v2.users.*.presence
    subject: "{prefix}.presence.{1}"
    filter:
      - field: presenceDefinition.systemPresence
        one_of: [AVAILABLE, AWAY, BUSY, OFFLINE, ON_QUEUE, IDLE, MEAL, TRAINING]
`

// articleFrame is how the seed article decodes a frame: a full parse.
type articleFrame struct {
	TopicName string          `json:"topicName"`
	Version   string          `json:"version"`
	EventBody json.RawMessage `json:"eventBody"`
	Metadata  struct {
		CorrelationID string `json:"CorrelationId"`
	} `json:"metadata"`
}

// decodeArticle is the baseline's parse and id: a full decode, and a hex
// string of a hash over a fresh concatenation.
func decodeArticle(b *testing.B, frame []byte) (articleFrame, string) {
	var f articleFrame
	if err := json.Unmarshal(frame, &f); err != nil {
		b.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte(f.TopicName), f.EventBody...))
	return f, hex.EncodeToString(sum[:16])
}

// BenchmarkDemux is one frame's work before the network: gcnats' peek,
// route, filter and hash beside the straightforward way (encoding/json,
// string building, a hex string id) on the same frames.
func BenchmarkDemux(b *testing.B) {
	table, err := subjects.Parse("bench.yaml", []byte(benchRoutes), "genesys")
	if err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{512, 4096, 32768} {
		frames := benchFrames(b, size)
		b.Run(fmt.Sprintf("size=%d/gcnats", size), func(b *testing.B) {
			var f connector.Frame
			subject := make([]byte, 0, 256)
			id := make([]byte, 0, publisher.MsgIDLen)
			b.SetBytes(int64(len(frames[0])))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := connector.Peek(frames[i%len(frames)], &f); err != nil {
					b.Fatal(err)
				}
				var pass bool
				subject, pass = table.Route(subject[:0], f.Topic, f.Body)
				if !pass {
					b.Fatal("filtered")
				}
				id = publisher.MsgID(id[:0], f.Topic, f.CorrelationID, f.Body)
			}
		})
		b.Run(fmt.Sprintf("size=%d/baseline", size), func(b *testing.B) {
			b.SetBytes(int64(len(frames[0])))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				f, id := decodeArticle(b, frames[i%len(frames)])
				var body struct {
					PresenceDefinition struct{ SystemPresence string } `json:"presenceDefinition"`
				}
				if err := json.Unmarshal(f.EventBody, &body); err != nil {
					b.Fatal(err)
				}
				_, _ = "genesys."+f.TopicName, id
			}
		})
	}
}

// BenchmarkHotPath is the whole path of one frame into a real JetStream
// server (file storage, as deployed): gcnats' pipeline beside a
// straightforward publisher that decodes with encoding/json and builds a
// fresh nats.Msg per event, on the same frames and server.
func BenchmarkHotPath(b *testing.B) {
	_, js := benchJetStream(b, jetstream.WithPublishAsyncMaxPending(4096))
	ctx := context.Background()
	// A short duplicate window: the benchmark cycles over a fixed set of
	// frames and should measure storing, not deduplicating.
	if _, err := publisher.EnsureStream(ctx, js, publisher.StreamConfig{Name: "GENESYS", Subjects: []string{"genesys.>"}, Replicas: 1, MaxAge: time.Hour, Duplicates: 100 * time.Millisecond}); err != nil {
		b.Fatal(err)
	}
	table, err := subjects.Parse("bench.yaml", []byte(benchRoutes), "genesys")
	if err != nil {
		b.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	for _, size := range []int{512, 4096, 32768} {
		frames := benchFrames(b, size)
		b.Run(fmt.Sprintf("size=%d/gcnats", size), func(b *testing.B) {
			pub, err := publisher.New(js, publisher.WithLogger(log))
			if err != nil {
				b.Fatal(err)
			}
			pipe := newPipeline(table, pub, false, newMetrics(), log)
			var f connector.Frame
			b.SetBytes(int64(len(frames[0])))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if err := connector.Peek(frames[i%len(frames)], &f); err != nil {
					b.Fatal(err)
				}
				if err := pipe.HandleEvent(ctx, &f, time.Now()); err != nil {
					b.Fatal(err)
				}
			}
			if err := pub.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := pub.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(fmt.Sprintf("size=%d/baseline", size), func(b *testing.B) {
			b.SetBytes(int64(len(frames[0])))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				f, id := decodeArticle(b, frames[i%len(frames)])
				m := nats.NewMsg("genesys." + f.TopicName)
				m.Data = f.EventBody
				m.Header.Set(jetstream.MsgIDHeader, id)
				m.Header.Set("Genesys-Topic", f.TopicName)
				m.Header.Set("Genesys-Version", f.Version)
				m.Header.Set("Genesys-Correlation-Id", f.Metadata.CorrelationID)
				m.Header.Set("Genesys-Received-At", time.Now().UTC().Format(time.RFC3339Nano))
				if _, err := js.PublishMsgAsync(m); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("acks outstanding after a minute")
			}
		})
	}
}

// benchJetStream starts a JetStream server in this process (file storage)
// for the benchmark and connects to it; both end with the benchmark.
func benchJetStream(b *testing.B, opts ...jetstream.JetStreamOpt) (*publisher.Embedded, jetstream.JetStream) {
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return srv, js
}
