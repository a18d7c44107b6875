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
//   - this process (simulator and JetStream server) over gcnats' windows.
func BenchmarkProcess(b *testing.B) {
	const (
		topics = 5000
		rate   = 1000
	)
	bin := buildBinary(b)
	plain := buildPlainForwarder(b)
	sim := simulator.Start(b, simulator.Options{Queues: 1, Users: topics, BodyPadding: 512, Seed: 9, RecordLimit: 1000})
	var topicList []string
	for _, u := range sim.Users() {
		topicList = append(topicList, "v2.users."+u.ID+".presence")
	}
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	plainStream(b, srv.ClientURL())
	topicsFile := filepath.Join(b.TempDir(), "topics")
	if err := os.WriteFile(topicsFile, []byte(strings.Join(topicList, "\n")), 0o600); err != nil {
		b.Fatal(err)
	}
	base := append(os.Environ(),
		"GENESYSCLOUD_API_URL="+sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID="+sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET="+sim.ClientSecret(),
		"NATS_URL="+srv.ClientURL(),
	)
	events := func() []*simulator.Batch {
		batches := make([]*simulator.Batch, rate*5)
		for i := range batches {
			batches[i] = sim.Prepare(1, topicList[i%topics])
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

	var gc, gc1, gcN, pl, rd, rdRaw, self []processFigures
	for range b.N {
		for range benchRounds {
			addr := freeAddr(b)
			env := slices.Concat(base, []string{
				"GCNATS_TOPICS=v2.users.*.presence",
				"GCNATS_HTTP_ADDR=" + addr,
				"GCNATS_LOG_LEVEL=warn",
				"GCNATS_PPROF_ADDR=" + os.Getenv("GCNATS_BENCH_PPROF_ADDR"),
			})
			f, s := measureProcess(b, exec.Command(bin), env, func() bool { return isReady(addr) }, events(), emit)
			gc, self = append(gc, f), append(self, s)

			addr = freeAddr(b)
			env = slices.Concat(base, []string{
				"GCNATS_TOPICS=v2.users.*.presence",
				"GCNATS_HTTP_ADDR=" + addr,
				"GCNATS_LOG_LEVEL=warn",
				"GOMAXPROCS=1",
			})
			f, _ = measureProcess(b, exec.Command(bin), env, func() bool { return isReady(addr) }, events(), emit)
			gc1 = append(gc1, f)

			addr = freeAddr(b)
			env = slices.Concat(base, []string{
				"GCNATS_TOPICS=v2.users.*.presence",
				"GCNATS_HTTP_ADDR=" + addr,
				"GCNATS_LOG_LEVEL=warn",
				"GOMAXPROCS=" + strconv.Itoa(runtime.NumCPU()),
			})
			f, _ = measureProcess(b, exec.Command(bin), env, func() bool { return isReady(addr) }, events(), emit)
			gcN = append(gcN, f)

			pl = append(pl, runPlain())
			rd = append(rd, runPlain("PLAIN_READ_ONLY=1"))
			rdRaw = append(rdRaw, runPlain("PLAIN_READ_ONLY=1", "PLAIN_RAW_IO=1"))
		}
	}
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
	}{{"", gc}, {"gomaxprocs1-", gc1}, {"gomaxprocs-ncpu-", gcN}, {"plain-", pl}, {"read-only-", rd}, {"read-only-raw-io-", rdRaw}} {
		for _, fig := range figures {
			b.ReportMetric(med(p.figs, fig.pick), p.prefix+fig.unit)
		}
	}
	b.ReportMetric(med(gc, perEvent)/med(pl, perEvent), "cpu-ratio-to-plain")
	b.ReportMetric(med(gc, perEvent)/med(gcN, perEvent), "cpu-ratio-to-gomaxprocs-ncpu")
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

	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exit:
	case <-time.After(30 * time.Second):
		b.Fatal("process did not stop")
	}
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
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name: "PLAIN", Subjects: []string{"plain.>"}, Storage: jetstream.FileStorage, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Msgs
}
