package simulator_test

import (
	"fmt"
	"testing"

	"github.com/gcnats/gcnats/simulator"
)

// BenchmarkEmit measures generating, delivering and recording events to one
// connected socket whose client reads as fast as it can.
func BenchmarkEmit(b *testing.B) { benchmarkEmit(b, false) }

// BenchmarkEmitBatch measures delivery alone: bodies are prepared before
// the timer starts.
func BenchmarkEmitBatch(b *testing.B) { benchmarkEmit(b, true) }

func benchmarkEmit(b *testing.B, prepared bool) {
	for _, size := range []int{0, 512, 4096, 32768} {
		b.Run(fmt.Sprintf("padding=%d", size), func(b *testing.B) {
			sim := simulator.Start(b, simulator.Options{BodyPadding: size, RecordLimit: 10000})
			topic := "v2.routing.queues." + sim.Queues()[0].ID + ".conversations"
			ch := createChannel(b, sdk(b, sim), topic)
			conn := dialConnected(b, sim, ch).conn
			done := make(chan int64)
			go func() {
				var n int64
				for {
					_, data, err := conn.ReadMessage()
					if err != nil {
						done <- n
						return
					}
					n += int64(len(data))
				}
			}()
			var evs []simulator.Event
			if prepared {
				batch := sim.Prepare(b.N, topic)
				b.ResetTimer()
				evs = sim.EmitBatch(batch)
			} else {
				b.ResetTimer()
				evs = sim.EmitN(b.N, topic)
			}
			b.StopTimer()
			var bytes int64
			for _, ev := range evs {
				bytes += int64(len(ev.Frame))
			}
			b.SetBytes(bytes / int64(max(len(evs), 1)))
			conn.Close()
			<-done
		})
	}
}
