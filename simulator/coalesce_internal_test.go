package simulator

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// A long round streams: once a round holds coalesceBytes, they go out
// while the rest of the round is still being written, and the round's
// bytes arrive whole and in order.
func TestCoalescerStreamsLongRound(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	c := &coalescer{Conn: server}

	const frames = 20
	frame := bytes.Repeat([]byte{'x'}, 4<<10)
	want := bytes.Repeat(frame, frames)
	got := make([]byte, len(want))
	streamed := make(chan struct{})
	readErr := make(chan error, 1)
	go func() {
		if _, err := io.ReadFull(client, got[:coalesceBytes]); err != nil {
			readErr <- err
			return
		}
		close(streamed)
		_, err := io.ReadFull(client, got[coalesceBytes:])
		readErr <- err
	}()

	c.begin()
	for range frames {
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-streamed:
	case err := <-readErr:
		t.Fatal(err)
	case <-time.After(5 * time.Second):
		t.Fatalf("%d bytes of the round held and none sent before its end", frames*len(frame))
	}
	if err := c.flush(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the round's bytes differ")
	}
}
