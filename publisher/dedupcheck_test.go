package publisher

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// Records the server stored but whose acks were lost, then an outage several
// duplicate windows long: after it they are not stored a second time, while
// records that were never sent are stored once.
// The window is learnt from the stream, or given with WithDedupWindow.
func TestNoDuplicateAfterOutageLongerThanDedupWindow(t *testing.T) {
	t.Run("stream info", func(t *testing.T) { dedupAfterOutage(t) })
	t.Run("option", func(t *testing.T) { dedupAfterOutage(t, WithDedupWindow(time.Second)) })
}

func dedupAfterOutage(t *testing.T, opts ...Option) {
	const window = time.Second
	e := newEnv(t)
	mustStream(t, e.js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, MaxAge: time.Hour, Duplicates: window})
	px := startProxy(t, e.srv.Addr())
	nc := connectTest(t, px.url())
	// A long ack timeout: the lost acks stay outstanding until the cut.
	p := newPublisher(t, mustJS(t, nc), append(opts, WithAckTimeout(time.Minute))...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	want := map[string]bool{}
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			r := testRecord(i, nil)
			want[string(r.ID)] = true
			if err := p.Publish(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	publish(0, 50)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	// Stored, acks lost on the way back.
	px.setMute(true)
	publish(50, 80)
	var storedAt time.Time
	waitFor(t, 10*time.Second, "the server to store the records whose acks are lost", func() bool {
		info, err := e.stream.Info(ctx)
		if err != nil || info.State.Msgs < 80 {
			return false
		}
		storedAt = time.Now()
		return true
	})
	if st := p.Stats(); st.Acked != 50 {
		t.Fatalf("acks got through the muted proxy: %+v", st)
	}

	// The outage.
	px.cut()
	waitFor(t, 10*time.Second, "the publisher's connection to drop", func() bool { return !nc.IsConnected() })
	publish(80, 100) // never sent before the outage ends
	waitFor(t, 20*time.Second, "the outage to outlast several duplicate windows", func() bool {
		return time.Since(storedAt) > 4*window
	})
	px.restore()

	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, e.js, "TEST", want)
	if st := p.Stats(); st.Acked != 100 || st.Duplicates < 30 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// Records stored whose acks were lost, then the connection drops and comes
// straight back: they are sent again as soon as it is back, as
// disconnected, not after the ack timeout (a minute here); JetStream
// answers them as duplicates.
func TestReconnectResendsWhatWasInFlight(t *testing.T) {
	e := newEnv(t)
	px := startProxy(t, e.srv.Addr())
	nc := connectTest(t, px.url())
	var disconnected atomic.Int64
	p := newPublisher(t, mustJS(t, nc), WithAckTimeout(time.Minute), WithObserver(Observer{Retried: func(reason string) {
		if reason == ReasonDisconnected {
			disconnected.Add(1)
		}
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	px.setMute(true)
	want := map[string]bool{}
	for i := range 20 {
		r := testRecord(i, nil)
		want[string(r.ID)] = true
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the server to store the records whose acks are lost", func() bool {
		info, err := e.stream.Info(ctx)
		return err == nil && info.State.Msgs == 20
	})
	px.cut()
	px.restore()

	start := time.Now()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("flushed %s after the reconnect: the sends waited for their ack timeout", d)
	}
	assertExactlyOnce(t, e.js, "TEST", want)
	if st := p.Stats(); st.Acked != 20 || st.Duplicates != 20 || disconnected.Load() != 20 {
		t.Fatalf("stats %+v, retried as disconnected %d", st, disconnected.Load())
	}
}
