// Package rawio makes a TCP connection's reads and writes plain system calls
// that the Go runtime does not track, for connections that carry a frame or
// two every millisecond.
//
// An ordinary read or write on a net.Conn enters the runtime's system call
// bookkeeping (entersyscall), and when every P of the process was idle that
// wakes the runtime's monitor thread (sysmon), which then polls every 20 µs
// until the process is idle again. A sidecar that receives an event and an
// ack about once a millisecond turns from idle to busy twice per event, and
// on a virtual machine those wake-ups were about a third of its CPU. The
// socket is non-blocking, so its read and write return at once (EAGAIN when
// there is nothing to do); the bookkeeping exists for calls that block, which
// these never do. Waiting for the socket still goes through the runtime's
// network poller (syscall.RawConn), so deadlines and Close work as on any
// net.Conn.
//
// One difference remains under the race detector: the standard library's
// reads and writes tell it that what a goroutine did before writing to a
// socket happens before what another does after reading it in the same
// process; these do not. Goroutines that synchronise only through such a
// socket would be reported as racing. None of gcnats' do, and its tests,
// which run the simulated org and the JetStream server in the same
// process, pass under -race.
package rawio

import (
	"context"
	"net"
)

// Wrap returns c with untracked reads and writes when c is a TCP connection
// on a platform where that is supported, else c itself.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	return wrapTCP(tc)
}

// Dialer dials like net.Dialer and wraps what it dials. Its Dial method
// makes it a nats.CustomDialer.
type Dialer struct {
	net.Dialer
}

// DialContext dials like net.Dialer.DialContext and wraps the connection.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := d.Dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return Wrap(c), nil
}

// Dial dials like net.Dialer.Dial and wraps the connection.
func (d *Dialer) Dial(network, address string) (net.Conn, error) {
	return d.DialContext(context.Background(), network, address)
}
