package connector

import (
	"context"
	"net"
	"runtime"
	"testing"
)

// The socket to Genesys is dialled through package rawio, so at everyday
// rates its reads do not wake the runtime's monitor thread.
func TestSocketDialUsesRawIO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw I/O is Linux only")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	if dialer.NetDialContext == nil {
		t.Fatal("the websocket dialer dials with the default dialer")
	}
	c, err := dialer.NetDialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, plain := c.(*net.TCPConn); plain {
		t.Fatal("the websocket dialer returned a plain *net.TCPConn")
	}
}
