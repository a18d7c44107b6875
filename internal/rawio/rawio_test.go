package rawio_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gcnats/gcnats/internal/rawio"
)

// pair is a wrapped client connection and the plain server side of it.
func pair(t *testing.T) (client, server net.Conn) {
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
	client, err = (&rawio.Dialer{}).DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// Both directions carry more than the sockets' buffers hold, so reads and
// writes meet EAGAIN and wait in the network poller, and every byte
// arrives in order.
func TestLargeTransfersBothWays(t *testing.T) {
	client, server := pair(t)
	if _, ok := client.(*net.TCPConn); ok {
		t.Skip("no raw I/O on this platform")
	}
	data := make([]byte, 16<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, dir := range []struct {
		name     string
		from, to net.Conn
	}{{"write", client, server}, {"read", server, client}} {
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

func TestEOFWhenPeerCloses(t *testing.T) {
	client, server := pair(t)
	if _, err := server.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" and EOF", got, err)
	}
}

// A read deadline ends a read with a timeout, as net.Conn promises, and
// the connection still works afterwards.
func TestReadDeadline(t *testing.T) {
	client, server := pair(t)
	if err := client.SetReadDeadline(time.Now().Add(20 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := client.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	if err := client.SetReadDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Read(make([]byte, 1)); err != nil {
		t.Fatalf("read after clearing the deadline: %v", err)
	}
}

// Close ends a read with net.ErrClosed, whether the read was already
// waiting in the poller or starts after it: the error is the poller's,
// mapped as net maps it.
func TestCloseEndsRead(t *testing.T) {
	client, _ := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := client.Read(make([]byte, 1))
		errc <- err
	}()
	client.Close()
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed connection: %v, want net.ErrClosed", err)
	}
}

// A write to a peer that has gone reports the system's error instead of
// blocking or claiming success.
func TestWriteToResetPeer(t *testing.T) {
	client, server := pair(t)
	server.(*net.TCPConn).SetLinger(0) // close with RST
	server.Close()
	chunk := make([]byte, 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := client.Write(chunk)
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

// TLS runs over a wrapped connection as over any other: this is how the
// socket to Genesys (wss://) is made.
func TestTLSOverWrappedConnection(t *testing.T) {
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
	wrapped := 0
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&rawio.Dialer{}).DialContext(ctx, network, addr)
		if _, plain := c.(*net.TCPConn); err == nil && !plain {
			wrapped++
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
	if wrapped != 1 && runtime.GOOS == "linux" {
		t.Fatalf("%d wrapped connections dialled, want 1", wrapped)
	}
}
