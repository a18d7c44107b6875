package main

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/simulator"
)

// BenchmarkProcessLatency runs the built binary as its own process, as
// BenchmarkProcess does, at 5,000 events/s over 100 topics, and times each
// event as BenchmarkE2ELatency does: from just before the simulator writes
// its frame to the stream's own timestamp of the stored message. It runs
// the binary three ways in each round (procsVariants): with GOMAXPROCS as
// the binary chooses it (one P while the load is light, see package
// adaptprocs), pinned to the CPU count (how it ran before it chose), and
// pinned to one; with GCNATS_BENCH_COMPARE naming another build, that one
// too, as it chooses. A fourth way runs the binary with its embedded
// server (NATS_URL empty, as one pod runs alone; "embedded-"), timed the
// same way against that server's timestamps, its CPU the server's too
// (and GCNATS_BENCH_COMPARE's build that way as well, "compare-embedded-").
// Beside each one's latency it reports its CPU per event at that rate, to
// read the two together.
func BenchmarkProcessLatency(b *testing.B) {
	const (
		topics   = 100
		rate     = 5000
		duration = 4 * time.Second
		n        = int(rate * duration / time.Second)
	)
	bin := buildBinary(b)
	variants := append(variantsOf(bin), binVariant{prefix: "embedded-", bin: bin, embedded: true})
	if other := os.Getenv("GCNATS_BENCH_COMPARE"); other != "" {
		variants = append(variants, binVariant{prefix: "compare-embedded-", bin: other, embedded: true})
	}
	srv, external := benchJetStream(b)
	org := newProcessOrg(b, topics, 11, "NATS_URL="+srv.ClientURL())
	type figures struct {
		lat      [4]float64
		perEvent float64
	}
	results := make([][]figures, len(variants))
	for range b.N {
		for range benchRounds {
			for vi, v := range variants {
				env, js := slices.Concat(org.env, v.env), external
				var listen string
				if v.embedded {
					listen = freeAddr(b)
					env = append(env, "NATS_URL=", "GCNATS_EMBEDDED_LISTEN="+listen, "GCNATS_STORE_DIR="+b.TempDir())
				}
				p, addr := startReady(b, v.bin, env)
				var nc *nats.Conn
				if v.embedded {
					var err error
					if nc, err = nats.Connect("nats://" + listen); err != nil {
						b.Fatal(err)
					}
					if js, err = jetstream.New(nc); err != nil {
						b.Fatal(err)
					}
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
					batches[i] = org.sim.Prepare(1, org.topics[i%topics])
				}
				settle(b, addr, v.env)

				pid := p.cmd.Process.Pid
				c0 := cpuOf(b, pid)
				sent := make(map[string]time.Time, n)
				pace(n, rate, func(i int) {
					ev := org.sim.EmitBatch(batches[i])[0]
					sent[ev.CorrelationID] = ev.At
				})
				waitStored(b, stream, uint64(n))
				perEvent := float64((cpuOf(b, pid) - c0).Microseconds()) / float64(n)
				results[vi] = append(results[vi], figures{percentiles(b, js, "GENESYS", sent), perEvent})
				if nc != nil {
					nc.Close()
				}
				p.stop(b)
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
