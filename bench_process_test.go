package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

// BenchmarkProcess runs the built gcnats binary as its own process against
// a simulated org of 5,000 users (5,000 presence topics, 5 channels) and a
// JetStream server, both in this process, and measures the sidecar alone
// from /proc: how long from exec to /readyz answering 200, its CPU while
// idle (topics subscribed, no events), its CPU per event at 1,000 events/s,
// and its peak RSS (VmHWM) at the end.
//
// Beside it, in the same round and measured the same way:
//   - gcnats with GOMAXPROCS=1, which is what the Kubernetes manifests'
//     CPU limit of one core gives it (Go sizes GOMAXPROCS to the limit);
//   - gcnats with GOMAXPROCS pinned to the number of CPUs, Go's default
//     without a CPU limit, which the binary leaves for one P while the
//     load is light (package adaptprocs);
//   - the plain forwarder (internal/plainforwarder): encoding/json and one
//     synchronous JetStream publish per event, the straightforward program
//     with none of gcnats' guarantees, as the floor of what this machine
//     charges a process for the job;
//   - the same program reading the frames and dropping them: what the
//     socket alone costs;
//   - that again with its reads outside the runtime's system call
//     bookkeeping (package rawio), as gcnats reads: the socket's floor;
//   - the same program publishing each frame as it is read, undecoded,
//     with a core NATS publish (no JetStream, no ack) on one P, with raw
//     reads and writes: the floor of taking an event from the socket and
//     handing it to NATS at all, which the benchmark checks it did;
//   - gcnats with its embedded JetStream server, as one pod runs it alone
//     (NATS_URL empty): the process's CPU then includes the server's, and
//     the benchmark checks, from the store it leaves, that it stored
//     every event;
//   - this process (simulator and JetStream server) over gcnats' windows;
//   - with GCNATS_BENCH_COMPARE naming another gcnats binary (a build of
//     another commit), that binary run as gcnats is, right after it: an
//     A/B comparison whose two sides share each round's machine, which
//     moves by more than most changes between runs. Two builds of the
//     same commit measure the noise that is left. That build runs with
//     its embedded server too, beside gcnats with its own.
func BenchmarkProcess(b *testing.B) {
	const (
		topics = 5000
		rate   = 1000
	)
	bin := buildBinary(b)
	plain := buildPlainForwarder(b)
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	plainStream(b, srv.ClientURL())
	forwarded := countForwarded(b, srv.ClientURL())
	org := newProcessOrg(b, topics, 9, "NATS_URL="+srv.ClientURL())
	sim, base := org.sim, org.env
	topicsFile := filepath.Join(b.TempDir(), "topics")
	if err := os.WriteFile(topicsFile, []byte(strings.Join(org.topics, "\n")), 0o600); err != nil {
		b.Fatal(err)
	}
	events := func() []*simulator.Batch {
		batches := make([]*simulator.Batch, rate*5)
		for i := range batches {
			batches[i] = sim.Prepare(1, org.topics[i%topics])
		}
		return batches
	}
	emit := func(batches []*simulator.Batch) {
		pace(len(batches), rate, func(i int) { sim.EmitBatch(batches[i]) })
	}

	// runPlain measures the plain forwarder with extra settings.
	runPlain := func(extra ...string) processFigures {
		readyFile := filepath.Join(b.TempDir(), "ready")
		env := slices.Concat(base, []string{"PLAIN_TOPICS_FILE=" + topicsFile, "PLAIN_READY_FILE=" + readyFile}, extra)
		f, _ := measureProcess(b, exec.Command(plain), env, func() bool { _, err := os.Stat(readyFile); return err == nil }, events(), emit)
		return f
	}

	// gcnats runs three ways in each round: as it chooses GOMAXPROCS,
	// pinned to 1 and pinned to the CPU count.
	gcnats := func(extra ...string) (processFigures, processFigures) {
		addr := freeAddr(b)
		env := slices.Concat(base, []string{"GCNATS_HTTP_ADDR=" + addr}, extra)
		return measureProcess(b, exec.Command(bin), env, func() bool { return isReady(addr) }, events(), emit)
	}
	// embedded runs a binary with its embedded server and checks that the
	// store it leaves holds every event.
	embedded := func(bin string) processFigures {
		addr, store := freeAddr(b), b.TempDir()
		env := slices.Concat(base, []string{"GCNATS_HTTP_ADDR=" + addr, "NATS_URL=", "GCNATS_EMBEDDED_LISTEN=" + freeAddr(b), "GCNATS_STORE_DIR=" + store})
		batches := events()
		f, _ := measureProcess(b, exec.Command(bin), env, func() bool { return isReady(addr) }, batches, emit)
		if n := storedIn(b, store); n != uint64(len(batches)) {
			b.Fatalf("%s with its embedded server stored %d events of %d", bin, n, len(batches))
		}
		return f
	}
	other := os.Getenv("GCNATS_BENCH_COMPARE")
	var gc, gc1, gcN, emb, pl, rd, rdRaw, fwd, self, cmp, cmpEmb []processFigures
	for range b.N {
		for round := range benchRounds {
			// The two sides take turns going first: a machine warming
			// up or cooling down over a round favours neither.
			for turn := range 2 {
				switch {
				case (turn == round%2) && other != "":
					addr := freeAddr(b)
					env := slices.Concat(base, []string{"GCNATS_HTTP_ADDR=" + addr})
					f, _ := measureProcess(b, exec.Command(other), env, func() bool { return isReady(addr) }, events(), emit)
					cmp = append(cmp, f)
				case turn != round%2:
					f, s := gcnats("GCNATS_PPROF_ADDR=" + os.Getenv("GCNATS_BENCH_PPROF_ADDR"))
					gc, self = append(gc, f), append(self, s)
				}
			}
			f, _ := gcnats(pinnedOne)
			gc1 = append(gc1, f)
			f, _ = gcnats(pinnedNCPU())
			gcN = append(gcN, f)
			for turn := range 2 {
				switch {
				case (turn == round%2) && other != "":
					cmpEmb = append(cmpEmb, embedded(other))
				case turn != round%2:
					emb = append(emb, embedded(bin))
				}
			}

			pl = append(pl, runPlain())
			rd = append(rd, runPlain("PLAIN_READ_ONLY=1"))
			rdRaw = append(rdRaw, runPlain("PLAIN_READ_ONLY=1", "PLAIN_RAW_IO=1"))
			fwd = append(fwd, runPlain("PLAIN_FORWARD_ONLY=1", "PLAIN_RAW_IO=1", pinnedOne))
		}
	}
	forwarded(uint64(len(fwd) * rate * 5))
	// The floor counts only if the plain forwarder did the job.
	if n := plainStream(b, srv.ClientURL()); n != uint64(len(pl)*rate*5) {
		b.Fatalf("the plain forwarder stored %d events of %d", n, len(pl)*rate*5)
	}
	med := func(fs []processFigures, pick func(processFigures) float64) float64 {
		var xs []float64
		for _, f := range fs {
			xs = append(xs, pick(f))
		}
		return median(xs)
	}
	perEvent := func(f processFigures) float64 { return f.perEvent }
	idle := func(f processFigures) float64 { return f.idleCPU }
	figures := []struct {
		unit string
		pick func(processFigures) float64
	}{
		{"cpu-µs/event", perEvent},
		{"thread-runs/event", func(f processFigures) float64 { return f.runs }},
		{"sysmon-runs/event", func(f processFigures) float64 { return f.monitor }},
		{"sysmon-cpu-µs/event", func(f processFigures) float64 { return f.monCPU }},
		{"idle-cpu-%", idle},
		{"peak-rss-MB", func(f processFigures) float64 { return f.hwm }},
		{"ready-s", func(f processFigures) float64 { return f.ready }},
	}
	for _, p := range []struct {
		prefix string
		figs   []processFigures
	}{{"", gc}, {"gomaxprocs1-", gc1}, {"gomaxprocs-ncpu-", gcN}, {"embedded-", emb}, {"plain-", pl}, {"read-only-", rd}, {"read-only-raw-io-", rdRaw}, {"forward-only-", fwd}} {
		for _, fig := range figures {
			b.ReportMetric(med(p.figs, fig.pick), p.prefix+fig.unit)
		}
	}
	b.ReportMetric(med(gc, perEvent)/med(pl, perEvent), "cpu-ratio-to-plain")
	b.ReportMetric(med(gc, perEvent)/med(fwd, perEvent), "cpu-ratio-to-forward-only")
	b.ReportMetric(med(gc, perEvent)/med(gcN, perEvent), "cpu-ratio-to-gomaxprocs-ncpu")
	if len(cmp) > 0 {
		for _, fig := range figures {
			b.ReportMetric(med(cmp, fig.pick), "compare-"+fig.unit)
		}
		b.ReportMetric(med(gc, perEvent)/med(cmp, perEvent), "cpu-ratio-to-compare")
		b.ReportMetric(med(gc, func(f processFigures) float64 { return f.runs })/med(cmp, func(f processFigures) float64 { return f.runs }), "runs-ratio-to-compare")
		for _, fig := range figures {
			b.ReportMetric(med(cmpEmb, fig.pick), "compare-embedded-"+fig.unit)
		}
		b.ReportMetric(med(emb, perEvent)/med(cmpEmb, perEvent), "embedded-cpu-ratio-to-compare")
	}
	// This process (simulator and JetStream server) has no ready time, RSS
	// or monitor figures of its own here.
	b.ReportMetric(med(self, idle), "baseline-idle-cpu-%")
	b.ReportMetric(med(self, perEvent), "baseline-cpu-µs/event")
	b.ReportMetric(0, "ns/op")
}

// processFigures are one process's figures in one round.
type processFigures struct {
	ready    float64 // seconds from exec to ready
	idleCPU  float64 // % of a core, all topics subscribed, no events
	perEvent float64 // CPU µs per event at the paced rate
	runs     float64 // times a thread of the process was put on a CPU, per event: its wake-ups
	monitor  float64 // of runs, those of the Go runtime's monitor thread (sysmon)
	monCPU   float64 // of perEvent, the monitor thread's
	hwm      float64 // peak RSS, MB
}

// measureProcess starts cmd with env, waits for ready, and measures it idle
// for 5 s and then while emit sends batches; it returns its figures and this
// process's over the same windows.
func measureProcess(b *testing.B, cmd *exec.Cmd, env []string, ready func() bool, batches []*simulator.Batch, emit func([]*simulator.Batch)) (proc, self processFigures) {
	const idle = 5 * time.Second
	start := time.Now()
	p := startProcess(b, cmd.Path, env)
	pid := p.cmd.Process.Pid
	for !ready() {
		if time.Since(start) > time.Minute {
			b.Fatalf("not ready after a minute:\n%s", p.all)
		}
		time.Sleep(5 * time.Millisecond)
	}
	proc.ready = time.Since(start).Seconds()
	// Let start-up's garbage be collected and the channel plan settle.
	time.Sleep(2 * time.Second)

	c0, s0 := cpuOf(b, pid), selfCPU()
	time.Sleep(idle)
	c1, s1 := cpuOf(b, pid), selfCPU()
	proc.idleCPU = 100 * (c1 - c0).Seconds() / idle.Seconds()
	self.idleCPU = 100 * (s1 - s0).Seconds() / idle.Seconds()

	r1, m1, mc1 := threadRuns(pid), monitorRuns(pid), monitorCPU(pid)
	emit(batches)
	time.Sleep(500 * time.Millisecond) // the last acks
	c2, s2 := cpuOf(b, pid), selfCPU()
	proc.runs = float64(threadRuns(pid)-r1) / float64(len(batches))
	proc.monitor = float64(monitorRuns(pid)-m1) / float64(len(batches))
	proc.monCPU = float64((monitorCPU(pid) - mc1).Microseconds()) / float64(len(batches))
	proc.perEvent = float64((c2 - c1).Microseconds()) / float64(len(batches))
	self.perEvent = float64((s2 - s1).Microseconds()) / float64(len(batches))
	proc.hwm = vmHWM(b, pid)

	p.stop(b)
	return proc, self
}

var (
	plainOnce sync.Once
	plainPath string
	plainErr  error
)

// buildPlainForwarder builds internal/plainforwarder once per test binary.
func buildPlainForwarder(b *testing.B) string {
	plainOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gcnats-plain-")
		if err != nil {
			plainErr = err
			return
		}
		plainPath = filepath.Join(dir, "plainforwarder")
		if out, err := exec.Command("go", "build", "-o", plainPath, "./internal/plainforwarder").CombinedOutput(); err != nil {
			plainErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if plainErr != nil {
		b.Fatal(plainErr)
	}
	return plainPath
}

// plainStream makes sure of the plain forwarder's stream (file storage and
// a 2-minute duplicate window, like gcnats') and says how many messages it
// holds.
func plainStream(b *testing.B, url string) uint64 {
	return streamMsgs(b, url, "PLAIN", &jetstream.StreamConfig{
		Name: "PLAIN", Subjects: []string{"plain.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	})
}

// countForwarded counts the plain forwarder's core publishes in its
// forward-only mode, on the server at url; the function it returns fails
// the benchmark unless want of them arrive within 10 s.
func countForwarded(b *testing.B, url string) func(want uint64) {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	var n atomic.Uint64
	if _, err := nc.Subscribe("floor.events", func(*nats.Msg) { n.Add(1) }); err != nil {
		b.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return func(want uint64) {
		deadline := time.Now().Add(10 * time.Second)
		for n.Load() < want && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := n.Load(); got != want {
			b.Fatalf("the forward-only forwarder published %d events of %d", got, want)
		}
	}
}

// storedIn opens the store a gcnats process with its embedded server left
// behind and says how many events its stream holds.
func storedIn(b *testing.B, storeDir string) uint64 {
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: storeDir})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	return streamMsgs(b, srv.ClientURL(), "GENESYS", nil)
}

// streamMsgs says how many messages the stream named holds on the server
// at url, creating or updating it as cfg says first when cfg is not nil.
func streamMsgs(b *testing.B, url, name string, cfg *jetstream.StreamConfig) uint64 {
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var s jetstream.Stream
	if cfg != nil {
		s, err = js.CreateOrUpdateStream(ctx, *cfg)
	} else {
		s, err = js.Stream(ctx, name)
	}
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}

// processOrg is the simulated org the process benchmarks point the binary
// at, and the environment that does it.
type processOrg struct {
	sim    *simulator.Server
	topics []string // each user's presence topic
	// env is this process's environment without GOMAXPROCS (each run sets
	// its own or none), the org's settings, the topics, and extra.
	env []string
}

func newProcessOrg(b *testing.B, users int, seed uint64, extra ...string) *processOrg {
	o := &processOrg{sim: simulator.Start(b, simulator.Options{Queues: 1, Users: users, BodyPadding: 512, Seed: seed, RecordLimit: 1000})}
	for _, u := range o.sim.Users() {
		o.topics = append(o.topics, "v2.users."+u.ID+".presence")
	}
	o.env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "GOMAXPROCS=") })
	o.env = slices.Concat(o.env, []string{
		"GENESYSCLOUD_API_URL=" + o.sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID=" + o.sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET=" + o.sim.ClientSecret(),
		"GCNATS_TOPICS=v2.users.*.presence",
		"GCNATS_LOG_LEVEL=warn",
	}, extra)
	return o
}

// pinnedOne pins the binary to one P, as a CPU limit of one core does.
const pinnedOne = "GOMAXPROCS=1"

// pinnedNCPU pins the binary to the CPU count: Go's default without a CPU
// limit, which gcnats otherwise leaves for one P while the load is light.
func pinnedNCPU() string { return "GOMAXPROCS=" + strconv.Itoa(runtime.NumCPU()) }

// procsVariants are the three ways BenchmarkProcessLatency and
// BenchmarkProcessBurst run the binary, by metric prefix.
var procsVariants = []struct {
	prefix string
	env    []string
}{
	{"", nil},
	{"pinned-ncpu-", []string{pinnedNCPU()}},
	{"pinned-1-", []string{pinnedOne}},
}

// binVariant is a way to run a binary, by metric prefix.
type binVariant struct {
	prefix, bin string
	env         []string
	embedded    bool // with its embedded server (NATS_URL empty)
}

// variantsOf is procsVariants of bin, and with GCNATS_BENCH_COMPARE naming
// another build, that one as it chooses its GOMAXPROCS ("compare-").
func variantsOf(bin string) []binVariant {
	var vs []binVariant
	for _, v := range procsVariants {
		vs = append(vs, binVariant{prefix: v.prefix, bin: bin, env: v.env})
	}
	if other := os.Getenv("GCNATS_BENCH_COMPARE"); other != "" {
		vs = append(vs, binVariant{prefix: "compare-", bin: other})
	}
	return vs
}

// startReady starts bin with env, its endpoints on a free address, and
// waits until /readyz answers 200; it returns the process and that
// address.
func startReady(b *testing.B, bin string, env []string) (p *process, addr string) {
	addr = freeAddr(b)
	p = startProcess(b, bin, append(slices.Clip(env), "GCNATS_HTTP_ADDR="+addr))
	deadline := time.Now().Add(time.Minute)
	for !isReady(addr) {
		if time.Now().After(deadline) {
			b.Fatalf("not ready after a minute:\n%s", p.all)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return p, addr
}

// settle lets a process started by startReady idle for 3 s: start-up's
// garbage is collected and, when it chooses its GOMAXPROCS (no env),
// it is on one P by then (after 2 s without load), which /metrics must
// confirm, or the figures would mix the two.
func settle(b *testing.B, addr string, env []string) {
	time.Sleep(3 * time.Second)
	if len(env) == 0 {
		if got := gomaxprocsMetric(b, addr); got != "1" {
			b.Fatalf("GOMAXPROCS %s after 3 s idle, not 1", got)
		}
	}
}

// stop sends SIGTERM and waits for the process to end.
func (p *process) stop(b *testing.B) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(30 * time.Second):
		b.Fatalf("process did not stop:\n%s", p.all)
	}
}

// waitStored waits until stream holds want messages.
func waitStored(b *testing.B, stream jetstream.Stream, want uint64) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		info, err := stream.Info(context.Background())
		if err != nil {
			b.Fatal(err)
		}
		if info.State.Msgs >= want {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("stored %d of %d after two minutes", info.State.Msgs, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
