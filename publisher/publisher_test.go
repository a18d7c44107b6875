package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestEnsureStreamCreatesThenUpdates(t *testing.T) {
	e := newEnv(t) // creates TEST
	ctx := context.Background()

	info, err := e.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Storage != jetstream.FileStorage || !slices.Equal(c.Subjects, []string{"t.>"}) ||
		c.MaxAge != time.Hour || c.Duplicates != 2*time.Minute || c.Replicas != 1 {
		t.Fatalf("created config: storage %v subjects %v max age %s duplicates %s replicas %d",
			c.Storage, c.Subjects, c.MaxAge, c.Duplicates, c.Replicas)
	}

	// An operator's own tuning of a setting gcnats does not own.
	c.MaxBytes = 1 << 30
	if _, err := e.js.UpdateStream(ctx, c); err != nil {
		t.Fatal(err)
	}

	s, err := EnsureStream(ctx, e.js, StreamConfig{
		Name: "TEST", Subjects: []string{"t.>", "u.>"}, MaxAge: 48 * time.Hour, Duplicates: 5 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err = s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c = info.Config
	if !slices.Equal(c.Subjects, []string{"t.>", "u.>"}) || c.MaxAge != 48*time.Hour || c.Duplicates != 5*time.Minute {
		t.Fatalf("updated config: subjects %v max age %s duplicates %s", c.Subjects, c.MaxAge, c.Duplicates)
	}
	if c.MaxBytes != 1<<30 {
		t.Fatalf("update reset MaxBytes to %d", c.MaxBytes)
	}

	// Unchanged settings: no error, nothing changes.
	if _, err := EnsureStream(ctx, e.js, StreamConfig{
		Name: "TEST", Subjects: []string{"t.>", "u.>"}, MaxAge: 48 * time.Hour, Duplicates: 5 * time.Minute,
	}); err != nil {
		t.Fatal(err)
	}

	for _, bad := range []StreamConfig{{Subjects: []string{"x"}}, {Name: "X"}} {
		if _, err := EnsureStream(ctx, e.js, bad); err == nil {
			t.Errorf("EnsureStream(%+v) succeeded", bad)
		}
	}
}

func TestPublishStoresEachOnceWithHeaders(t *testing.T) {
	e := newEnv(t)
	var acked, bufferedZero atomic.Int64
	p := newPublisher(t, e.js, WithObserver(Observer{
		Acked: func(latency time.Duration, duplicate bool) {
			if latency > 0 && !duplicate {
				acked.Add(1)
			}
		},
		BufferedBytes: func(n int64) {
			if n == 0 {
				bufferedZero.Add(1)
			}
		},
	}))

	const n = 500
	type want struct {
		subject string
		header  map[string]string
		data    []byte
	}
	wants := map[string]want{}
	// One set of buffers, overwritten after every Publish: the publisher must
	// have copied what it keeps.
	r := &Record{}
	var subj, id, topic, version, corr, data []byte
	for i := range n {
		topicS := fmt.Sprintf("v2.users.u%d.presence", i)
		topic = append(topic[:0], topicS...)
		subj = append(append(subj[:0], "t."...), topicS...)
		data = fmt.Appendf(data[:0], `{"i":%d,"body":"%s"}`, i, bytes.Repeat([]byte{'a' + byte(i%26)}, i))
		id = MsgID(id[:0], topic, nil, data)
		version = version[:0]
		corr = corr[:0]
		hdr := map[string]string{
			HeaderMsgID:      string(id),
			HeaderTopic:      topicS,
			HeaderReceivedAt: time.Date(2025, 3, 1, 12, 0, 0, i*1000+1, time.FixedZone("X", 3600)).UTC().Format(time.RFC3339Nano),
		}
		if i%3 != 0 {
			version = append(version, '2')
			hdr[HeaderVersion] = "2"
		}
		if i%2 == 0 {
			corr = fmt.Appendf(corr, "corr-%d", i)
			hdr[HeaderCorrelationID] = string(corr)
		}
		*r = Record{
			Subject: subj, ID: id, Topic: topic, Version: version, CorrelationID: corr,
			ReceivedAt: time.Date(2025, 3, 1, 12, 0, 0, i*1000+1, time.FixedZone("X", 3600)),
			Data:       data,
		}
		if err := p.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
		wants[string(id)] = want{subject: string(subj), header: hdr, data: bytes.Clone(data)}
		for _, b := range [][]byte{subj, id, topic, version, corr, data} {
			clear(b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	msgs := readAll(t, e.js, "TEST")
	if len(msgs) != n {
		t.Fatalf("stream holds %d messages, want %d", len(msgs), n)
	}
	for _, m := range msgs {
		w, ok := wants[m.header.Get(HeaderMsgID)]
		if !ok {
			t.Fatalf("unexpected message id %q", m.header.Get(HeaderMsgID))
		}
		delete(wants, m.header.Get(HeaderMsgID))
		if m.subject != w.subject || !bytes.Equal(m.data, w.data) {
			t.Fatalf("message %s: subject %q data %q, want %q %q", w.header[HeaderMsgID], m.subject, m.data, w.subject, w.data)
		}
		got := map[string]string{}
		for k, v := range m.header {
			if len(v) != 1 {
				t.Fatalf("header %s has %d values", k, len(v))
			}
			got[k] = v[0]
		}
		if !maps.Equal(got, w.header) {
			t.Fatalf("headers\n got %v\nwant %v", got, w.header)
		}
	}
	if len(wants) != 0 {
		t.Fatalf("%d records missing", len(wants))
	}
	st := p.Stats()
	if st.Accepted != n || st.Acked != n || st.Duplicates != 0 || st.Failed != 0 || st.Buffered != 0 || st.BufferedBytes != 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v", st)
	}
	if acked.Load() != n || bufferedZero.Load() == 0 {
		t.Fatalf("observer saw %d acks, buffered bytes back to zero %d times", acked.Load(), bufferedZero.Load())
	}
}

func TestPublishMissingIDUsesMsgID(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js)
	r := &Record{Subject: []byte("t.x"), Topic: []byte("v2.x"), Data: []byte(`{"a":1}`)}
	h := publishOne(t, e, p, r)
	if got, want := h.Get(HeaderMsgID), string(MsgID(nil, r.Topic, r.CorrelationID, r.Data)); got != want {
		t.Fatalf("id %q, want %q", got, want)
	}
	at, err := time.Parse(time.RFC3339Nano, h.Get(HeaderReceivedAt))
	if err != nil || at.Location() != time.UTC {
		t.Fatalf("received-at %q: %v", h.Get(HeaderReceivedAt), err)
	}
}

// publishOne publishes r, flushes, and returns the headers of the one
// message the stream then holds.
func publishOne(t *testing.T, e *env, p *Publisher, r *Record) nats.Header {
	t.Helper()
	if err := p.Publish(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	msgs := readAll(t, e.js, "TEST")
	if len(msgs) != 1 {
		t.Fatalf("%d messages, want 1", len(msgs))
	}
	return msgs[0].header
}

// TestPublishKeepsHeadersWellFormed checks that CR and LF, which a frame
// can carry as escapes in its topic, version or correlation id, cannot end
// the header block early.
func TestPublishKeepsHeadersWellFormed(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js)
	r := &Record{Subject: []byte("t.x"), Topic: []byte("v2.a\r\nX-Injected: 1"), Version: []byte("2\n"), CorrelationID: []byte("c\r1"), Data: []byte(`{}`)}
	h := publishOne(t, e, p, r)
	if got := h.Get(HeaderTopic); got != "v2.a  X-Injected: 1" || h.Get("X-Injected") != "" {
		t.Fatalf("topic header %q, injected %q", got, h.Get("X-Injected"))
	}
	if h.Get(HeaderVersion) != "2" || h.Get(HeaderCorrelationID) != "c 1" {
		t.Fatalf("version %q, correlation id %q", h.Get(HeaderVersion), h.Get(HeaderCorrelationID))
	}
}

// TestGapHeaderOnlyOnGapRecords: a gap record carries Gcnats-Gap: true, and
// the event record that reuses its buffers after it does not.
func TestGapHeaderOnlyOnGapRecords(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js)
	gap := publishOne(t, e, p, &Record{Subject: []byte("t.gcnats.gap"), ID: []byte("gap-1"), Data: []byte(`{}`), Gap: true})
	if got := gap.Get(HeaderGap); got != "true" {
		t.Fatalf("gap record: %s = %q, want true", HeaderGap, got)
	}
	ctx := context.Background()
	if err := p.Publish(ctx, &Record{Subject: []byte("t.x"), Topic: []byte("v2.x"), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := readAll(t, e.js, "TEST")
	if len(msgs) != 2 {
		t.Fatalf("%d messages, want 2", len(msgs))
	}
	if got, ok := msgs[1].header[HeaderGap]; ok {
		t.Fatalf("event record after a gap record: %s = %q", HeaderGap, got)
	}
}

// The same event from two sockets of one sidecar, and from a second replica:
// stored once, the rest counted as duplicates.
func TestPublishSameIDStoredOnce(t *testing.T) {
	e := newEnv(t)
	p1 := newPublisher(t, e.js)
	p2 := newPublisher(t, e.js)
	r := testRecord(1, nil)
	ctx := context.Background()
	for _, p := range []*Publisher{p1, p1, p2} {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := p.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	assertExactlyOnce(t, e.js, "TEST", map[string]bool{string(r.ID): true})
	if s1, s2 := p1.Stats(), p2.Stats(); s1.Acked != 2 || s1.Duplicates != 1 || s2.Acked != 1 || s2.Duplicates != 1 {
		t.Fatalf("stats: first %+v second %+v", s1, s2)
	}
}

func TestPublishRejectsInvalidRecords(t *testing.T) {
	e := newEnv(t)
	var failed sync.Map
	p := newPublisher(t, e.js, WithObserver(Observer{Failed: func(reason string) { failed.Store(reason, true) }}))
	big := make([]byte, e.nc.MaxPayload())
	for name, r := range map[string]*Record{
		"nil":         nil,
		"no subject":  {Data: []byte("x")},
		"space":       {Subject: []byte("t.a b")},
		"empty token": {Subject: []byte("t..a")},
		"trailing":    {Subject: []byte("t.a.")},
		"wildcard":    {Subject: []byte("t.*")},
		"full":        {Subject: []byte("t.>")},
		"too large":   {Subject: []byte("t.a"), Data: big},
	} {
		if err := p.Publish(context.Background(), r); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: err = %v, want ErrInvalidRecord", name, err)
		}
	}
	if st := p.Stats(); st.Rejected != 8 || st.Accepted != 0 {
		t.Fatalf("stats %+v", st)
	}
	for _, reason := range []string{ReasonInvalid, ReasonTooLarge} {
		if _, ok := failed.Load(reason); !ok {
			t.Errorf("observer did not see %s", reason)
		}
	}
}

// A subject no stream covers can never be stored: counted, not retried
// forever, and it does not hold up the records around it.
func TestPublishNoStreamIsPermanent(t *testing.T) {
	e := newEnv(t)
	var noStream atomic.Int64
	p := newPublisher(t, e.js, WithObserver(Observer{Failed: func(reason string) {
		if reason == ReasonNoStream {
			noStream.Add(1)
		}
	}}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	good1, good2 := testRecord(1, nil), testRecord(2, nil)
	lost := testRecord(3, nil)
	lost.Subject = []byte("nowhere.x")
	for _, r := range []*Record{good1, lost, good2} {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) {
		t.Fatalf("Flush = %v, want ErrNotStored", err)
	}
	assertExactlyOnce(t, e.js, "TEST", map[string]bool{string(good1.ID): true, string(good2.ID): true})
	if st := p.Stats(); st.Failed != 1 || st.Acked != 2 || st.Buffered != 0 || noStream.Load() != 1 {
		t.Fatalf("stats %+v, observer no_stream %d", st, noStream.Load())
	}
}

// A stream the publisher keeps (WithStreams) that is deleted under it,
// say by an operator, is created again, or put back on its subjects when
// edited to leave them out, and the records that found no stream are
// stored there; a subject no kept stream covers is still given up.
func TestDeletedStreamIsCreatedAgain(t *testing.T) {
	cfg := StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, MaxAge: time.Hour, Duplicates: 2 * time.Minute}
	for _, tc := range []struct {
		name  string
		fault func(ctx context.Context, js jetstream.JetStream) error
		fresh bool // the stream holds only what came after
	}{
		{"deleted", func(ctx context.Context, js jetstream.JetStream) error { return js.DeleteStream(ctx, "TEST") }, true},
		{"edited to other subjects", func(ctx context.Context, js jetstream.JetStream) error {
			_, err := js.UpdateStream(ctx, jetstream.StreamConfig{Name: "TEST", Subjects: []string{"other.>"}, MaxAge: time.Hour, Duplicates: 2 * time.Minute})
			return err
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			var reasons reasonCounter
			p := newPublisher(t, e.js, WithStreams(cfg), WithObserver(reasons.observer()))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			publish := func(from, to int, ids map[string]bool) {
				for i := from; i < to; i++ {
					r := testRecord(i, nil)
					ids[string(r.ID)] = true
					if err := p.Publish(ctx, r); err != nil {
						t.Fatal(err)
					}
				}
			}
			want := map[string]bool{}
			publish(0, 50, want)
			if err := p.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if err := tc.fault(ctx, e.js); err != nil {
				t.Fatal(err)
			}
			if tc.fresh {
				clear(want)
			}
			publish(50, 100, want)
			lost := testRecord(100, nil)
			lost.Subject = []byte("nowhere.x")
			if err := p.Publish(ctx, lost); err != nil {
				t.Fatal(err)
			}
			if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) {
				t.Fatalf("Flush = %v, want ErrNotStored for the one record no stream covers", err)
			}
			assertExactlyOnce(t, e.js, "TEST", want)
			s, err := e.js.Stream(ctx, "TEST")
			if err != nil {
				t.Fatal(err)
			}
			if got := s.CachedInfo().Config; got.MaxAge != time.Hour || got.Duplicates != 2*time.Minute || !slices.Equal(got.Subjects, cfg.Subjects) {
				t.Errorf("set up again with subjects %v, max age %s and duplicate window %s, want the kept settings", got.Subjects, got.MaxAge, got.Duplicates)
			}
			if st := p.Stats(); st.Failed != 1 || reasons.get(ReasonNoStream) != 1 {
				t.Fatalf("stats %+v, given up for no stream %d; want only the uncovered record given up", st, reasons.get(ReasonNoStream))
			}
		})
	}
}

func TestCloseFlushes(t *testing.T) {
	e := newEnv(t)
	p, err := New(e.js, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range 1000 {
		r := testRecord(i, nil)
		want[string(r.ID)] = true
		if err := p.Publish(context.Background(), r); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if n, err := p.Close(ctx); n != 0 || err != nil {
		t.Fatalf("Close = %d, %v", n, err)
	}
	assertExactlyOnce(t, e.js, "TEST", want)
	if err := p.Publish(ctx, testRecord(0, nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Publish after Close = %v", err)
	}
	if _, err := p.Close(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v", err)
	}
}

func TestCloseWithServerDownReportsUnflushed(t *testing.T) {
	e := newEnv(t)
	p, err := New(e.js, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	e.stop(t)
	for i := range 50 {
		if err := p.Publish(context.Background(), testRecord(i, nil)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n, err := p.Close(ctx)
	if n != 50 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %d, %v; want 50, deadline exceeded", n, err)
	}
}

// Publish blocks while the buffer is full and the server is down, gives up
// when its ctx ends without accepting, and goes on once the server is back.
func TestBackpressure(t *testing.T) {
	e := newEnv(t)
	const limit = 64 << 10
	p := newPublisher(t, e.js, WithBufferBytes(limit))
	e.stop(t)

	const n = 200 // ~200 KiB: three times the buffer
	var started atomic.Int64
	want := map[string]bool{}
	recs := make([]*Record, n)
	for i := range recs {
		recs[i] = testRecord(i, make([]byte, 0, 1100))
		recs[i].Data = append(recs[i].Data, bytes.Repeat([]byte(" "), 1000)...)
		want[string(recs[i].ID)] = true
	}
	done := make(chan error, 1)
	go func() {
		for i, r := range recs {
			started.Store(int64(i + 1))
			if err := p.Publish(context.Background(), r); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()

	// Blocked: call k has started, k-1 were accepted, and record k does not
	// fit. Nothing can be acked with the server down, so it stays so.
	waitFor(t, 10*time.Second, "Publish to block on a full buffer", func() bool {
		st := p.Stats()
		// A record costs its bytes and then some (struct, headers, slack).
		return st.Accepted > 0 && started.Load() == int64(st.Accepted)+1 &&
			st.BufferedBytes+st.BufferedBytes/int64(st.Accepted) > limit
	})
	st := p.Stats()
	if st.Accepted >= n || st.BufferedBytes > limit {
		t.Fatalf("stats at the limit: %+v", st)
	}
	select {
	case err := <-done:
		t.Fatalf("publishing finished with the server down: %v", err)
	default:
	}

	// A caller that gives up is told so, and nothing is accepted.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	extra := testRecord(n+1, nil)
	extra.Data = bytes.Repeat([]byte(" "), 1100)
	if err := p.Publish(ctx, extra); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish on a full buffer = %v, want deadline exceeded", err)
	}
	if got := p.Stats().Accepted; got != st.Accepted {
		t.Fatalf("accepted went from %d to %d with the buffer full", st.Accepted, got)
	}

	e.restart(t)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("publishing still blocked after restart: %+v", p.Stats())
	}
	fctx, fcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer fcancel()
	if err := p.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	assertExactlyOnce(t, e.js, "TEST", want)
}

func TestNoGoroutinesLeftAfterClose(t *testing.T) {
	e := newEnv(t)
	before := countGoroutines()
	p, err := New(e.js, WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := p.Publish(context.Background(), testRecord(i, nil)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := p.Close(context.Background()); n != 0 || err != nil {
		t.Fatalf("Close = %d, %v", n, err)
	}
	// The connection stays open: nats.go's reply subscription and status
	// goroutine of the publisher must be gone too.
	waitFor(t, 5*time.Second, fmt.Sprintf("goroutines back to %d", before), func() bool {
		return countGoroutines() <= before
	})
}

// A message the stream refuses (4xx: larger than its MaxMsgSize) is given up
// and counted; the others go on.
func TestPublishRejectedByStreamIsPermanent(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SMALL", Subjects: []string{"small.>"}, MaxMsgSize: 256, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	var rejected atomic.Int64
	p := newPublisher(t, e.js, WithObserver(Observer{Failed: func(reason string) {
		if reason == ReasonRejected {
			rejected.Add(1)
		}
	}}))
	big := testRecord(1, nil)
	big.Subject, big.Data = []byte("small.x"), bytes.Repeat([]byte("x"), 1000)
	ok := testRecord(2, nil)
	for _, r := range []*Record{big, ok} {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) {
		t.Fatalf("Flush = %v, want ErrNotStored", err)
	}
	if st := p.Stats(); st.Failed != 1 || st.Acked != 1 || rejected.Load() != 1 {
		t.Fatalf("stats %+v, rejected %d", st, rejected.Load())
	}
}

// A server-side refusal that can pass (5xx: a DiscardNew stream is full) is
// retried, slowing the caller, until the event fits.
func TestPublishServerErrorIsRetried(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	full, err := e.js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "FULL", Subjects: []string{"full.>"}, MaxMsgs: 1, Discard: jetstream.DiscardNew,
		Storage: jetstream.MemoryStorage,
	})
	if err != nil {
		t.Fatal(err)
	}
	var serverRetries atomic.Int64
	p := newPublisher(t, e.js, WithObserver(Observer{Retried: func(reason string) {
		if reason == ReasonServer {
			serverRetries.Add(1)
		}
	}}))
	first, second := testRecord(1, nil), testRecord(2, nil)
	first.Subject, second.Subject = []byte("full.a"), []byte("full.b")
	for _, r := range []*Record{first, second} {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "the second record to be retried", func() bool { return serverRetries.Load() >= 2 })
	if st := p.Stats(); st.Acked != 1 || st.Buffered != 1 || st.Failed != 0 {
		t.Fatalf("stats while full: %+v", st)
	}
	if err := full.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	msgs := readAll(t, e.js, "FULL")
	if len(msgs) != 1 || msgs[0].header.Get(HeaderMsgID) != string(second.ID) {
		t.Fatalf("stream after purge holds %d messages", len(msgs))
	}
}

// Once running, accepting a record allocates nothing: records and their
// buffers are recycled.
func TestPublishDoesNotAllocate(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js)
	r := testRecord(1, nil)
	r.CorrelationID = []byte("5a3b9c1d-2e3f-4a5b-8c7d-6e5f4a3b2c1d")
	ctx := context.Background()
	// Warm up with the server down, so that as many records as the
	// measurement holds at once are made and, once flushed, recycled.
	e.stop(t)
	for range 2000 {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	e.restart(t)
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// With the server down nothing is sent, so only Publish itself runs.
	e.stop(t)
	allocs := testing.AllocsPerRun(1000, func() {
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Publish allocates %.2f times per record", allocs)
	}
	e.restart(t) // lets the cleanup's Close flush at once
}

// A record sent by Publish itself, while the run goroutine sleeps, is
// counted acked and releases its bytes with nothing else happening: no
// Flush, no further Publish. Each is sent with the buffer empty, the case
// where Publish sends it itself.
func TestLoneRecordsAreAckedAndReleased(t *testing.T) {
	e := newEnv(t)
	p := newPublisher(t, e.js)
	ctx := context.Background()
	for i := range 3 {
		if err := p.Publish(ctx, testRecord(i, nil)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "the record's ack to be counted", func() bool {
			s := p.Stats()
			return s.Acked == uint64(i+1) && s.Buffered == 0 && s.BufferedBytes == 0 && s.InFlight == 0
		})
	}
	assertExactlyOnce(t, e.js, "TEST", map[string]bool{
		string(testRecord(0, nil).ID): true, string(testRecord(1, nil).ID): true, string(testRecord(2, nil).ID): true,
	})
}

// TestTemporary sorts stream set-up errors: what a cluster says while it
// forms or recovers is worth waiting for; a refusal is not.
func TestTemporary(t *testing.T) {
	apiErr := func(code int, errCode jetstream.ErrorCode, desc string) error {
		return fmt.Errorf("create stream GENESYS: %w", &jetstream.APIError{Code: code, ErrorCode: errCode, Description: desc})
	}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("look up stream GENESYS: %w", context.DeadlineExceeded), true},
		{nats.ErrTimeout, true},
		{nats.ErrConnectionReconnecting, true},
		{fmt.Errorf("look up stream GENESYS: %w", nats.ErrReconnectBufExceeded), true},
		{apiErr(503, 10008, "JetStream system temporarily unavailable"), true},
		{apiErr(500, 10009, "JetStream cluster can not handle request"), true},
		{apiErr(400, 10005, "no suitable peers for placement, peer offline"), true},
		{apiErr(400, 10005, "no suitable peers for placement"), false},
		{apiErr(400, 10005, "no suitable peers for placement, tags not matched ['ssd']"), false},
		{apiErr(500, 10074, "replicas > 1 not supported in non-clustered mode"), false},
		{apiErr(503, 10023, "insufficient resources"), false},
		{jetstream.ErrJetStreamNotEnabled, false},
		{nats.ErrPermissionViolation, false},
		{context.Canceled, false},
	} {
		if got := Temporary(tc.err); got != tc.want {
			t.Errorf("Temporary(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
