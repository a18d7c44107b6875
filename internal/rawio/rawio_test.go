package rawio_test

import (
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/gcnats/gcnats/internal/conntest"
	"github.com/gcnats/gcnats/internal/rawio"
)

// pair is a wrapped client connection and the plain server side of it.
func pair(t *testing.T) (client, server net.Conn) {
	return conntest.Pair(t, (&rawio.Dialer{}).DialContext)
}

// The net.Conn contract's checks that lazyread's connections pass too.
func TestConnContract(t *testing.T) {
	t.Run("large transfers both ways", func(t *testing.T) {
		client, server := pair(t)
		if _, ok := client.(*net.TCPConn); ok {
			t.Skip("no raw I/O on this platform")
		}
		conntest.LargeTransfersBothWays(t, client, server)
	})
	t.Run("EOF when the peer closes", func(t *testing.T) {
		client, server := pair(t)
		conntest.EOFWhenPeerCloses(t, client, server)
	})
	t.Run("write to a reset peer", func(t *testing.T) {
		client, server := pair(t)
		conntest.WriteToResetPeer(t, client, server)
	})
	// TLS runs over a wrapped connection as over any other: this is how
	// the socket to Genesys (wss://) is made.
	t.Run("TLS", func(t *testing.T) {
		dialled := conntest.TLSRoundTrip(t, (&rawio.Dialer{}).DialContext)
		if _, plain := dialled[0].(*net.TCPConn); len(dialled) != 1 || plain && runtime.GOOS == "linux" {
			t.Fatalf("dialled %d connections (%T), want 1 wrapped", len(dialled), dialled[0])
		}
	})
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
