package fleet

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// startJetStream runs a real single-node JetStream server for the test.
func startJetStream(t *testing.T) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

func openBucket(t *testing.T, url string, ttl time.Duration) (*nats.Conn, jetstream.KeyValue) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := OpenBucket(t.Context(), js, "test", ttl, 1)
	if err != nil {
		t.Fatal(err)
	}
	return nc, kv
}

func TestLeaseIsHeldByOneMember(t *testing.T) {
	srv := startJetStream(t)
	_, a := openBucket(t, srv.ClientURL(), 2*time.Second)
	_, b := openBucket(t, srv.ClientURL(), 2*time.Second)
	ctx := t.Context()
	la, err := Acquire(ctx, a, "shard.0.0", []byte("a"), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(ctx, b, "shard.0.0", []byte("b"), 2*time.Second); !errors.Is(err, ErrHeld) {
		t.Fatalf("second acquire: %v, want ErrHeld", err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(ctx, b, "shard.0.0", []byte("b"), 2*time.Second); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		t.Fatalf("renewing a lease given up: %v, want a revision mismatch", err)
	}
}

// TestKeptLeaseOutlivesItsTTL keeps a lease for three TTLs while another
// member keeps trying to take it.
func TestKeptLeaseOutlivesItsTTL(t *testing.T) {
	const ttl = time.Second
	srv := startJetStream(t)
	_, a := openBucket(t, srv.ClientURL(), ttl)
	_, b := openBucket(t, srv.ClientURL(), ttl)
	la, err := Acquire(t.Context(), a, "m", nil, ttl)
	if err != nil {
		t.Fatal(err)
	}
	held, release := la.Keep(t.Context(), ttl/6)
	deadline := time.Now().Add(3 * ttl)
	tick := time.NewTicker(ttl / 10)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		<-tick.C
		if _, err := Acquire(t.Context(), b, "m", nil, ttl); !errors.Is(err, ErrHeld) {
			t.Fatalf("another member took a kept lease: %v", err)
		}
		if held.Err() != nil {
			t.Fatalf("kept lease ended: %v", context.Cause(held))
		}
	}
	if err := release(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(t.Context(), b, "m", nil, ttl); err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
}

// TestCutHolderLetsGoBeforeAnotherTakesOver cuts the holder from NATS: its
// lease must end (fence) within half the TTL of its last renewal, and
// another member can take the lease only after that.
func TestCutHolderLetsGoBeforeAnotherTakesOver(t *testing.T) {
	const ttl = 2 * time.Second
	srv := startJetStream(t)
	proxy := startProxy(t, srv.Addr().String())
	_, a := openBucket(t, "nats://"+proxy.addr(), ttl)
	_, b := openBucket(t, srv.ClientURL(), ttl)
	la, err := Acquire(t.Context(), a, "shard.3.1", nil, ttl)
	if err != nil {
		t.Fatal(err)
	}
	held, release := la.Keep(t.Context(), ttl/6)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		release(ctx) // cut off: it cannot reach NATS, and need not
	}()
	// A renewal through the proxy first, so the cut meets a kept lease.
	first, deadline := la.Fence(), time.Now().Add(ttl)
	for !la.Fence().After(first) {
		if time.Now().After(deadline) {
			t.Fatal("no renewal within the TTL")
		}
		time.Sleep(10 * time.Millisecond)
	}
	proxy.cut()
	cut := time.Now() // a renewal sent before can still have been answered; none sent after can

	var takenAt time.Time
	for takenAt.IsZero() {
		if _, err := Acquire(t.Context(), b, "shard.3.1", nil, ttl); err == nil {
			takenAt = time.Now()
		} else if !errors.Is(err, ErrHeld) {
			t.Fatal(err)
		}
		if time.Since(cut) > 3*ttl {
			t.Fatal("the lease did not expire within three TTLs of the cut")
		}
		time.Sleep(20 * time.Millisecond)
	}
	<-held.Done()
	if !IsFenced(held) {
		t.Fatalf("held ended with %v, want the fence", context.Cause(held))
	}
	fenced := la.Fence()
	if d := fenced.Sub(cut); d > ttl/2 {
		t.Errorf("the cut holder's fence came %v after the cut, more than half the TTL", d)
	}
	if !takenAt.After(fenced) {
		t.Errorf("another member took the lease at %v, before the holder's fence %v", takenAt, fenced)
	}
	t.Logf("fence %v after the cut; taken over %v after the cut", fenced.Sub(cut).Round(time.Millisecond), takenAt.Sub(cut).Round(time.Millisecond))
}
