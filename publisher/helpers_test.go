package publisher

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
)

// TestMain fails the package if any test left a goroutine behind: servers,
// connections and publishers must all stop.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	if code == 0 {
		deadline := time.Now().Add(10 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond) // polling a condition, not waiting for an effect
		}
		if n := runtime.NumGoroutine(); n > before {
			buf := make([]byte, 1<<20)
			fmt.Fprintf(os.Stderr, "goroutine leak: %d before, %d after\n%s\n", before, n, buf[:runtime.Stack(buf, true)])
			code = 1
		}
	}
	os.Exit(code)
}

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer runs an embedded server on listen (port -1: any) with its store
// in dir; it is shut down when the test ends.
func startServer(t testing.TB, dir, listen string) *Embedded {
	t.Helper()
	e, err := StartEmbedded(EmbeddedOptions{Listen: listen, StoreDir: dir, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func connectTest(t testing.TB, url string) *nats.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := Connect(ctx, url, ConnectOptions{
		Name:    "gcnats-test",
		Logger:  testLogger(),
		Options: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type env struct {
	srv    *Embedded
	dir    string
	nc     *nats.Conn
	js     jetstream.JetStream
	stream jetstream.Stream
}

// newEnv starts a server, connects and creates stream TEST on "t.>".
func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{dir: t.TempDir()}
	// A port of its own, not the kernel's pick: restart brings the server
	// back on it (see natstest.FreePort).
	e.srv = startServer(t, e.dir, fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)))
	e.nc = connectTest(t, e.srv.ClientURL())
	js, err := jetstream.New(e.nc)
	if err != nil {
		t.Fatal(err)
	}
	e.js = js
	e.stream, err = EnsureStream(context.Background(), js, StreamConfig{
		Name: "TEST", Subjects: []string{"t.>"}, MaxAge: time.Hour, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// stop shuts the server down and waits until the client has noticed.
func (e *env) stop(t testing.TB) {
	t.Helper()
	e.srv.Shutdown()
	waitFor(t, 10*time.Second, "client to see the disconnect", func() bool { return !e.nc.IsConnected() })
}

// restart starts the server again on the same port and store, and waits
// for the test's connection to be back: until it is, it refuses requests
// (see Connect).
func (e *env) restart(t testing.TB) {
	t.Helper()
	e.srv = startServer(t, e.dir, e.srv.Addr())
	waitFor(t, 10*time.Second, "the test's connection to be back", e.nc.IsConnected)
}

func newPublisher(t testing.TB, js jetstream.JetStream, opts ...Option) *Publisher {
	t.Helper()
	opts = append([]Option{
		WithLogger(testLogger()),
		WithAckTimeout(time.Second),
		WithRetryBackoff(10*time.Millisecond, 200*time.Millisecond),
	}, opts...)
	p, err := New(js, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, _ = p.Close(ctx)
	})
	return p
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			if os.Getenv("DUMP") != "" {
				buf := make([]byte, 1<<20)
				fmt.Fprintf(os.Stderr, "%s\n", buf[:runtime.Stack(buf, true)])
			}
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type storedMsg struct {
	subject string
	header  nats.Header
	data    []byte
}

// readAll returns every message in the stream, in order.
func readAll(t testing.TB, js jetstream.JetStream, stream string) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A cluster node just started may take the test's connection before its
	// JetStream answers: no responders, until it does.
	var s jetstream.Stream
	var err error
	waitFor(t, 30*time.Second, "JetStream answering the test's connection", func() bool {
		s, err = js.Stream(ctx, stream)
		return !errors.Is(err, nats.ErrNoResponders)
	})
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := int(info.State.Msgs)
	if want == 0 {
		return nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]storedMsg, 0, want)
	for len(out) < want {
		batch, err := cons.Fetch(min(want-len(out), 1000), jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			out = append(out, storedMsg{subject: m.Subject(), header: m.Headers(), data: m.Data()})
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatalf("read %d of %d messages, then nothing", len(out), want)
		}
	}
	return out
}

// testRecord is record i of a test run: its id is MsgID of topic and data,
// as the sidecar makes it.
func testRecord(i int, data []byte) *Record {
	topic := fmt.Sprintf("v2.routing.queues.q%d.conversations", i%7)
	data = fmt.Appendf(data[:0], `{"n":%d,"pad":"%s"}`, i, strings.Repeat("x", i%50))
	return &Record{
		Subject:    []byte("t." + topic),
		ID:         MsgID(nil, []byte(topic), nil, data),
		Topic:      []byte(topic),
		Version:    []byte("2"),
		ReceivedAt: time.Unix(1700000000, int64(i)).UTC(),
		Data:       data,
	}
}

// assertExactlyOnce checks that the stream holds exactly the ids in want,
// each once.
func assertExactlyOnce(t testing.TB, js jetstream.JetStream, stream string, want map[string]bool) {
	t.Helper()
	msgs := readAll(t, js, stream)
	seen := make(map[string]int, len(msgs))
	for _, m := range msgs {
		seen[m.header.Get(HeaderMsgID)]++
	}
	var lost, dup, extra int
	for id := range want {
		switch seen[id] {
		case 0:
			lost++
		case 1:
		default:
			dup++
		}
	}
	for id := range seen {
		if !want[id] {
			extra++
		}
	}
	if lost+dup+extra > 0 || len(msgs) != len(want) {
		t.Fatalf("stream holds %d messages for %d records: %d lost, %d stored twice or more, %d unexpected",
			len(msgs), len(want), lost, dup, extra)
	}
}

func countGoroutines() int { return runtime.NumGoroutine() }

// writeTestFile writes content to name in the test's temporary directory.
func writeTestFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
