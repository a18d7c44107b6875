package main

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/simulator"
)

// BenchmarkProcessLatency runs the built binary as its own process, as
// BenchmarkProcess does, at 5,000 events/s over 100 topics, and times each
// event as BenchmarkE2ELatency does: from just before the simulator writes
// its frame to the stream's own timestamp of the stored message. It runs
// the binary three ways in each round: with GOMAXPROCS as the binary
// chooses it (one P while the load is light, see package adaptprocs),
// pinned to the number of CPUs (the runtime's default without a CPU limit,
// how it ran before it chose), and pinned to one. Beside each one's latency it
// reports its CPU per event at that rate, to read the two together.
func BenchmarkProcessLatency(b *testing.B) {
	const (
		topics   = 100
		rate     = 5000
		duration = 4 * time.Second
		n        = int(rate * duration / time.Second)
	)
	bin := buildBinary(b)
	sim := simulator.Start(b, simulator.Options{Queues: 1, Users: topics, BodyPadding: 512, Seed: 11, RecordLimit: 1000})
	var topicList []string
	for _, u := range sim.Users() {
		topicList = append(topicList, "v2.users."+u.ID+".presence")
	}
	srv, err := publisher.StartEmbedded(publisher.EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Shutdown()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	base := append(os.Environ(),
		"GENESYSCLOUD_API_URL="+sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID="+sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET="+sim.ClientSecret(),
		"NATS_URL="+srv.ClientURL(),
		"GCNATS_TOPICS=v2.users.*.presence",
		"GCNATS_LOG_LEVEL=warn",
	)
	base = slices.DeleteFunc(base, func(kv string) bool { return len(kv) > 11 && kv[:11] == "GOMAXPROCS=" })
	variants := []struct {
		prefix string
		env    []string
	}{
		{"", nil},
		{"pinned-ncpu-", []string{"GOMAXPROCS=" + strconv.Itoa(runtime.NumCPU())}},
		{"pinned-1-", []string{"GOMAXPROCS=1"}},
	}
	type figures struct {
		lat      [4]float64
		perEvent float64
	}
	results := make([][]figures, len(variants))
	for range b.N {
		for range benchRounds {
			for vi, v := range variants {
				addr := freeAddr(b)
				p := startProcess(b, bin, slices.Concat(base, []string{"GCNATS_HTTP_ADDR=" + addr}, v.env))
				deadline := time.Now().Add(time.Minute)
				for !isReady(addr) {
					if time.Now().After(deadline) {
						b.Fatalf("not ready after a minute:\n%s", p.all)
					}
					time.Sleep(5 * time.Millisecond)
				}
				stream, err := js.Stream(context.Background(), "GENESYS")
				if err != nil {
					b.Fatal(err)
				}
				if err := stream.Purge(context.Background()); err != nil {
					b.Fatal(err)
				}
				batches := make([]*simulator.Batch, n)
				for i := range batches {
					batches[i] = sim.Prepare(1, topicList[i%topics])
				}
				// Start-up's garbage collected, and the binary on one P if
				// it chooses to be (after 2 s without load).
				time.Sleep(3 * time.Second)

				pid := p.cmd.Process.Pid
				c0 := cpuOf(b, pid)
				sent := make(map[string]time.Time, n)
				pace(n, rate, func(i int) {
					ev := sim.EmitBatch(batches[i])[0]
					sent[ev.CorrelationID] = ev.At
				})
				waitStored(b, stream, uint64(n))
				perEvent := float64((cpuOf(b, pid) - c0).Microseconds()) / float64(n)
				results[vi] = append(results[vi], figures{percentiles(b, js, "GENESYS", sent), perEvent})

				_ = p.cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-p.exit:
				case <-time.After(30 * time.Second):
					b.Fatal("process did not stop")
				}
			}
		}
	}
	for vi, v := range variants {
		for k, q := range []string{"p50", "p99", "p99.9", "max"} {
			var xs []float64
			for _, f := range results[vi] {
				xs = append(xs, f.lat[k])
			}
			b.ReportMetric(median(xs), v.prefix+q+"-µs")
		}
		var xs []float64
		for _, f := range results[vi] {
			xs = append(xs, f.perEvent)
		}
		b.ReportMetric(median(xs), v.prefix+"cpu-µs/event")
	}
	b.ReportMetric(0, "ns/op")
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
