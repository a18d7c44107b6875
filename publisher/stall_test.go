package publisher

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// A failure whose cause must be asked of JetStream holds up no other
// record. Here the question goes unanswered, as when the meta leader that
// answers it is the node that just went: the user may not ask which stream
// covers a subject. A record no stream covers gets no responders, and the
// question after it waits out its timeout; the records to the stream that
// works are stored meanwhile as if nothing happened.
func TestUnansweredQuestionStallsNoOtherRecord(t *testing.T) {
	opts := authServerOpts(t.TempDir(), server.RANDOM_PORT, "pw")
	opts.Users[0].Permissions.Publish.Deny = []string{"$JS.API.STREAM.NAMES"}
	srv := startAuthServer(t, opts)
	nc := connectAuth(t, srv.ClientURL(), "pw")
	js := mustJS(t, nc)
	mustStream(t, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})

	var acked, noResponders atomic.Int64
	p := newPublisher(t, js, WithAckTimeout(3*time.Second), WithObserver(Observer{
		Acked: func(time.Duration, bool) { acked.Add(1) },
		Retried: func(reason string) {
			if reason == ReasonNoResponders {
				noResponders.Add(1)
			}
		},
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	uncovered := testRecord(0, nil)
	uncovered.Subject = []byte("u.no.stream")
	if err := p.Publish(ctx, uncovered); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "a no responders for the uncovered record", func() bool { return noResponders.Load() > 0 })

	const n = 100
	start := time.Now()
	for i := 1; i <= n; i++ {
		if err := p.Publish(ctx, testRecord(i, nil)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 15*time.Second, "the records to the stream to be stored", func() bool { return acked.Load() >= n })
	if took := time.Since(start); took > time.Second {
		t.Fatalf("%d records to a working stream took %s to be stored while a question about another subject went unanswered", n, took.Round(time.Millisecond))
	}
}
