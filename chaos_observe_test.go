package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// serverWitness watches every message the JetStream server takes in, over
// a plain core subscription beside the stream. When events go missing it
// tells where: an event the witness saw reached the server and was lost
// there (or after); one it never saw was lost on the sidecar's side.
//
// It is a witness, not a judge: it can miss messages while it reconnects
// after a NATS restart, so "not seen" is only meaningful beside "seen".
type serverWitness struct {
	nc  *nats.Conn
	sub *nats.Subscription

	mu   sync.Mutex
	seen map[string]struct{} // Genesys-Correlation-Id
	gaps []string            // its own disconnections and errors, for the report
}

func newServerWitness(url string, start time.Time) (*serverWitness, error) {
	w := &serverWitness{seen: map[string]struct{}{}}
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("down at %s", time.Since(start).Round(time.Millisecond)))
			w.mu.Unlock()
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("up at %s", time.Since(start).Round(time.Millisecond)))
			w.mu.Unlock()
		}),
		// Into the report, not nats.go's default of standard error.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("error at %s: %v", time.Since(start).Round(time.Millisecond), err))
			w.mu.Unlock()
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("witness connect: %w", err)
	}
	w.nc = nc
	w.sub, err = nc.Subscribe("genesys.>", func(m *nats.Msg) {
		id := m.Header.Get("Genesys-Correlation-Id")
		w.mu.Lock()
		w.seen[id] = struct{}{}
		w.mu.Unlock()
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("witness subscribe: %w", err)
	}
	_ = w.sub.SetPendingLimits(-1, -1)
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		nc.Close()
		return nil, fmt.Errorf("witness flush: %w", err)
	}
	return w, nil
}

// verdict says how many of the lost correlation ids reached the server.
func (w *serverWitness) verdict(lost []string) string {
	dropped, _ := w.sub.Dropped()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := 0
	for _, id := range lost {
		if _, ok := w.seen[id]; ok {
			seen++
		}
	}
	gaps := w.gaps[max(0, len(w.gaps)-20):]
	return fmt.Sprintf("the server took in %d of the %d lost events (witness dropped %d; its last disconnections: %v)",
		seen, len(lost), dropped, gaps)
}

func (w *serverWitness) close() { w.nc.Close() }
