package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

// harness is a simulated org, a real JetStream server in the test process
// and gcnats between them, as a user would run it.
type harness struct {
	t    *testing.T
	sim  *simulator.Server
	nats *publisher.Embedded
	nc   *nats.Conn
	js   jetstream.JetStream
	logs *syncBuffer

	environ   map[string]string
	natsStore string
	*replica  // the first sidecar
}

// replica is one running sidecar.
type replica struct {
	t      *testing.T
	sc     *sidecar
	cancel context.CancelFunc
	done   chan error
}

// testTimeout bounds every wait of a test: long enough for a loaded 2-core
// CI machine under -race, short enough to fail rather than hang.
const testTimeout = 60 * time.Second

func newHarness(t *testing.T, simOpts simulator.Options, environ map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, logs: &syncBuffer{}}
	if simOpts.Logger == nil {
		// Sockets and channels as the org saw them, beside the sidecar's
		// view of them (a socket is named by the client's port in both).
		simOpts.Logger = slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug})).With("side", "sim")
	}
	h.sim = simulator.Start(t, simOpts)
	var err error
	h.natsStore = t.TempDir()
	// A port of its own, not the kernel's pick: fault tests restart the
	// server on it (see natstest.FreePort).
	listen := fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t))
	h.nats, err = publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: listen, StoreDir: h.natsStore})
	if err != nil {
		t.Fatalf("start JetStream: %v", err)
	}
	t.Cleanup(h.nats.Shutdown)
	h.nc, err = nats.Connect(h.nats.ClientURL(),
		// Beside the sidecar's logs, not nats.go's default of standard
		// error: fault tests take this server down under it.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			fmt.Fprintf(h.logs, "the test's NATS connection: %v\n", err)
		}))
	if err != nil {
		t.Fatalf("connect to JetStream: %v", err)
	}
	t.Cleanup(h.nc.Close)
	h.js, err = jetstream.New(h.nc)
	if err != nil {
		t.Fatal(err)
	}
	h.environ = map[string]string{
		"GENESYSCLOUD_API_URL":            h.sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID":     h.sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET": h.sim.ClientSecret(),
		"NATS_URL":                        h.nats.ClientURL(),
		"GCNATS_HTTP_ADDR":                "127.0.0.1:0",
		"GCNATS_LOG_LEVEL":                "debug",
		"GCNATS_LOG_FORMAT":               "text",
	}
	maps.Copy(h.environ, environ)
	return h
}

// writeFile writes a file in the test's temporary directory.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// start runs the sidecar and returns once the simulator shows every topic
// subscribed on a connected channel and the sidecar says it is ready.
func (h *harness) start(topics int) {
	h.t.Helper()
	h.replica = h.launch()
	h.waitSim("every topic subscribed on a connected channel", func(s simulator.Snapshot) bool {
		return s.Topics(true) == topics
	})
	h.replica.waitReady(h)
}

// startReplica runs a second sidecar with the same settings.
func (h *harness) startReplica() *replica {
	h.t.Helper()
	r := h.launch()
	r.waitReady(h)
	return r
}

func (h *harness) launch() *replica {
	h.t.Helper()
	s, err := loadSettings(h.environ)
	if err != nil {
		h.t.Fatalf("settings: %v", err)
	}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	r := &replica{t: h.t, cancel: cancel, done: make(chan error, 1)}
	started := make(chan *sidecar, 1)
	go func() {
		r.done <- runSidecar(ctx, s, log, sidecarHooks{started: func(sc *sidecar) { started <- sc }})
	}()
	select {
	case r.sc = <-started:
	case err := <-r.done:
		h.t.Fatalf("sidecar did not start: %v\n%s", err, h.logs)
	case <-time.After(testTimeout):
		h.t.Fatalf("sidecar did not start in %s\n%s", testTimeout, h.logs)
	}
	h.t.Cleanup(func() { r.stop() })
	return r
}

// waitReady waits until the sidecar itself says every channel is up: a
// socket has answered a ping, so events emitted now reach it.
func (r *replica) waitReady(h *harness) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := r.sc.conn.Wait(ctx, func(s connector.Status) bool { ok, _ := s.Ready(); return ok }); err != nil {
		_, why := r.sc.conn.Status().Ready()
		h.t.Fatalf("sidecar not ready: %s\n%s", why, h.logs)
	}
}

func (h *harness) waitSim(what string, cond func(simulator.Snapshot) bool) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.sim.Wait(ctx, cond); err != nil {
		h.t.Fatalf("waiting for %s: %v\n%s", what, err, h.logs)
	}
}

// stop shuts the sidecar down as SIGTERM does and returns its error.
func (r *replica) stop() error {
	if r.cancel == nil {
		return nil
	}
	r.cancel()
	r.cancel = nil
	select {
	case err := <-r.done:
		return err
	case <-time.After(testTimeout):
		r.t.Fatalf("sidecar did not stop in %s", testTimeout)
		return nil
	}
}

// storedMsg is one message read back from the stream.
type storedMsg struct {
	Subject string
	Header  nats.Header
	Data    []byte
}

// collect reads the stream from the start until it has read want messages.
//
// On a cluster that has just lost or changed leaders, a consumer create
// request can go unanswered and an ordered consumer can vanish under a
// pull ("no responders"): either way, ask again from the message after
// the last one read rather than fail or wait out the test's timeout.
//
// Gap records (header Gcnats-Gap) are skipped: they are not events, and
// the tests that look for them read them with collectAll.
func (h *harness) collect(stream string, want int) []storedMsg {
	h.t.Helper()
	return h.read(stream, want, false)
}

// collectAll reads the stream's first want messages, gap records included.
func (h *harness) collectAll(stream string, want int) []storedMsg {
	h.t.Helper()
	return h.read(stream, want, true)
}

// withoutGaps leaves out gap records.
func withoutGaps(msgs []storedMsg) []storedMsg {
	var out []storedMsg
	for _, m := range msgs {
		if m.Header.Get(publisher.HeaderGap) == "" {
			out = append(out, m)
		}
	}
	return out
}

// eventMsgs is how many of the stream's messages are events, not gap
// records; it reads the whole stream.
func (h *harness) eventMsgs(stream string) int {
	h.t.Helper()
	return len(withoutGaps(h.collectAll(stream, int(h.streamMsgs(stream)))))
}

func (h *harness) read(stream string, want int, withGaps bool) []storedMsg {
	h.t.Helper()
	// The bound is on a stall, not on the whole read: a 30-minute chaos
	// run stores about a million messages, which take longer than
	// testTimeout to read back under -race.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stall := time.AfterFunc(testTimeout, cancel)
	defer stall.Stop()
	var out []storedMsg
	var next uint64 = 1 // stream sequence of the next message to read
	for len(out) < want {
		if ctx.Err() != nil {
			h.t.Fatalf("stream %s: read %d of %d messages, then nothing for %s\n%s", stream, len(out), want, testTimeout, h.logs)
		}
		actx, acancel := context.WithTimeout(ctx, 5*time.Second)
		cons, err := h.js.OrderedConsumer(actx, stream, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: next,
		})
		acancel()
		if err != nil {
			h.t.Logf("collect: consumer from seq %d: %v; asking again", next, err)
			continue
		}
		for len(out) < want {
			batch, err := cons.Fetch(want-len(out), jetstream.FetchMaxWait(time.Second))
			if err == nil {
				for m := range batch.Messages() {
					stall.Reset(testTimeout)
					if md, merr := m.Metadata(); merr == nil {
						next = md.Sequence.Stream + 1
					}
					if !withGaps && m.Headers().Get(publisher.HeaderGap) != "" {
						continue
					}
					out = append(out, storedMsg{Subject: m.Subject(), Header: m.Headers(), Data: bytes.Clone(m.Data())})
				}
				err = batch.Error()
			}
			if errors.Is(err, nats.ErrNoResponders) {
				h.t.Logf("collect: consumer lost at seq %d: %v; making another", next, err)
				break
			}
			if err != nil && !errors.Is(err, nats.ErrTimeout) {
				h.t.Fatalf("fetch: %v", err)
			}
			if ctx.Err() != nil {
				break
			}
		}
	}
	return out
}

// streamMsgs is how many messages the stream holds.
func (h *harness) streamMsgs(stream string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), stream)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Msgs
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	// wrote, when not nil, is closed by the next Write.
	wrote chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.wrote != nil {
		close(b.wrote)
		b.wrote = nil
	}
	return b.buf.Write(p)
}

// waitFor returns once what has been written contains s, or ctx ends.
func (b *syncBuffer) waitFor(ctx context.Context, s string) error {
	for {
		b.mu.Lock()
		if bytes.Contains(b.buf.Bytes(), []byte(s)) {
			b.mu.Unlock()
			return nil
		}
		if b.wrote == nil {
			b.wrote = make(chan struct{})
		}
		wrote := b.wrote
		b.mu.Unlock()
		select {
		case <-wrote:
		case <-ctx.Done():
			return fmt.Errorf("no %q in the log: %w", s, ctx.Err())
		}
	}
}

// full is everything written.
func (b *syncBuffer) full() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// String is the tail, for failure messages.
func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	if len(s) > 20000 {
		s = "…" + s[len(s)-20000:]
	}
	return s
}

// accounting compares what the simulator sent with what the stream holds.
type accounting struct {
	Sent, Stored, Lost, Duplicated, Unexpected int
	lost                                       []uint64
}

func (a accounting) String() string {
	return fmt.Sprintf("sent %d, stored %d, lost %d, duplicated %d, unexpected %d", a.Sent, a.Stored, a.Lost, a.Duplicated, a.Unexpected)
}

// account matches stored messages to the simulator's events by
// correlation id. mayLose says which unstored events the test accepts as
// lost (sent while no socket was connected); nil accepts none.
func account(events []simulator.Event, msgs []storedMsg, mayLose func(simulator.Event) bool) accounting {
	count := make(map[string]int, len(msgs))
	a := accounting{Sent: len(events), Stored: len(msgs)}
	for _, m := range msgs {
		count[m.Header.Get("Genesys-Correlation-Id")]++
	}
	known := make(map[string]bool, len(events))
	for _, ev := range events {
		known[ev.CorrelationID] = true
		switch n := count[ev.CorrelationID]; {
		case n == 0 && (mayLose == nil || !mayLose(ev)):
			a.Lost++
			a.lost = append(a.lost, ev.Seq)
		case n > 1:
			a.Duplicated += n - 1
		}
	}
	for id := range count {
		if !known[id] {
			a.Unexpected++
		}
	}
	return a
}

// counterValue reads a counter's current value.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// gatheredValue is the value of the unlabelled gauge or counter name in
// reg.
func gatheredValue(t *testing.T, reg prometheus.Gatherer, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name || len(f.GetMetric()) != 1 {
			continue
		}
		m := f.GetMetric()[0]
		if g := m.GetGauge(); g != nil {
			return g.GetValue()
		}
		return m.GetCounter().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// startNATS runs a nats-server with opts until the test ends.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	return srv
}
