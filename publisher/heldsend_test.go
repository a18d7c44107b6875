package publisher

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// A send that races a disconnect must fail, not wait in nats.go's reconnect
// buffer: that buffer is written out when the connection is back, however
// long after, and the publisher has by then given the send up for lost,
// checked the stream for its record and sent it again. Here another replica
// stored the event before the outage; this publisher's send of it was held
// through an outage longer than the duplicate window, and flushed after it,
// where JetStream no longer knows the id.
func TestNoSendHeldThroughAnOutage(t *testing.T) {
	const window = time.Second
	e := newEnv(t)
	mustStream(t, e.js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, MaxAge: time.Hour, Duplicates: window})
	nc := connectTest(t, e.srv.ClientURL())
	p := newPublisher(t, mustJS(t, nc))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	r := testRecord(1, nil)
	other := newPublisher(t, e.js)
	if err := other.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	if err := other.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	storedAt := time.Now()

	// The run goroutine has found the connection up and is about to send r
	// when the connection drops.
	p.sendMu.Lock()
	if err := p.Publish(ctx, r); err != nil {
		p.sendMu.Unlock()
		t.Fatal(err)
	}
	e.stop(t)
	p.sendBatch(p.next(1))
	p.sendMu.Unlock()

	// The outage is the scenario: longer than the duplicate window.
	time.Sleep(time.Until(storedAt.Add(2 * window)))
	e.restart(t)
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, e.js, "TEST", map[string]bool{string(r.ID): true})
}

// The connections Connect makes refuse a publish while they reconnect,
// over a socket and in process alike; a held one would arrive after the
// reconnect.
func TestConnectionRefusesSendsWhileReconnecting(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		name := "socket"
		if inProcess {
			name = "in process"
		}
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			opts := ConnectOptions{Logger: testLogger(), Options: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)}}
			if inProcess {
				opts.Options = append(opts.Options, nats.InProcessServer(e.srv))
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			nc, err := Connect(ctx, e.srv.ClientURL(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			e.srv.Shutdown()
			waitFor(t, 10*time.Second, "the connection to see the disconnect", func() bool { return !nc.IsConnected() })
			err = nc.Publish("held.x", []byte("sent while reconnecting"))
			if !errors.Is(err, nats.ErrReconnectBufExceeded) {
				t.Fatalf("publish while reconnecting: %v; want %v", err, nats.ErrReconnectBufExceeded)
			}
		})
	}
}
