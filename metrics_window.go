package main

import (
	"sync"
	"time"
)

// windowCount counts events over a sliding window of whole seconds: how
// many message ids JetStream keeps for its duplicate window, which is the
// server's memory that grows with the rate (about 125 bytes of heap an
// id). One counter per second of the window, reused as the window moves,
// so it costs the same at any rate.
type windowCount struct {
	mu     sync.Mutex
	counts []uint64
	secs   []int64 // the Unix second counts[i] is for
}

func newWindowCount(window time.Duration) *windowCount {
	n := int((window + time.Second - 1) / time.Second)
	return &windowCount{counts: make([]uint64, n), secs: make([]int64, n)}
}

// add counts one event at now.
func (w *windowCount) add(now time.Time) {
	s := now.Unix()
	i := int(s % int64(len(w.counts)))
	w.mu.Lock()
	if w.secs[i] != s {
		w.secs[i], w.counts[i] = s, 0
	}
	w.counts[i]++
	w.mu.Unlock()
}

// total is how many events were counted in the window that ends at now.
func (w *windowCount) total(now time.Time) uint64 {
	oldest := now.Unix() - int64(len(w.counts))
	var n uint64
	w.mu.Lock()
	for i, s := range w.secs {
		if s > oldest {
			n += w.counts[i]
		}
	}
	w.mu.Unlock()
	return n
}
