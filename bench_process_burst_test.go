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

	"github.com/gcnats/gcnats/simulator"
)

// BenchmarkProcessBurst runs the built binary as its own process with its
// embedded JetStream server, lets it idle (so that, choosing its own
// GOMAXPROCS, it runs on one P), then writes a burst of events into its
// socket as fast as it reads them and times the burst until the last event
// is stored. Beside it, in the same round: the binary pinned to the CPU
// count, and pinned to 1. It measures what choosing one P while idle costs
// when a burst comes: the first half second of it on one P.
func BenchmarkProcessBurst(b *testing.B) {
	const (
		topics = 100
		burst  = 100_000
	)
	bin := buildBinary(b)
	sim := simulator.Start(b, simulator.Options{Queues: 1, Users: topics, BodyPadding: 512, Seed: 13, RecordLimit: 1000})
	var topicList []string
	for _, u := range sim.Users() {
		topicList = append(topicList, "v2.users."+u.ID+".presence")
	}
	base := append(os.Environ(),
		"GENESYSCLOUD_API_URL="+sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID="+sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET="+sim.ClientSecret(),
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
	rates := make([][]float64, len(variants))
	for range b.N {
		for range benchRounds {
			for vi, v := range variants {
				addr, listen := freeAddr(b), freeAddr(b)
				p := startProcess(b, bin, slices.Concat(base, v.env, []string{
					"GCNATS_HTTP_ADDR=" + addr,
					"GCNATS_EMBEDDED_LISTEN=" + listen,
					"GCNATS_STORE_DIR=" + b.TempDir(),
				}))
				deadline := time.Now().Add(time.Minute)
				for !isReady(addr) {
					if time.Now().After(deadline) {
						b.Fatalf("not ready after a minute:\n%s", p.all)
					}
					time.Sleep(5 * time.Millisecond)
				}
				nc, err := nats.Connect("nats://" + listen)
				if err != nil {
					b.Fatal(err)
				}
				js, _ := jetstream.New(nc)
				stream, err := js.Stream(context.Background(), "GENESYS")
				if err != nil {
					b.Fatal(err)
				}
				batch := sim.Prepare(burst, topicList...)
				// Idle long enough to be on one P if it chooses so (2 s
				// without load).
				time.Sleep(3 * time.Second)

				start := time.Now()
				sim.EmitBatch(batch)
				waitStored(b, stream, burst)
				rates[vi] = append(rates[vi], burst/time.Since(start).Seconds())
				nc.Close()

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
		b.ReportMetric(median(rates[vi]), v.prefix+"events/s")
	}
	b.ReportMetric(median(rates[0])/median(rates[1]), "ratio-to-pinned-ncpu")
	b.ReportMetric(0, "ns/op")
}
