package publisher

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestWriteBehindKeepsOrder writes many chunks of random sizes through the
// queue while the reader is slower than the writer: the reader gets every
// byte, in order.
func TestWriteBehindKeepsOrder(t *testing.T) {
	client, peer := net.Pipe()
	w := newWriteBehind(client, 4096)
	defer w.Close()

	var want bytes.Buffer
	rng := rand.New(rand.NewPCG(1, 2))
	got := make(chan []byte, 1)
	total := 0
	chunks := make([][]byte, 2000)
	for i := range chunks {
		chunks[i] = make([]byte, 1+rng.IntN(3000))
		for j := range chunks[i] {
			chunks[i][j] = byte(rng.Uint32())
		}
		total += len(chunks[i])
	}
	go func() {
		buf := make([]byte, total)
		_, err := io.ReadFull(peer, buf)
		if err != nil {
			buf = nil
		}
		got <- buf
	}()
	for _, c := range chunks {
		want.Write(c)
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the reader got %d bytes that differ from the %d written", len(b), want.Len())
	}
}

// TestWriteBehindDoesNotWaitForTheReader: a write returns while nothing
// reads, up to the limit; past it, a write waits for room until its write
// deadline, and a read makes room.
func TestWriteBehindDoesNotWaitForTheReader(t *testing.T) {
	client, peer := net.Pipe()
	defer peer.Close()
	w := newWriteBehind(client, 1000)
	defer w.Close()

	// The pump takes the first write and blocks in the pipe's Write, as
	// nothing reads; the next ones queue up to the limit.
	if _, err := w.Write(make([]byte, 400)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the pump to take the first write", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queued) == 0
	})
	for range 2 {
		if _, err := w.Write(make([]byte, 400)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write(make([]byte, 200)); err != nil {
		t.Fatal(err)
	}
	if err := w.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := w.Write(make([]byte, 1))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a write past the limit with nothing read: %v, want a deadline error", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("%v is not a timeout", err)
	}

	// Reading makes room, and the waiting write goes through.
	if err := w.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := w.Write([]byte("last")); done <- err }()
	read := make(chan int, 1)
	go func() {
		n, _ := io.Copy(io.Discard, peer)
		read <- int(n)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.Close() // sends what is queued first, as a socket's close does
	if n := <-read; n != 1404 {
		t.Fatalf("the reader got %d bytes, want 1404", n)
	}
}

// TestWriteBehindClose: Close ends a write waiting for room and the pump,
// even with nothing reading, and later writes fail with net.ErrClosed.
func TestWriteBehindClose(t *testing.T) {
	client, peer := net.Pipe()
	defer peer.Close()
	w := newWriteBehind(client, 10)
	w.linger = 10 * time.Millisecond // nothing reads: do not wait a second for it
	if _, err := w.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the pump to take the write", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queued) == 0
	})
	if _, err := w.Write(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan error, 1)
	go func() { _, err := w.Write(make([]byte, 10)); waiting <- err }()
	waitFor(t, 10*time.Second, "the write past the limit to wait for room", func() bool {
		return parkedIn("publisher.(*writeBehind).Write", "[select")
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waiting; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the waiting write: %v, want net.ErrClosed", err)
	}
	<-w.done
	if _, err := w.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("a write after Close: %v, want net.ErrClosed", err)
	}
}

// TestWriteBehindPeerGone: when the other end closes, the pump's write
// fails and every later write returns that error rather than queueing
// bytes no one will read.
func TestWriteBehindPeerGone(t *testing.T) {
	client, peer := net.Pipe()
	w := newWriteBehind(client, 1<<20)
	defer w.Close()
	peer.Close()
	if _, err := w.Write([]byte("lost with the peer")); err != nil {
		t.Fatal(err) // queued before the pump found out
	}
	<-w.done
	if _, err := w.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
		t.Fatalf("a write after the peer closed: %v, want io.ErrClosedPipe", err)
	}
}

// TestInProcessConnection publishes through a connection to the embedded
// server that uses no socket: every message is stored, in order, and the
// connection says so.
func TestInProcessConnection(t *testing.T) {
	e, err := StartEmbedded(EmbeddedOptions{Listen: "127.0.0.1:-1", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := nats.Connect(e.ClientURL(), nats.InProcessServer(e))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if got := nc.ConnectedAddr(); got != "pipe" {
		t.Fatalf("connected to %q, want an in-process pipe", got)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "INPROC", Subjects: []string{"inproc.>"}, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20000
	body := bytes.Repeat([]byte("x"), 4000)
	for i := range n {
		if _, err := js.PublishAsync("inproc."+strconv.Itoa(i%10), body, jetstream.WithMsgID(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatalf("%d acks outstanding", js.PublishAsyncPending())
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stored %d of %d", info.State.Msgs, n)
	}
	for _, seq := range []uint64{1, n / 2, n} {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if id := m.Header.Get(jetstream.MsgIDHeader); id != strconv.Itoa(int(seq-1)) {
			t.Fatalf("message %d has id %s: out of order", seq, id)
		}
	}
}

// TestWriteBehindDropsLargeBuffers: after a burst, the queue does not keep
// its megabytes for reuse.
func TestWriteBehindDropsLargeBuffers(t *testing.T) {
	client, peer := net.Pipe()
	defer peer.Close()
	w := newWriteBehind(client, 4<<20)
	defer w.Close()
	for _, n := range []int{1 << 20, 1, 2} {
		if _, err := w.Write(make([]byte, n)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.ReadFull(peer, make([]byte, 1<<20+3)); err != nil {
		t.Fatal(err)
	}
	// One more batch: the pump has dealt with the burst's buffer before it
	// takes this one, keeping it as its spare or as the new queue.
	if _, err := w.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if c := max(cap(w.spare), cap(w.queued)); c > maxSpareBatch {
		t.Fatalf("a %d-byte buffer kept after a 1 MiB burst", c)
	}
}

// TestInProcessConnectionDropped: the server closes the publisher's
// in-process connection while records are in flight (as it would a slow
// consumer). nats.go connects in process again, and every record is
// stored once.
func TestInProcessConnectionDropped(t *testing.T) {
	e := startServer(t, t.TempDir(), "127.0.0.1:-1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	nc, err := Connect(ctx, e.ClientURL(), ConnectOptions{Logger: testLogger(), Options: []nats.Option{
		nats.InProcessServer(e), nats.ReconnectWait(20 * time.Millisecond),
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := EnsureStream(ctx, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, MaxAge: time.Hour, Duplicates: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	p := newPublisher(t, js)
	const n = 20000
	body := bytes.Repeat([]byte("x"), 1000)
	for i := range n {
		if i == n/2 {
			cid, err := nc.GetClientID()
			if err != nil {
				t.Fatal(err)
			}
			if err := e.srv.DisconnectClientByID(cid); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Publish(ctx, testRecord(i, body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if nc.Reconnects == 0 {
		t.Fatal("the connection was not dropped")
	}
	if got := nc.ConnectedAddr(); got != "pipe" {
		t.Fatalf("reconnected to %q, not in process", got)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != n {
		t.Fatalf("stored %d of %d", info.State.Msgs, n)
	}
}

// parkedIn reports whether a goroutine is blocked (its state starting with
// state, e.g. "[select") inside the function named fn: the waiting that a
// test needs to have begun, which has no signal of its own.
func parkedIn(fn, state string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, state) && strings.Contains(g, fn) {
			return true
		}
	}
	return false
}
