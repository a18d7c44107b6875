package lazyread

import (
	"encoding/binary"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// testHookLinger, when set, is called as a reader starts to linger.
var testHookLinger func()

type conn struct {
	fd           int // the socket, outside the runtime's network poller
	wake         int // an eventfd that Close makes readable, ending every poll
	laddr, raddr net.Addr

	// mu is held shared around every system call on fd and exclusively by
	// Close, so the descriptor's number is released only when no call can
	// still use it.
	mu     sync.RWMutex
	closed atomic.Bool
	done   chan struct{}

	// kick holds a token while a write has happened since the reader last
	// looked.
	kick chan struct{}

	readDeadline, writeDeadline atomic.Int64 // Unix nanoseconds; 0: none

	// When the last write ended, and how long after the one before.
	lastWrite, writeGap atomic.Int64

	// The reader's own state, touched by one goroutine at a time.
	expecting   bool // writes are frequent and one is not yet answered
	linger      time.Duration
	lingerTimer *time.Timer
}

// detach moves tc's connection to a duplicate descriptor that the network
// poller does not know: closing tc removes its own descriptor from the
// poller, and the duplicate keeps the connection open.
func detach(tc *net.TCPConn, linger time.Duration) (net.Conn, error) {
	defer tc.Close()
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var dupErr error
	if err := rc.Control(func(s uintptr) { fd, dupErr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if dupErr != nil {
		return nil, os.NewSyscallError("fcntl", dupErr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("eventfd", err)
	}
	timer := time.NewTimer(linger)
	timer.Stop()
	return &conn{
		fd: fd, wake: wake,
		laddr: tc.LocalAddr(), raddr: tc.RemoteAddr(),
		done:   make(chan struct{}),
		kick:   make(chan struct{}, 1),
		linger: linger, lingerTimer: timer,
	}, nil
}

// Read reads what has arrived; when nothing has, it waits as the package
// doc describes: for the next write or the linger after a write, else in
// poll(2).
func (c *conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, err := c.syscall(syscall.SYS_READ, p)
		switch {
		case err == nil && n == 0:
			return 0, io.EOF
		case err == nil:
			return n, nil
		case err != unix.EAGAIN:
			return 0, c.opError("read", err)
		}
		if err := c.waitToRead(); err != nil {
			return 0, c.opError("read", err)
		}
	}
}

// waitToRead waits after a read found nothing. It lingers (waits for the
// next write, or the linger) only while writes come more often than the
// linger: then the next write wakes the process anyway and the answers
// ride on it. Writes further apart would make the linger's timer a
// wake-up of its own, on top of the one for the answer, so it polls.
func (c *conn) waitToRead() error {
	select {
	case <-c.kick: // written since the last look
		c.expecting = c.writeGap.Load() < int64(c.linger)
		if c.expecting {
			return nil // the answer to an earlier write may be in: look again
		}
	default:
		if c.expecting {
			c.expecting = false
			return c.lingerForWrite()
		}
	}
	return c.poll(unix.POLLIN, &c.readDeadline)
}

func (c *conn) lingerForWrite() error {
	wait := c.linger
	if dl := c.readDeadline.Load(); dl != 0 {
		left := time.Until(time.Unix(0, dl))
		if left <= 0 {
			return os.ErrDeadlineExceeded
		}
		wait = min(wait, left)
	}
	if testHookLinger != nil {
		testHookLinger()
	}
	c.lingerTimer.Reset(wait)
	select {
	case <-c.kick:
		c.expecting = true
		c.lingerTimer.Stop() // a pending timer would wake an idle process for nothing
	case <-c.lingerTimer.C:
	case <-c.done:
	}
	return nil
}

// Write writes all of p, waiting in poll(2) when the socket's buffer is
// full, and then tells the reader an answer is on its way.
func (c *conn) Write(p []byte) (int, error) {
	if dl := c.writeDeadline.Load(); dl != 0 && time.Now().UnixNano() >= dl {
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	done := 0
	for done < len(p) {
		n, err := c.syscall(syscall.SYS_WRITE, p[done:])
		switch err {
		case nil:
			done += n
		case unix.EAGAIN:
			if err := c.poll(unix.POLLOUT, &c.writeDeadline); err != nil {
				return done, c.opError("write", err)
			}
		default:
			return done, c.opError("write", err)
		}
	}
	if done > 0 {
		now := time.Now().UnixNano()
		c.writeGap.Store(now - c.lastWrite.Swap(now))
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	return done, nil
}

// syscall reads or writes fd once, retrying an interrupted call. It uses
// RawSyscall: the socket is non-blocking, so the call never waits and the
// runtime's system call bookkeeping (and its wake-ups) would buy nothing.
func (c *conn) syscall(trap uintptr, p []byte) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	for {
		r, _, errno := syscall.RawSyscall(trap, uintptr(c.fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch errno {
		case 0:
			return int(r), nil
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return 0, unix.EAGAIN
		}
		name := "read"
		if trap == syscall.SYS_WRITE {
			name = "write"
		}
		return 0, os.NewSyscallError(name, errno)
	}
}

// poll blocks until fd is ready for events, the deadline passes or Close
// is called. It is an ordinary (tracked) system call, as any that blocks
// must be.
func (c *conn) poll(events int16, deadline *atomic.Int64) error {
	for {
		var timeout *unix.Timespec
		if dl := deadline.Load(); dl != 0 {
			left := time.Until(time.Unix(0, dl))
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			ts := unix.NsecToTimespec(int64(left))
			timeout = &ts
		}
		fds := [2]unix.PollFd{{Fd: int32(c.fd), Events: events}, {Fd: int32(c.wake), Events: unix.POLLIN}}
		n, err := c.ppoll(fds[:], timeout)
		switch {
		case err == unix.EINTR || err == nil && n == 0:
			continue // interrupted, or the deadline: checked above
		case err != nil:
			return err
		case fds[1].Revents != 0:
			return net.ErrClosed
		}
		return nil // ready, or an error the next read or write reports
	}
}

func (c *conn) ppoll(fds []unix.PollFd, timeout *unix.Timespec) (int, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := unix.Ppoll(fds, timeout, nil)
	if err != nil && err != unix.EINTR {
		err = os.NewSyscallError("ppoll", err)
	}
	return n, err
}

// Close ends every wait at once and releases the descriptor once no call
// uses it.
func (c *conn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return c.opError("close", net.ErrClosed)
	}
	close(c.done)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(c.wake, one[:]) // cannot fail short of a full counter
	c.mu.Lock()
	defer c.mu.Unlock()
	err := unix.Close(c.fd)
	unix.Close(c.wake)
	if err != nil {
		return c.opError("close", os.NewSyscallError("close", err))
	}
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.laddr }
func (c *conn) RemoteAddr() net.Addr { return c.raddr }

func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *conn) SetReadDeadline(t time.Time) error  { return c.setDeadline(&c.readDeadline, t) }
func (c *conn) SetWriteDeadline(t time.Time) error { return c.setDeadline(&c.writeDeadline, t) }

func (c *conn) setDeadline(d *atomic.Int64, t time.Time) error {
	if c.closed.Load() {
		return c.opError("set deadline", net.ErrClosed)
	}
	var ns int64
	if !t.IsZero() {
		ns = max(t.UnixNano(), 1)
	}
	d.Store(ns)
	return nil
}

// opError wraps err as the net package does, so callers that look for
// net.Error (timeouts) or net.ErrClosed find them.
func (c *conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.laddr, Addr: c.raddr, Err: err}
}
