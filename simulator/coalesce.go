package simulator

import (
	"net"
	"sync"
	"time"
)

// coalescer lets the server write one delivery round's frames to a socket
// in few writes, as a remote server's TCP stream would carry them, instead
// of one system call per frame. It changes no byte on the wire and no
// frame's order; it matters because on one machine the simulator's CPU is
// taken from the consumer it is there to measure.
type coalescer struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	buf  []byte
	// err is the round's first failed write. The rest of the round is
	// dropped and flush reports it, so the whole round counts as not
	// delivered, as when its last write fails.
	err error
}

// coalesceBytes is how much of a round is held before it goes out anyway.
// A remote server's stream carries a long round while it is written; held
// whole, a benchmark's round of 20,000 4 KB events was 85 MB copied into
// one buffer before its first byte left, time the consumer sat idle.
const coalesceBytes = 64 << 10

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.hold {
		return c.Conn.Write(p)
	}
	if c.err == nil {
		c.buf = append(c.buf, p...)
		if len(c.buf) >= coalesceBytes {
			// The write deadline is the one the websocket writer set for
			// this frame.
			c.err = c.writeHeld()
		}
	}
	return len(p), nil
}

// CloseWrite half-closes after whatever is held, so Server.shutdownLocked
// keeps its FIN-after-the-last-frame behaviour through the wrapper.
func (c *coalescer) CloseWrite() error {
	_ = c.flush(time.Now().Add(time.Second))
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

func (c *coalescer) begin() {
	c.mu.Lock()
	c.hold = true
	c.err = nil
	c.mu.Unlock()
}

// flush writes what was held, by deadline, and stops holding. Its error is
// the round's: this write's or an earlier one's.
func (c *coalescer) flush(deadline time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	if err := c.err; err != nil {
		c.err = nil
		c.buf = c.buf[:0]
		return err
	}
	if len(c.buf) == 0 {
		return nil
	}
	_ = c.Conn.SetWriteDeadline(deadline)
	return c.writeHeld()
}

func (c *coalescer) writeHeld() error {
	_, err := c.Conn.Write(c.buf)
	if cap(c.buf) > 1<<20 {
		c.buf = nil // a round of oversized events: do not keep megabytes per socket
	} else {
		c.buf = c.buf[:0]
	}
	return err
}

// round is one delivery round: the sockets holding frames and, per
// socket, which of the round's events they hold.
type round struct {
	sockets []*socket
	held    map[*socket][]int
}

// holdLocked starts holding sk's frames for the round, if it can.
func (s *Server) holdLocked(sk *socket, event int) {
	if s.round == nil {
		return
	}
	c, ok := sk.net.(*coalescer)
	if !ok {
		return
	}
	if _, ok := s.round.held[sk]; !ok {
		c.begin()
		s.round.sockets = append(s.round.sockets, sk)
	}
	s.round.held[sk] = append(s.round.held[sk], event)
}

// endRoundLocked writes every held socket's frames. A socket whose write
// fails is shut down, and the round's events it held count as not
// delivered to it: which of them the client got is unknown.
func (s *Server) endRoundLocked(events []Event) {
	r := s.round
	s.round = nil
	for _, sk := range r.sockets {
		if err := sk.net.(*coalescer).flush(time.Now().Add(s.opts.WriteTimeout)); err != nil {
			s.log.Debug("socket write failed; closing", "socket", sk.num, "err", err)
			restore := s.becauseLocked(causeWriteFailed)
			s.shutdownLocked(sk)
			restore()
			for _, i := range r.held[sk] {
				events[i].Delivered--
				s.stats.Deliveries--
			}
		}
	}
}
