package publisher

import (
	"net"
	"os"
	"sync"
	"time"
)

// inProcessWriteBuffer bounds what a connection to the embedded server holds
// that the server has not read yet: about what a loopback socket's send
// buffer holds.
const inProcessWriteBuffer = 4 << 20

// inProcessLinger bounds how long closing a connection to the embedded
// server waits for the server to read what is queued. The server reads
// until it shuts down, when the write fails at once; the bound is for a
// server that has stopped reading without closing.
const inProcessLinger = time.Second

// maxSpareBatch is the largest batch buffer kept for reuse: everyday
// batches are a few KB, and a burst's megabytes need not stay resident.
const maxSpareBatch = 256 << 10

// InProcessConn connects a client to the server without a socket; pass the
// server to nats.InProcessServer. The sidecar's own connection to its
// embedded server goes this way: no loopback TCP, no system call per write
// or read, and nothing for the kernel to wake.
//
// nats-server's in-process connection is a net.Pipe, whose Write returns
// only once the server has read every byte; the server reads again only
// after it has stored what it read, and nats.go writes while it holds the
// connection's lock. So a publish would wait for the server's previous
// batch to be stored, where a socket's send buffer lets the two overlap.
// The connection returned writes behind: Write queues the bytes for a
// goroutine of its own to hand to the pipe, as a kernel's buffer would.
func (e *Embedded) InProcessConn() (net.Conn, error) {
	c, err := e.srv.InProcessConn()
	if err != nil {
		return nil, err
	}
	return newWriteBehind(c, inProcessWriteBuffer), nil
}

// writeBehind is a net.Conn whose writes are queued and written to the
// connection it wraps by a goroutine of its own. Reads, addresses and read
// deadlines are the wrapped connection's.
type writeBehind struct {
	net.Conn
	limit  int
	linger time.Duration

	mu       sync.Mutex
	queued   []byte        // written, not yet taken by the pump
	spare    []byte        // the pump's last batch, for reuse
	wake     chan struct{} // the pump: something is queued (capacity 1)
	room     chan struct{} // writers: the pump took a batch (capacity 1)
	deadline time.Time     // for a Write that waits for room
	err      error         // the wrapped connection's write error, or net.ErrClosed
	closing  bool          // Close was called: write what is queued, then stop
	done     chan struct{} // closed when the pump has returned
}

func newWriteBehind(c net.Conn, limit int) *writeBehind {
	w := &writeBehind{
		Conn:   c,
		limit:  limit,
		linger: inProcessLinger,
		wake:   make(chan struct{}, 1),
		room:   make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	go w.pump()
	return w
}

// Write queues p. It waits only while the queue is full, up to the write
// deadline.
func (w *writeBehind) Write(p []byte) (int, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		if w.err != nil {
			err := w.err
			w.mu.Unlock()
			return 0, err
		}
		if len(w.queued) == 0 || len(w.queued)+len(p) <= w.limit {
			w.queued = append(w.queued, p...)
			w.mu.Unlock()
			signal(w.wake)
			return len(p), nil
		}
		deadline := w.deadline
		w.mu.Unlock()

		var expired <-chan time.Time
		if !deadline.IsZero() {
			wait := time.Until(deadline)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			expired = timer.C
		}
		select {
		case <-w.room:
		case <-w.done:
		case <-expired:
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// pump writes what is queued to the wrapped connection, a batch at a time,
// until a write fails, or Close was called and nothing is left to write.
func (w *writeBehind) pump() {
	defer close(w.done)
	for range w.wake {
		for {
			w.mu.Lock()
			if len(w.queued) == 0 || w.err != nil && !w.closing {
				stop := w.err != nil
				w.mu.Unlock()
				if stop {
					return
				}
				break
			}
			batch := w.queued
			w.queued, w.spare = w.spare[:0], nil
			w.mu.Unlock()
			signal(w.room)

			_, err := w.Conn.Write(batch)

			w.mu.Lock()
			if cap(batch) <= maxSpareBatch { // a burst's buffer goes to the collector
				w.spare = batch
			}
			if err != nil {
				if !w.closing {
					w.err = err
				}
				w.closing = false
				w.mu.Unlock()
				signal(w.room)
				return
			}
			w.mu.Unlock()
		}
	}
}

// Close stops further writes, waits up to the linger time for the other
// end to read what is queued, as a socket's close sends its unsent
// buffer, and closes the wrapped connection.
func (w *writeBehind) Close() error {
	w.mu.Lock()
	if w.err == nil {
		w.err, w.closing = net.ErrClosed, true
	}
	w.mu.Unlock()
	signal(w.wake)
	linger := time.NewTimer(w.linger)
	select {
	case <-w.done:
	case <-linger.C:
	}
	linger.Stop()
	return w.Conn.Close()
}

// SetDeadline sets the read deadline of the wrapped connection and the
// deadline for a Write that waits for room.
func (w *writeBehind) SetDeadline(t time.Time) error {
	_ = w.SetWriteDeadline(t)
	return w.Conn.SetReadDeadline(t)
}

// SetWriteDeadline bounds how long a Write waits for room in the queue.
func (w *writeBehind) SetWriteDeadline(t time.Time) error {
	w.mu.Lock()
	w.deadline = t
	w.mu.Unlock()
	return nil
}

// signal wakes the waiter on ch, if any, without blocking.
func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
