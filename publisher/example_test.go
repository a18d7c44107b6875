package publisher_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
)

// An app beside gcnats replays one subject filter of the GENESYS stream
// from the start with a durable consumer: after a restart it resumes where
// it left off, and each event arrives once, whatever gcnats had to retry.
func Example_replay() {
	// Stand-in for the pod: an embedded JetStream server and a few events
	// published the way gcnats publishes them.
	dir, _ := os.MkdirTemp("", "gcnats-example-")
	defer os.RemoveAll(dir)
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Shutdown()
	publishSamples(srv.ClientURL())

	// The app: connect, bind a durable consumer to a subject filter,
	// replay from the first message.
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.CreateOrUpdateConsumer(ctx, "GENESYS", jetstream.ConsumerConfig{
		Durable:       "presence-audit",
		FilterSubject: "genesys.v2.users.*.presence",
		DeliverPolicy: jetstream.DeliverAllPolicy, // or DeliverByStartTimePolicy with OptStartTime
		AckPolicy:     jetstream.AckExplicitPolicy,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	batch, err := cons.FetchNoWait(10)
	if err != nil {
		fmt.Println(err)
		return
	}
	for msg := range batch.Messages() {
		fmt.Printf("%s %s\n", msg.Headers().Get("Genesys-Topic"), msg.Data())
		_ = msg.Ack()
	}
	// Output:
	// v2.users.u1.presence {"presenceDefinition":{"systemPresence":"AVAILABLE"}}
	// v2.users.u2.presence {"presenceDefinition":{"systemPresence":"BUSY"}}
	// v2.users.u1.presence {"presenceDefinition":{"systemPresence":"AWAY"}}
}

func publishSamples(url string) {
	// A publisher's connection refuses publishes while it reconnects (see
	// New); publisher.Connect makes it so.
	nc, err := nats.Connect(url, nats.ReconnectBufSize(-1))
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	if _, err := publisher.EnsureStream(ctx, js, publisher.StreamConfig{Name: "GENESYS", Subjects: []string{"genesys.>"}, Replicas: 1, MaxAge: time.Hour, Duplicates: 2 * time.Minute}); err != nil {
		panic(err)
	}
	pub, err := publisher.New(js)
	if err != nil {
		panic(err)
	}
	for _, e := range []struct{ topic, body string }{
		{"v2.users.u1.presence", `{"presenceDefinition":{"systemPresence":"AVAILABLE"}}`},
		{"v2.routing.queues.q1.conversations", `{"id":"c1"}`},
		{"v2.users.u2.presence", `{"presenceDefinition":{"systemPresence":"BUSY"}}`},
		{"v2.users.u1.presence", `{"presenceDefinition":{"systemPresence":"AWAY"}}`},
		{"v2.users.u1.presence", `{"presenceDefinition":{"systemPresence":"AWAY"}}`}, // a duplicate: stored once
	} {
		r := publisher.Record{Subject: []byte("genesys." + e.topic), Topic: []byte(e.topic), Data: []byte(e.body)}
		if err := pub.Publish(ctx, &r); err != nil {
			panic(err)
		}
	}
	if _, err := pub.Close(ctx); err != nil {
		panic(err)
	}
}
