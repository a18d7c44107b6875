package simulator_test

import (
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// TestCloseStopsEverything runs a busy simulator (generator, heartbeats,
// sockets, a pending closing warning) and checks that Close leaves no
// goroutine behind.
func TestCloseStopsEverything(t *testing.T) {
	http.DefaultClient.CloseIdleConnections()
	before := runtime.NumGoroutine()

	sim, err := simulator.New(simulator.Options{EventInterval: 5 * time.Millisecond, HeartbeatInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := sim.Start(); err != nil {
		t.Fatal(err)
	}
	cfg := sdk(t, sim)
	a := createChannel(t, cfg, queueTopic(sim, 0, "conversations"))
	b := createChannel(t, cfg, queueTopic(sim, 1, "users"))
	ca := dialConnected(t, sim, a)
	dialConnected(t, sim, b)
	ca.next()
	if err := sim.SendClosingWarning(*b.Id, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := sim.StallSocket(*a.Id); err != nil {
		t.Fatal(err)
	}
	if err := sim.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sim.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := sim.Wait(ctxT(t), func(simulator.Snapshot) bool { return false }); err != simulator.ErrClosed {
		t.Fatalf("Wait after Close: %v", err)
	}
	ca.conn.Close()
	http.DefaultClient.CloseIdleConnections()

	// Client-side goroutines (the SDK's HTTP transport, the test's sockets)
	// wind down on their own; the server's are gone when Close returns.
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if strings.Contains(stacks, "simulator.(*Server)") {
			t.Fatalf("%d goroutines after Close, %d before:\n%s", n, before, stacks)
		}
	}
}
