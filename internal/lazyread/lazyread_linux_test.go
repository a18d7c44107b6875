package lazyread

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pair dials a lazy client connection to a plain server side.
func pair(t *testing.T, linger time.Duration) (*conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	c, err := (&Dialer{Linger: linger}).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); server.Close() })
	return c.(*conn), server
}

// readAsync reads once in its own goroutine.
func readAsync(c net.Conn) <-chan string {
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		if err != nil {
			got <- "error: " + err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	return got
}

func write(t *testing.T, c net.Conn, s string) {
	t.Helper()
	if _, err := c.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

// lingering reports each time the reader starts to wait for a write.
func lingering(t *testing.T) <-chan struct{} {
	ch := make(chan struct{}, 16)
	testHookLinger = func() { ch <- struct{}{} }
	t.Cleanup(func() { testHookLinger = nil })
	return ch
}

// polled lists the inodes of the files in the runtime's epoll set, read
// from /proc: the files whose readiness can wake the process. Inodes, not
// descriptor numbers, so that a duplicate of a registered socket counts.
func polled(t *testing.T) map[uint64]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc:", err)
	}
	inodes := map[uint64]bool{}
	for _, e := range entries {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err != nil || target != "anon_inode:[eventpoll]" {
			continue
		}
		info, err := os.ReadFile("/proc/self/fdinfo/" + e.Name())
		if err != nil {
			continue
		}
		for line := range strings.Lines(string(info)) {
			for _, field := range strings.Fields(line) {
				if hex, ok := strings.CutPrefix(field, "ino:"); ok && strings.HasPrefix(line, "tfd:") {
					n, err := strconv.ParseUint(hex, 16, 64)
					if err != nil {
						t.Fatalf("epoll entry %q: %v", line, err)
					}
					inodes[n] = true
				}
			}
		}
	}
	return inodes
}

// socketInode is the inode of the socket behind descriptor fd.
func socketInode(t *testing.T, fd int) uint64 {
	t.Helper()
	target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	digits, ok := strings.CutPrefix(target, "socket:[")
	n, err := strconv.ParseUint(strings.TrimSuffix(digits, "]"), 10, 64)
	if !ok || err != nil {
		t.Fatalf("descriptor %d is %q, not a socket", fd, target)
	}
	return n
}

// The point of the package: the connection's socket is not in the
// runtime's poller, under any descriptor, so an answer arriving while the
// process idles cannot wake it. An ordinary connection's is, which shows
// the check can see it.
func TestNotInThePoller(t *testing.T) {
	c, server := pair(t, 0)
	plain, err := server.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serverFD int
	plain.Control(func(fd uintptr) { serverFD = int(fd) })
	inodes := polled(t)
	if !inodes[socketInode(t, serverFD)] {
		t.Fatalf("an ordinary connection's socket is not among the polled %v: the check sees nothing", inodes)
	}
	if inodes[socketInode(t, c.fd)] {
		t.Fatal("the lazy connection's socket is in the runtime's poller")
	}
}

// While writes come often, an answer waits for the next write: the reader
// does not return it before, and returns it as soon as the write is made.
func TestAnswerRidesOnTheNextWrite(t *testing.T) {
	c, server := pair(t, time.Hour)
	waiting := lingering(t)
	write(t, c, "a")
	write(t, c, "b") // two writes well within the linger: frequent
	if _, err := io.ReadFull(server, make([]byte, 2)); err != nil {
		t.Fatal(err)
	}
	got := readAsync(c)
	<-waiting
	write(t, server, "answer")
	select {
	case s := <-got:
		t.Fatalf("read %q before the next write", s)
	case <-time.After(100 * time.Millisecond):
	}
	write(t, c, "c")
	if s := <-got; s != "answer" {
		t.Fatalf("read %q after the next write, want the answer", s)
	}
}

// With no further write, the answer is read when the linger ends.
func TestAnswerReadAfterTheLinger(t *testing.T) {
	c, server := pair(t, 20*time.Millisecond)
	waiting := lingering(t)
	write(t, c, "a")
	write(t, c, "b")
	got := readAsync(c)
	<-waiting
	write(t, server, "answer")
	if s := <-got; s != "answer" {
		t.Fatalf("read %q, want the answer", s)
	}
}

// A lone write (the first one, or one long after the last) and data the
// peer sends unasked are read at once, without lingering: with a linger of
// an hour, anything else would hang.
func TestQuietConnectionReadsEagerly(t *testing.T) {
	c, server := pair(t, time.Hour)
	waiting := lingering(t)
	got := readAsync(c)
	write(t, server, "unasked")
	if s := <-got; s != "unasked" {
		t.Fatalf("read %q, want the peer's message", s)
	}
	write(t, c, "request")
	got = readAsync(c)
	write(t, server, "reply")
	if s := <-got; s != "reply" {
		t.Fatalf("read %q, want the reply", s)
	}
	if len(waiting) != 0 {
		t.Fatal("the reader lingered after a lone write")
	}
}

// Both directions carry more than the sockets' buffers hold, so reads and
// writes meet EAGAIN and wait in poll(2), and every byte arrives in order.
func TestLargeTransfersBothWays(t *testing.T) {
	c, server := pair(t, 0)
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"write", c, server}, {"read", server, c}} {
		t.Run(dir.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				n, err := dir.from.Write(data)
				if err == nil && n != len(data) {
					err = io.ErrShortWrite
				}
				errc <- err
			}()
			got := make([]byte, len(data))
			if _, err := io.ReadFull(dir.to, got); err != nil {
				t.Fatal(err)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatal("bytes differ")
			}
		})
	}
}

// Many small request-reply exchanges in a row, as a JetStream publisher
// with acks makes them: every reply arrives, whichever way the reader
// waited for it.
func TestManyExchanges(t *testing.T) {
	c, server := pair(t, time.Millisecond)
	go func() {
		buf := make([]byte, 4)
		for {
			if _, err := io.ReadFull(server, buf); err != nil {
				return
			}
			if _, err := server.Write(buf); err != nil {
				return
			}
		}
	}()
	errc := make(chan error, 1)
	const n = 20000
	go func() {
		for i := range n {
			if _, err := fmt.Fprintf(c, "%04d", i%10000); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	buf := make([]byte, 4)
	for i := range n {
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatalf("reply %d: %v", i, err)
		}
		if want := fmt.Sprintf("%04d", i%10000); string(buf) != want {
			t.Fatalf("reply %d is %q, want %q", i, buf, want)
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func TestEOFWhenPeerCloses(t *testing.T) {
	c, server := pair(t, 0)
	write(t, server, "last")
	server.Close()
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" and EOF", got, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}

// A read deadline ends a read with a timeout, in poll(2) and while the
// reader lingers, and the connection still works afterwards.
func TestReadDeadline(t *testing.T) {
	c, server := pair(t, time.Hour)
	for _, lingers := range []bool{false, true} {
		if lingers {
			write(t, c, "a")
			write(t, c, "b")
		}
		if err := c.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
			t.Fatalf("read past the deadline (lingering %v): %v, want a timeout", lingers, err)
		}
	}
	if err := c.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	write(t, server, "x")
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after clearing the deadline: %v", err)
	}
}

// A write deadline ends a write that waits for room with a timeout, and
// one set in the past fails the next write at once (crypto/tls relies on
// that to end a Close).
func TestWriteDeadline(t *testing.T) {
	c, _ := pair(t, 0)
	if err := c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for {
		if _, err := c.Write(chunk); err != nil {
			if !isTimeout(err) {
				t.Fatalf("write past the deadline: %v, want a timeout", err)
			}
			break
		}
	}
	if err := c.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("x")); !isTimeout(err) {
		t.Fatalf("write with a past deadline: %v, want a timeout", err)
	}
}

// Close ends every wait with net.ErrClosed: a read in poll(2), a read that
// lingers for a write, a write that waits for room; and every call after.
func TestCloseEndsWaits(t *testing.T) {
	t.Run("polling read", func(t *testing.T) {
		c, _ := pair(t, 0)
		got := readAsync(c)
		c.Close()
		if s := <-got; !strings.Contains(s, net.ErrClosed.Error()) {
			t.Fatalf("read: %s, want net.ErrClosed", s)
		}
	})
	t.Run("lingering read", func(t *testing.T) {
		c, _ := pair(t, time.Hour)
		waiting := lingering(t)
		write(t, c, "a")
		write(t, c, "b")
		got := readAsync(c)
		<-waiting
		c.Close()
		if s := <-got; !strings.Contains(s, net.ErrClosed.Error()) {
			t.Fatalf("read: %s, want net.ErrClosed", s)
		}
	})
	t.Run("blocked write", func(t *testing.T) {
		c, _ := pair(t, 0)
		errc := make(chan error, 1)
		go func() {
			chunk := make([]byte, 1<<20)
			for {
				if _, err := c.Write(chunk); err != nil {
					errc <- err
					return
				}
			}
		}()
		// The writer is blocked once the socket's buffers are full; Close
		// ends it wherever it is.
		c.Close()
		if err := <-errc; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write: %v, want net.ErrClosed", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("write after Close: %v, want net.ErrClosed", err)
		}
		if err := c.Close(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("second Close: %v, want net.ErrClosed", err)
		}
	})
}

// A write to a peer that has gone reports the system's error instead of
// blocking or claiming success.
func TestWriteToResetPeer(t *testing.T) {
	c, server := pair(t, 0)
	server.(*net.TCPConn).SetLinger(0) // close with RST
	server.Close()
	chunk := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Write(chunk)
		if err != nil {
			var oe *net.OpError
			if !errors.As(err, &oe) || oe.Op != "write" {
				t.Fatalf("write error %v is not a write *net.OpError", err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("writes to a reset peer kept succeeding")
		}
	}
}

// TLS runs over a lazy connection as over any other: a NATS connection
// with NATS_CA set is made that way.
func TestTLSOverLazyConnection(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(got, body) {
			http.Error(w, "request body differs", http.StatusBadRequest)
			return
		}
		w.Write(body)
	}))
	defer srv.Close()
	tr := srv.Client().Transport.(*http.Transport).Clone()
	lazy := 0
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&Dialer{}).DialContext(ctx, network, addr)
		if _, ok := c.(*conn); ok {
			lazy++
		}
		return c, err
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post(srv.URL, "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("status %d, %d bytes back; want 200 and the 1 MiB sent", resp.StatusCode, len(got))
	}
	if lazy != 1 {
		t.Fatalf("%d lazy connections dialled, want 1", lazy)
	}
}
