package publisher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// reasonCounter counts Observer.Failed calls by reason.
type reasonCounter struct{ m sync.Map }

func (c *reasonCounter) observer() Observer {
	return Observer{Failed: func(reason string) {
		v, _ := c.m.LoadOrStore(reason, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}}
}

func (c *reasonCounter) get(reason string) int64 {
	v, ok := c.m.Load(reason)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}

// authServerOpts is a JetStream server in dir whose one user may publish
// anywhere except t.denied.>.
func authServerOpts(dir string, port int, password string) *server.Options {
	return &server.Options{
		ServerName: "gcnats-auth", Host: "127.0.0.1", Port: port, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: dir,
		Users: []*server.User{{
			Username: "gcnats", Password: password,
			Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"t.denied.>"}},
				Subscribe: &server.SubjectPermission{Allow: []string{">"}},
			},
		}},
	}
}

func startAuthServer(t testing.TB, opts *server.Options) *server.Server {
	t.Helper()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv
}

func connectAuth(t testing.TB, url, password string, extra ...nats.Option) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, url, ConnectOptions{
		User: "gcnats", Password: password, Logger: testLogger(),
		Options: append([]nats.Option{nats.ReconnectWait(20 * time.Millisecond)}, extra...),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func mustJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func mustStream(t testing.TB, js jetstream.JetStream, cfg StreamConfig) {
	t.Helper()
	if _, err := EnsureStream(context.Background(), js, cfg); err != nil {
		t.Fatal(err)
	}
}

// A user denied one subject: records to it are dropped and counted as
// "denied" at once (no ack timeout is waited through, none is retried),
// while every other record is stored and the buffer never fills.
func TestDeniedSubjectCostsNoOtherEvent(t *testing.T) {
	srv := startAuthServer(t, authServerOpts(t.TempDir(), server.RANDOM_PORT, "pw"))
	nc := connectAuth(t, srv.ClientURL(), "pw")
	js := mustJS(t, nc)
	mustStream(t, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})

	const limit = 64 << 10
	var reasons reasonCounter
	var maxBuffered atomic.Int64
	obs := reasons.observer()
	obs.BufferedBytes = func(n int64) {
		for {
			cur := maxBuffered.Load()
			if n <= cur || maxBuffered.CompareAndSwap(cur, n) {
				return
			}
		}
	}
	// A long ack timeout: a denied record must not wait for it.
	p := newPublisher(t, js, WithAckTimeout(time.Minute), WithBufferBytes(limit), WithObserver(obs))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	want := map[string]bool{}
	denied := 0
	for i := range 3000 {
		r := testRecord(i, nil)
		if i%10 == 3 {
			r.Subject = fmt.Appendf(nil, "t.denied.%d", i%4)
			denied++
		} else {
			want[string(r.ID)] = true
		}
		if err := p.Publish(ctx, r); err != nil {
			t.Fatalf("publish %d: %v; stats %+v", i, err, p.Stats())
		}
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) {
		t.Fatalf("Flush = %v, want ErrNotStored; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, js, "TEST", want)
	st := p.Stats()
	if got := reasons.get("denied"); got != int64(denied) || st.Failed != uint64(denied) || st.Retried != 0 {
		t.Fatalf("denied counted %d of %d; stats %+v", got, denied, st)
	}
	if st.Buffered != 0 || st.BufferedBytes != 0 || maxBuffered.Load() > limit+4<<10 {
		t.Fatalf("buffer: stats %+v, peak %d bytes", st, maxBuffered.Load())
	}

	// A large body is stored byte-exact, one over the server's max payload
	// is refused, and the others still go on.
	big := testRecord(5000, nil)
	big.Data = bytes.Repeat([]byte("0123456789abcdef"), 600<<10/16)
	big.ID = MsgID(nil, big.Topic, big.CorrelationID, big.Data)
	tooBig := testRecord(5001, nil)
	tooBig.Data = make([]byte, nc.MaxPayload()+1)
	after := testRecord(5002, nil)
	if err := p.Publish(ctx, big); err != nil {
		t.Fatal(err)
	}
	if err := p.Publish(ctx, tooBig); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("over max payload: %v", err)
	}
	if err := p.Publish(ctx, after); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want[string(big.ID)], want[string(after.ID)] = true, true
	msgs := readAll(t, js, "TEST")
	for _, m := range msgs {
		if m.header.Get(HeaderMsgID) == string(big.ID) && !bytes.Equal(m.data, big.Data) {
			t.Fatalf("large body stored as %d bytes, not byte-exact", len(m.data))
		}
	}
	assertExactlyOnce(t, js, "TEST", want)
	if got := reasons.get(ReasonTooLarge); got != 1 {
		t.Fatalf("too_large counted %d times", got)
	}
}

// A record that is never acked while JetStream works (a subject a plain
// subscriber swallows: no stream answers, nobody says no) is given up after
// the bounded attempts and counted. Its timeouts do not pause the others:
// records published after its first timeout are acked well within the retry
// backoff that a pause would cost them.
func TestRecordThatIsNeverAckedIsGivenUp(t *testing.T) {
	e := newEnv(t)
	// Interest, so no "no responders"; and no reply either.
	if _, err := e.nc.SubscribeSync("x.blackhole.>"); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	const backoff = 2 * time.Second
	var reasons reasonCounter
	var timeouts atomic.Int64
	var slowest atomic.Int64
	obs := reasons.observer()
	obs.Retried = func(reason string) {
		if reason == ReasonTimeout {
			timeouts.Add(1)
		}
	}
	obs.Acked = func(latency time.Duration, _ bool) {
		if int64(latency) > slowest.Load() {
			slowest.Store(int64(latency)) // one goroutine reports acks
		}
	}
	p := newPublisher(t, e.js, WithAckTimeout(200*time.Millisecond), WithObserver(obs),
		WithMaxAttempts(3), WithRetryBackoff(backoff, backoff))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()

	lost := testRecord(0, nil)
	lost.Subject = []byte("x.blackhole.q")
	if err := p.Publish(ctx, lost); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the first ack timeout", func() bool { return timeouts.Load() > 0 })
	want := map[string]bool{}
	for i := 1; i <= 200; i++ {
		r := testRecord(i, nil)
		want[string(r.ID)] = true
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) {
		t.Fatalf("Flush = %v, want ErrNotStored; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, e.js, "TEST", want)
	if st := p.Stats(); st.Failed != 1 || st.Acked != 200 || reasons.get(ReasonUnacked) != 1 {
		t.Fatalf("stats %+v, unacked %d", st, reasons.get(ReasonUnacked))
	}
	if d := time.Duration(slowest.Load()); d >= backoff/2 {
		t.Fatalf("records waited %s for their acks: the lost record's timeouts paused them", d)
	}
}

// A denial is not remembered: once the operator grants the subject, records
// to it are stored.
func TestDeniedSubjectGrantedLater(t *testing.T) {
	opts := authServerOpts(t.TempDir(), server.RANDOM_PORT, "pw")
	srv := startAuthServer(t, opts)
	nc := connectAuth(t, srv.ClientURL(), "pw")
	js := mustJS(t, nc)
	mustStream(t, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	var reasons reasonCounter
	p := newPublisher(t, js, WithAckTimeout(time.Minute), WithObserver(reasons.observer()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	denied := testRecord(1, nil)
	denied.Subject = []byte("t.denied.a")
	if err := p.Publish(ctx, denied); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); !errors.Is(err, ErrNotStored) || reasons.get(ReasonDenied) != 1 {
		t.Fatalf("Flush = %v, denied %d", err, reasons.get(ReasonDenied))
	}

	granted := *opts
	granted.Users = []*server.User{{Username: "gcnats", Password: "pw"}}
	if err := srv.ReloadOptions(&granted); err != nil {
		t.Fatal(err)
	}
	later := testRecord(2, nil)
	later.Subject = []byte("t.denied.a")
	if err := p.Publish(ctx, later); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("after the grant: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, js, "TEST", map[string]bool{string(later.ID): true})
}

// An account that has used up its JetStream storage (a quota set by the
// operator, "resource limits exceeded for account", 400 10002) cannot store
// an event now, but can once old messages age out or the quota is raised:
// the records wait and are retried, as for a full stream, instead of being
// given up by the thousand.
func TestAccountQuotaIsRetried(t *testing.T) {
	conf := writeTestFile(t, "quota.conf", fmt.Sprintf(`
listen: "127.0.0.1:-1"
no_sys_acc: true
jetstream: {store_dir: %q}
accounts: {
	Q: {jetstream: {max_file: 8KB, max_mem: 0}, users: [{user: q, password: q}]}
}
`, t.TempDir()))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	srv := startAuthServer(t, opts)
	nc := connectTest(t, fmt.Sprintf("nats://q:q@%s", srv.Addr()))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := EnsureStream(ctx, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var reasons reasonCounter
	var serverRetries atomic.Int64
	obs := reasons.observer()
	obs.Retried = func(reason string) {
		if reason == ReasonServer {
			serverRetries.Add(1)
		}
	}
	p := newPublisher(t, js, WithObserver(obs))
	want := map[string]bool{}
	for i := range 100 { // about 28 KB against 8 KB
		r := testRecord(i, nil)
		want[string(r.ID)] = true
		if err := p.Publish(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a record refused for the account's quota and retried", func() bool {
		return serverRetries.Load() > 0 || reasons.get(ReasonRejected) > 0
	})
	if n := reasons.get(ReasonRejected); n > 0 {
		t.Fatalf("%d records given up for the account's quota (stats %+v)", n, p.Stats())
	}
	// Room again, as when old messages age out: each purge frees what
	// was stored, until every record is in.
	for p.Stats().Buffered > 0 {
		if err := s.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 10*time.Second, "more records stored", func() bool {
			info, err := s.Info(ctx)
			return p.Stats().Buffered == 0 || (err == nil && info.State.Msgs > 0)
		})
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v (stats %+v)", err, p.Stats())
	}
	// Every message stored took a sequence: as many as records, each
	// acked once, is each stored once.
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); info.State.LastSeq != uint64(len(want)) || st.Acked != uint64(len(want)) || st.Failed != 0 || st.Duplicates != 0 {
		t.Fatalf("stream stored %d messages for %d records (stats %+v)", info.State.LastSeq, len(want), st)
	}
}

// A user the server does not let use the JetStream API gets no answer to
// its requests, only a permissions violation on the connection: stream
// set-up ends at once with it, not with a timeout that reads like a
// cluster that is not ready (and is waited for).
func TestEnsureStreamDeniedAPI(t *testing.T) {
	opts := &server.Options{
		ServerName: "gcnats-noapi", Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		JetStream: true, StoreDir: t.TempDir(),
		Users: []*server.User{{Username: "gcnats", Password: "pw", Permissions: &server.Permissions{
			Publish: &server.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.>"}},
		}}},
	}
	srv := startAuthServer(t, opts)
	nc := connectTest(t, "nats://gcnats:pw@"+srv.Addr().String())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int64
	own := func(*nats.Conn, *nats.Subscription, error) { seen.Add(1) }
	nc.SetErrorHandler(own)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = EnsureStream(ctx, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	if ctx.Err() != nil {
		t.Fatalf("EnsureStream waited %s: %v", 30*time.Second, err)
	}
	if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "$JS.API.STREAM.INFO.TEST") || Temporary(err) {
		t.Fatalf("EnsureStream = %v (temporary %v); want the permissions violation on $JS.API.STREAM.INFO.TEST, not temporary", err, Temporary(err))
	}
	// The connection's own handler saw the violation too, and is the
	// connection's handler again.
	if seen.Load() == 0 {
		t.Error("the connection's own error handler did not see the violation")
	}
	if reflect.ValueOf(nc.ErrorHandler()).Pointer() != reflect.ValueOf(own).Pointer() {
		t.Error("the connection's error handler was not put back")
	}
}
