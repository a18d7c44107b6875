package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/internal/plainchannel"
	"github.com/gcnats/gcnats/internal/rawio"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

// The benchmarks in this file measure the whole product as a user feels
// it, each figure beside a baseline measured in the same run on the same
// server: the simulated org writes frames into a real WebSocket as fast as
// (or at the rate) asked, gcnats reads, routes, hashes and publishes them
// into a file-storage stream with a 2-minute duplicate window, and the
// figure is taken when JetStream has stored them. They are benchmarks, not
// tests: nothing here asserts a target; `make bench` prints the figures
// and the README records one run.
//
// Each runs benchRounds rounds itself (use -benchtime 1x, and -count for
// more) and alternates gcnats and its baseline round by round, so a
// neighbour's load on a shared machine falls on both alike; it reports
// the medians and their ratio.
var benchRounds = envInt("GCNATS_BENCH_ROUNDS", 1)

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// e2eEnv is a JetStream server (file storage), a simulated org whose
// users' presence topics gcnats subscribes, and gcnats running in this
// process between them, as `gcnats` runs. GCNATS_BENCH_PPROF_ADDR, when
// set, becomes the sidecar's GCNATS_PPROF_ADDR (here and in
// BenchmarkProcess), for profiling it while a benchmark runs.
type e2eEnv struct {
	b      *testing.B
	sim    *simulator.Server
	srv    *publisher.Embedded
	js     jetstream.JetStream
	sc     *sidecar
	topics []string
	stop   func()
}

func startE2E(b *testing.B, topics, padding int) *e2eEnv {
	b.Helper()
	e := &e2eEnv{b: b}
	e.sim = simulator.Start(b, simulator.Options{Queues: 1, Users: topics, BodyPadding: padding, Seed: 7, RecordLimit: 1000})
	for _, u := range e.sim.Users() {
		e.topics = append(e.topics, "v2.users."+u.ID+".presence")
	}
	e.srv, e.js = benchJetStream(b, jetstream.WithPublishAsyncMaxPending(4096))
	s, err := loadSettings(map[string]string{
		"GENESYSCLOUD_API_URL":            e.sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID":     e.sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET": e.sim.ClientSecret(),
		"NATS_URL":                        e.srv.ClientURL(),
		"GCNATS_TOPICS":                   "v2.users.*.presence",
		"GCNATS_HTTP_ADDR":                "",
		"GCNATS_DEDUP_WINDOW":             "2m",
		"GCNATS_PPROF_ADDR":               os.Getenv("GCNATS_BENCH_PPROF_ADDR"),
	})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	started := make(chan *sidecar, 1)
	go func() {
		done <- runSidecar(ctx, s, slog.New(slog.DiscardHandler), sidecarHooks{started: func(sc *sidecar) { started <- sc }})
	}()
	select {
	case e.sc = <-started:
	case err := <-done:
		b.Fatalf("sidecar: %v", err)
	}
	e.stop = func() { cancel(); <-done }
	b.Cleanup(func() { e.stop() })
	wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
	defer wcancel()
	if err := e.sim.Wait(wctx, func(s simulator.Snapshot) bool { return s.Topics(true) == topics }); err != nil {
		b.Fatal(err)
	}
	if err := e.sc.conn.Wait(wctx, func(st connector.Status) bool { ok, _ := st.Ready(); return ok }); err != nil {
		b.Fatal(err)
	}
	return e
}

// purge empties the stream between rounds (untimed), so every round
// stores into a stream of the same size.
func (e *e2eEnv) purge() {
	st, err := e.js.Stream(context.Background(), e.sc.settings.Stream)
	if err != nil {
		e.b.Fatal(err)
	}
	if err := st.Purge(context.Background()); err != nil {
		e.b.Fatal(err)
	}
}

// waitAcked waits until the sidecar's publisher has had target records
// acknowledged by JetStream, that is stored.
func (e *e2eEnv) waitAcked(target uint64) {
	deadline := time.Now().Add(2 * time.Minute)
	for e.sc.pub.Stats().Acked < target {
		if time.Now().After(deadline) {
			e.b.Fatalf("acked %d of %d after two minutes", e.sc.pub.Stats().Acked, target)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// ceilingMsgs are the messages gcnats would publish for n events like the
// ones it reads, built before the clock starts: subject, the five headers
// with their dedup id, and the body. A second simulated org without sockets
// makes them, so the same generator gives the same shapes and sizes.
func ceilingMsgs(b *testing.B, padding, n int) []*nats.Msg {
	sim := simulator.Start(b, simulator.Options{Queues: 1, Users: 100, BodyPadding: padding, Seed: 8, RecordLimit: 1})
	var topics []string
	for _, u := range sim.Users() {
		topics = append(topics, "v2.users."+u.ID+".presence")
	}
	evs := sim.EmitBatch(sim.Prepare(n, topics...))
	msgs := make([]*nats.Msg, len(evs))
	at := time.Now().UTC().Format(time.RFC3339Nano)
	for i, ev := range evs {
		id := publisher.MsgID(nil, []byte(ev.Topic), []byte(ev.CorrelationID), ev.Body)
		msgs[i] = &nats.Msg{Subject: "genesys." + ev.Topic, Data: ev.Body, Header: nats.Header{
			publisher.HeaderMsgID:         {string(id)},
			publisher.HeaderTopic:         {ev.Topic},
			publisher.HeaderVersion:       {"2"},
			publisher.HeaderCorrelationID: {ev.CorrelationID},
			publisher.HeaderReceivedAt:    {at},
		}}
	}
	sim.Close()
	return msgs
}

// publishCeiling is the raw JetStream async-publish ceiling: PublishMsgAsync
// with 4,096 in flight, then every ack.
func publishCeiling(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg) time.Duration {
	start := time.Now()
	for _, m := range msgs {
		publishStalled(b, js, m)
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("acks outstanding after two minutes")
	}
	return time.Since(start)
}

// publishStalled publishes m with PublishMsgAsync, trying again while
// 4,096 are in flight.
func publishStalled(b *testing.B, js jetstream.JetStream, m *nats.Msg) {
	for {
		_, err := js.PublishMsgAsync(m)
		if err == nil {
			return
		}
		if err != jetstream.ErrTooManyStalledMsgs {
			b.Fatal(err)
		}
	}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkE2EThroughput: the simulator writes prepared frames into the
// socket as fast as gcnats reads them (TCP flow control paces it), and the
// clock stops when JetStream has acknowledged the last one. The baseline
// is the ceiling: the same number of equally sized messages, headers and
// dedup ids built in advance, published with PublishMsgAsync and 4,096 in
// flight to the same server and stream. Beside both, the forward-only
// forwarder (forwardOnly) says how near the ceiling any program that reads
// the events from a socket can come on this machine.
func BenchmarkE2EThroughput(b *testing.B) {
	for _, c := range []struct{ padding, n int }{{512, 60_000}, {4096, 20_000}} {
		b.Run(fmt.Sprintf("size=%d", c.padding), func(b *testing.B) {
			e := startE2E(b, 100, c.padding)
			fo := startForwardOnly(b, 100, c.padding)
			var gc, ceil, floor []float64
			var frameBytes int
			for range b.N {
				for range benchRounds {
					msgs := ceilingMsgs(b, c.padding, c.n)
					e.purge()
					d := publishCeiling(b, e.js, msgs)
					ceil = append(ceil, float64(c.n)/d.Seconds())

					batch := e.sim.Prepare(c.n, e.topics...)
					e.purge()
					before := e.sc.pub.Stats().Acked
					start := time.Now()
					evs := e.sim.EmitBatch(batch)
					e.waitAcked(before + uint64(c.n))
					d = time.Since(start)
					gc = append(gc, float64(c.n)/d.Seconds())
					frameBytes = len(evs[0].Frame)

					msgs = ceilingMsgs(b, c.padding, c.n)
					e.purge()
					d = fo.run(b, e.js, msgs)
					floor = append(floor, float64(c.n)/d.Seconds())
				}
			}
			g, r, f := median(gc), median(ceil), median(floor)
			b.ReportMetric(g, "gcnats-events/s")
			b.ReportMetric(r, "ceiling-events/s")
			b.ReportMetric(g/r, "ratio")
			b.ReportMetric(f, "forward-only-events/s")
			b.ReportMetric(f/r, "forward-only-ratio")
			b.ReportMetric(g/f, "ratio-to-forward-only")
			b.ReportMetric(float64(frameBytes), "frame-bytes")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// forwardOnly is the thinnest forwarder there can be, as a baseline: a
// socket of a simulated org of its own (so gcnats does not read its
// frames too), and for each event frame read, the ceiling's ready-made
// message sent with the frame's bytes as its data. It does not decode,
// route, hash or keep anything: what it adds to the ceiling is the
// simulator's writes and the socket's reads, which every forwarder pays.
type forwardOnly struct {
	sim    *simulator.Server
	topics []string
	conn   *websocket.Conn
	buf    bytes.Buffer
}

func startForwardOnly(b *testing.B, topics, padding int) *forwardOnly {
	f := &forwardOnly{sim: simulator.Start(b, simulator.Options{Queues: 1, Users: topics, BodyPadding: padding, Seed: 9, RecordLimit: 1000})}
	for _, u := range f.sim.Users() {
		f.topics = append(f.topics, "v2.users."+u.ID+".presence")
	}
	token, err := plainchannel.Token(f.sim.URL(), f.sim.ClientID(), f.sim.ClientSecret())
	if err != nil {
		b.Fatal(err)
	}
	// Read as gcnats reads its sockets (package rawio).
	d := *websocket.DefaultDialer
	d.NetDialContext = (&rawio.Dialer{}).DialContext
	if f.conn, err = plainchannel.Open(f.sim.URL(), token, f.topics, &d); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.conn.Close() })
	return f
}

// run has the simulator write len(msgs) events into the socket while it
// reads them, publishing msgs[i] for the i-th with as many bytes of its
// frame as msgs[i]'s body holds, and returns the time from the first write
// to the last ack.
func (f *forwardOnly) run(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg) time.Duration {
	batch := f.sim.Prepare(len(msgs), f.topics...)
	emitted := make(chan struct{})
	start := time.Now()
	go func() { f.sim.EmitBatch(batch); close(emitted) }()
	for i := 0; i < len(msgs); {
		_, r, err := f.conn.NextReader()
		if err != nil {
			b.Fatal(err)
		}
		f.buf.Reset()
		if _, err := f.buf.ReadFrom(r); err != nil {
			b.Fatal(err)
		}
		if plainchannel.IsControl(f.buf.Bytes()) {
			continue // a heartbeat
		}
		m := msgs[i]
		// nats.go copies the data into its buffer before PublishMsgAsync
		// returns, so the next read may reuse f.buf.
		m.Data = f.buf.Bytes()[:min(len(m.Data), f.buf.Len())]
		publishStalled(b, js, m)
		i++
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		b.Fatal("acks outstanding after two minutes")
	}
	<-emitted
	return time.Since(start)
}

// BenchmarkE2ELatency: 5,000 events/s over 100 topics, each frame timed
// from just before the simulator writes it to the socket to the moment
// JetStream stored it (the stream's own timestamp of the message, same
// clock). The baseline is the same rate of the same kind of messages
// published straight to JetStream, timed from just before PublishMsgAsync.
func BenchmarkE2ELatency(b *testing.B) {
	const (
		rate     = 5000
		duration = 4 * time.Second
		n        = int(rate * duration / time.Second)
	)
	e := startE2E(b, 100, 512)
	var gcP, baseP [][4]float64
	for range b.N {
		for range benchRounds {
			// Baseline.
			msgs := ceilingMsgs(b, 512, n)
			e.purge()
			sent := make(map[string]time.Time, n)
			pace(n, rate, func(i int) {
				sent[msgs[i].Header.Get(publisher.HeaderCorrelationID)] = time.Now()
				if _, err := e.js.PublishMsgAsync(msgs[i]); err != nil {
					b.Fatal(err)
				}
			})
			<-e.js.PublishAsyncComplete()
			baseP = append(baseP, percentiles(b, e.js, e.sc.settings.Stream, sent))

			// gcnats: one prepared event per write, so each has its own time.
			batches := make([]*simulator.Batch, n)
			for i := range batches {
				batches[i] = e.sim.Prepare(1, e.topics[i%len(e.topics)])
			}
			e.purge()
			before := e.sc.pub.Stats().Acked
			sent = make(map[string]time.Time, n)
			pace(n, rate, func(i int) {
				ev := e.sim.EmitBatch(batches[i])[0]
				sent[ev.CorrelationID] = ev.At
			})
			e.waitAcked(before + uint64(n))
			gcP = append(gcP, percentiles(b, e.js, e.sc.settings.Stream, sent))
		}
	}
	report := func(name string, ps [][4]float64) {
		for k, q := range []string{"p50", "p99", "p99.9", "max"} {
			var xs []float64
			for _, p := range ps {
				xs = append(xs, p[k])
			}
			b.ReportMetric(median(xs), name+"-"+q+"-µs")
		}
	}
	report("gcnats", gcP)
	report("baseline", baseP)
	b.ReportMetric(0, "ns/op")
}

// pace calls emit(i) for i < n at rate per second, on schedule: a late call
// is not made up for by waiting less later, and none is skipped.
func pace(n, rate int, emit func(i int)) {
	start := time.Now()
	step := time.Second / time.Duration(rate)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * step)); d > 0 {
			time.Sleep(d)
		}
		emit(i)
	}
}

// percentiles reads the stream back and returns p50, p99, p99.9 and max of
// stored-at minus sent, in µs, matching messages by correlation id.
func percentiles(b *testing.B, js jetstream.JetStream, stream string, sent map[string]time.Time) [4]float64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var lat []float64
	for len(lat) < len(sent) {
		batch, err := cons.Fetch(len(sent)-len(lat), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				b.Fatal(err)
			}
			at, ok := sent[m.Headers().Get(publisher.HeaderCorrelationID)]
			if !ok {
				b.Fatalf("a message nobody sent: %v", m.Headers())
			}
			lat = append(lat, float64(md.Timestamp.Sub(at).Microseconds()))
		}
		if got == 0 && ctx.Err() != nil {
			b.Fatalf("read %d of %d", len(lat), len(sent))
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	return [4]float64{q(0.50), q(0.99), q(0.999), lat[len(lat)-1]}
}

func freeAddr(b testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(b))
}

func isReady(addr string) bool {
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cpuOf is the CPU time of every thread of pid, to the nanosecond
// (schedstat's first field), falling back to /proc/pid/stat's ticks.
func cpuOf(b *testing.B, pid int) time.Duration {
	if ns := schedstatSum(pid, 0); ns > 0 {
		return time.Duration(ns)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// threadRuns is how many times the threads of pid were put on a CPU
// (schedstat's third field): each is a wake-up, a thread woken to run a
// goroutine or to take a system call's answer.
func threadRuns(pid int) int64 { return schedstatSum(pid, 2) }

// monitorRuns is threadRuns for the Go runtime's monitor thread (sysmon)
// alone. The runtime starts it first, before any other thread, so on Linux
// it is pid+1. Asleep while the process idles, it is woken by the first
// system call after idling and then polls every 20 µs until every P is
// idle again: at a thousand events a second, that is per event.
func monitorRuns(pid int) int64 { return schedstatField(monitorStat(pid), 2) }

// monitorCPU is the monitor thread's CPU time (schedstat's first field).
func monitorCPU(pid int) time.Duration { return time.Duration(schedstatField(monitorStat(pid), 0)) }

func monitorStat(pid int) string { return fmt.Sprintf("/proc/%d/task/%d/schedstat", pid, pid+1) }

// schedstatSum sums one field of /proc/pid/task/*/schedstat over pid's
// threads.
func schedstatSum(pid, field int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, t := range tasks {
		total += schedstatField(t, field)
	}
	return total
}

// schedstatField is one field of a thread's schedstat file; 0 when the
// thread has ended.
func schedstatField(path string, field int) int64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	f := strings.Fields(string(data))
	if len(f) <= field {
		return 0
	}
	n, _ := strconv.ParseInt(f[field], 10, 64)
	return n
}

var selfMu sync.Mutex

// selfCPU is this process's CPU time (the simulator, the JetStream server
// and the benchmark itself).
func selfCPU() time.Duration {
	selfMu.Lock()
	defer selfMu.Unlock()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM is the peak resident set of pid in MB.
func vmHWM(b *testing.B, pid int) float64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	b.Fatal("no VmHWM")
	return 0
}
