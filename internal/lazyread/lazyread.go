// Package lazyread dials TCP connections whose answers are read when the
// process is awake anyway, instead of waking it.
//
// gcnats publishes an event into JetStream and the server acks it a few
// hundred microseconds later. At a thousand events a second the process
// has gone idle by then, and an ordinary connection, registered with the
// runtime's network poller, wakes it for the ack: two wake-ups an event,
// the frame's and the ack's, where on a virtual machine each costs more
// than the work it brings. No goroutine needs the ack at once, but the
// poller cannot tell: any readiness of a registered socket ends its
// epoll_wait.
//
// A connection dialled here is taken out of the network poller, and its
// writes drive its reads: each write tells the reader that an answer is on
// its way. While writes come more often than the linger (DefaultLinger),
// a reader that finds nothing waits for the next write, or the linger,
// and reads again; otherwise it blocks in poll(2) until data arrives, as
// on any connection. At a steady rate above one event per linger the acks
// therefore ride on the next event's wake-up; below it the connection
// reads as eagerly as any other, and a stall for acks or a quiet spell
// costs at most one linger.
//
// What the caller gives up: an answer may wait up to the linger before it is
// read (a request-reply round trip, a NATS Flush, an ack), and the reader
// holds a thread while it blocks in poll(2). Reads and writes are plain
// system calls outside the runtime's bookkeeping, as in package rawio,
// with the same caveat under the race detector (no happens-before edge
// through the socket).
//
// The connection is a net.Conn with the usual errors (*net.OpError
// wrapping net.ErrClosed, os.ErrDeadlineExceeded, io.EOF) and supports one
// reader and one writer at a time, as nats.go and crypto/tls use it. A
// deadline applies to the waits that begin after it is set; Close ends
// every wait at once. Linux only: elsewhere the Dialer returns what
// package rawio dials.
package lazyread

import (
	"context"
	"net"
	"time"
)

// DefaultLinger is how long a reader that found no answer to a write waits
// for the next write before it blocks in the poller. Events closer
// together than this share one wake-up with the ack of the one before;
// acks, PONGs and request replies wait at most this long to be read.
const DefaultLinger = 5 * time.Millisecond

// Dialer dials like net.Dialer. Its Dial method makes it a
// nats.CustomDialer.
type Dialer struct {
	net.Dialer
	// Linger replaces DefaultLinger when it is positive.
	Linger time.Duration
}

// DialContext dials like net.Dialer.DialContext and returns a connection
// whose reads follow its writes.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	linger := d.Linger
	if linger <= 0 {
		linger = DefaultLinger
	}
	return detach(tc, linger)
}

// Dial dials like net.Dialer.Dial.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}
