// Package conntest checks that a connection made by one of gcnats' own
// dialers (packages rawio and lazyread, which read and write sockets with
// raw system calls) keeps the net.Conn contract where its callers rely on
// it: every byte in order through full socket buffers, io.EOF, a
// *net.OpError from a dead peer, and TLS on top. Each check takes the
// dialer's client side and a plain server side.
package conntest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// DialFunc dials like net.Dialer.DialContext.
type DialFunc func(ctx context.Context, network, address string) (net.Conn, error)

// Pair dials a client connection with dial to a plain server side; both
// are closed when the test ends.
func Pair(t *testing.T, dial DialFunc) (client, server net.Conn) {
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
	client, err = dial(context.Background(), "tcp", ln.Addr().String())
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

// LargeTransfersBothWays sends more than the sockets' buffers hold each
// way, so reads and writes meet EAGAIN and wait, and checks every byte
// arrives in order.
func LargeTransfersBothWays(t *testing.T, client, server net.Conn) {
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

// EOFWhenPeerCloses checks that the client reads what the server sent
// last, then io.EOF.
func EOFWhenPeerCloses(t *testing.T, client, server net.Conn) {
	if _, err := server.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err := io.ReadAll(client)
	if err != nil || string(got) != "last" {
		t.Fatalf("read %q, %v; want \"last\" and EOF", got, err)
	}
}

// WriteToResetPeer checks that writes to a peer that has gone report the
// system's error as a write *net.OpError instead of blocking or claiming
// success.
func WriteToResetPeer(t *testing.T, client, server net.Conn) {
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

// TLSRoundTrip posts 1 MiB over HTTPS through connections made by dial
// and checks the same 1 MiB comes back; it returns the connections dialled.
func TLSRoundTrip(t *testing.T, dial DialFunc) []net.Conn {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
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
	var dialled []net.Conn
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err == nil {
			dialled = append(dialled, c)
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
	return dialled
}
