package publisher

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchEnv is a server with a memory stream capped in size, so the benchmark
// measures publishing rather than the disk, and b.N cannot fill the machine.
func benchEnv(b *testing.B) jetstream.JetStream {
	b.Helper()
	return benchEnvStorage(b, jetstream.MemoryStorage)
}

// benchEnvStorage is benchEnv with the stream on the storage given.
func benchEnvStorage(b *testing.B, storage jetstream.StorageType) jetstream.JetStream {
	b.Helper()
	srv := startServer(b, b.TempDir(), "127.0.0.1:-1")
	nc := connectTest(b, srv.ClientURL())
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	_, err = js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: "BENCH", Subjects: []string{"genesys.>"}, Storage: storage,
		MaxBytes: 256 << 20, Duplicates: 2 * time.Minute,
	})
	if err != nil {
		b.Fatal(err)
	}
	return js
}

const (
	benchTopic = "v2.routing.queues.8f0c1d2e-3f40-4a5b-9c6d-7e8f90a1b2c3.conversations"
	benchCorr  = "5a3b9c1d-2e3f-4a5b-8c7d-6e5f4a3b2c1d"
)

var benchSizes = []int{512, 4 << 10, 32 << 10}

const warmup = 4096

// BenchmarkPublish compares Publish (copy into a pooled record, send, match
// the ack, retry bookkeeping) with the baseline of calling PublishMsgAsync
// with a freshly built nats.Msg per message. Allocations are of the whole
// process, so they include nats.go's and the embedded server's; the
// difference between the two is our overhead.
func BenchmarkPublish(b *testing.B) {
	for _, size := range benchSizes {
		body := bytes.Repeat([]byte("e"), size)
		b.Run(fmt.Sprintf("gcnats/%dB", size), func(b *testing.B) {
			js := benchEnv(b)
			// A buffer of a few MiB, as the baseline's 4096 pending: with the
			// default 64 MiB the whole run of small records would sit in
			// the buffer at once, none recycled, and that measures a burst.
			p, err := New(js, WithLogger(testLogger()), WithBufferBytes(8<<20))
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
			r := &Record{
				Subject: []byte("genesys." + benchTopic), Topic: []byte(benchTopic),
				Version: []byte("2"), CorrelationID: []byte(benchCorr), Data: body,
			}
			id := make([]byte, 0, 64)
			// Warm up as a running sidecar is: records recycled, maps grown.
			for i := range warmup {
				r.ID = strconv.AppendInt(append(id[:0], "warm-"...), int64(i), 10)
				if err := p.Publish(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				r.ID = strconv.AppendInt(append(id[:0], prefix...), int64(i), 10)
				r.ReceivedAt = time.Now()
				if err := p.Publish(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
			if err := p.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if _, err := p.Close(ctx); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(fmt.Sprintf("baseline/%dB", size), func(b *testing.B) {
			js := benchEnv(b)
			bjs, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(4096),
				jetstream.WithPublishAsyncTimeout(5*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			defer bjs.CleanupPublisher()
			prefix := strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
			subject := "genesys." + benchTopic
			for i := range warmup {
				if _, err := bjs.PublishAsync(subject, body, jetstream.WithMsgID("warm-"+strconv.Itoa(i))); err != nil {
					b.Fatal(err)
				}
			}
			<-bjs.PublishAsyncComplete()
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{
					HeaderMsgID:         {prefix + strconv.Itoa(i)},
					HeaderTopic:         {benchTopic},
					HeaderVersion:       {"2"},
					HeaderCorrelationID: {benchCorr},
					HeaderReceivedAt:    {time.Now().UTC().Format(time.RFC3339Nano)},
				}}
				for {
					_, err := bjs.PublishMsgAsync(m)
					if err == nil {
						break
					}
					if err != jetstream.ErrTooManyStalledMsgs {
						b.Fatal(err)
					}
				}
			}
			select {
			case <-bjs.PublishAsyncComplete():
			case <-time.After(30 * time.Second):
				b.Fatal("acks did not arrive")
			}
		})
	}
}

// BenchmarkDuplicateWindowMemory measures what JetStream's duplicate window
// costs the server's heap per event: the same 100,000 events (0.5 KB,
// gcnats' headers) stored in a file-storage stream with a 2-minute window,
// with gcnats' dedup ids and, as the baseline, with a header of the same
// size in their place, which the server keeps nothing for. An embedded
// server (NATS_URL empty) holds this in gcnats' own process; with an
// external server it is the server's.
func BenchmarkDuplicateWindowMemory(b *testing.B) {
	const events = 100_000
	body := bytes.Repeat([]byte("e"), 512)
	heapPerEvent := func(b *testing.B, idHeader string) float64 {
		js, err := jetstream.New(benchEnvStorage(b, jetstream.FileStorage).Conn(), jetstream.WithPublishAsyncMaxPending(4096))
		if err != nil {
			b.Fatal(err)
		}
		subject := "genesys." + benchTopic
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range events {
			id := MsgID(nil, []byte(benchTopic), []byte(strconv.Itoa(i)), body)
			m := &nats.Msg{Subject: subject, Data: body, Header: nats.Header{
				idHeader:            {string(id)},
				HeaderTopic:         {benchTopic},
				HeaderVersion:       {"2"},
				HeaderCorrelationID: {benchCorr},
				HeaderReceivedAt:    {time.Now().Format(time.RFC3339Nano)},
			}}
			if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatalf("%d acks outstanding after a minute", js.PublishAsyncPending())
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		return float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / events
	}
	var with, without []float64
	for range b.N {
		with = append(with, heapPerEvent(b, HeaderMsgID))
		without = append(without, heapPerEvent(b, "Genesys-Id-Shadow"))
	}
	mean := func(xs []float64) float64 {
		var sum float64
		for _, x := range xs {
			sum += x
		}
		return sum / float64(len(xs))
	}
	b.ReportMetric(mean(with), "heap-B/event")
	b.ReportMetric(mean(without), "baseline-heap-B/event")
	b.ReportMetric(mean(with)-mean(without), "window-B/event")
	b.ReportMetric(0, "ns/op")
}
