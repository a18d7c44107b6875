package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkProcessBurst runs the built binary as its own process with its
// embedded JetStream server, lets it idle (so that, choosing its own
// GOMAXPROCS, it runs on one P), then writes a burst of events into its
// socket as fast as it reads them and times the burst until the last event
// is stored. Beside it, in the same round: the binary pinned to the CPU
// count, and pinned to 1 (procsVariants). It measures what choosing one P
// while idle costs when a burst comes: the first half second of it on one
// P. With GCNATS_BENCH_COMPARE naming another build, that one runs in each
// round too, as it chooses.
func BenchmarkProcessBurst(b *testing.B) {
	const (
		topics = 100
		burst  = 100_000
	)
	variants := variantsOf(buildBinary(b))
	org := newProcessOrg(b, topics, 13)
	rates := make([][]float64, len(variants))
	for range b.N {
		for range benchRounds {
			for vi, v := range variants {
				listen := freeAddr(b)
				p, addr := startReady(b, v.bin, slices.Concat(org.env, v.env, []string{
					"GCNATS_EMBEDDED_LISTEN=" + listen, "GCNATS_STORE_DIR=" + b.TempDir()}))
				nc, err := nats.Connect("nats://" + listen)
				if err != nil {
					b.Fatal(err)
				}
				js, err := jetstream.New(nc)
				if err != nil {
					b.Fatal(err)
				}
				stream, err := js.Stream(context.Background(), "GENESYS")
				if err != nil {
					b.Fatal(err)
				}
				batch := org.sim.Prepare(burst, org.topics...)
				settle(b, addr, v.env)

				start := time.Now()
				org.sim.EmitBatch(batch)
				waitStored(b, stream, burst)
				rates[vi] = append(rates[vi], burst/time.Since(start).Seconds())
				nc.Close()
				p.stop(b)
			}
		}
	}
	for vi, v := range variants {
		b.ReportMetric(median(rates[vi]), v.prefix+"events/s")
	}
	b.ReportMetric(median(rates[0])/median(rates[1]), "ratio-to-pinned-ncpu")
	if len(variants) > len(procsVariants) {
		b.ReportMetric(median(rates[0])/median(rates[len(procsVariants)]), "ratio-to-compare")
	}
	b.ReportMetric(0, "ns/op")
}
