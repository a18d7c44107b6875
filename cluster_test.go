package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/simulator"
)

// testCluster is a real JetStream cluster in the test process: nats-server
// nodes routed to each other on loopback, each with its own store, so a
// node can be stopped and started again with what it had stored.
type testCluster struct {
	t     *testing.T
	nodes []*clusterNode
}

type clusterNode struct {
	name string
	opts *server.Options // the template each start clones
	srv  *server.Server  // nil while the node is down
}

// freePort reserves a loopback port and releases it for a server to take.
// Routes name every node's cluster port before any node starts, so the
// ports cannot be left to the servers to pick.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startCluster starts n nodes and waits until the cluster has elected a
// JetStream meta leader and every node has caught up with it.
func startCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	clusterPorts := make([]int, n)
	var routes []string
	for i := range n {
		clusterPorts[i] = freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.nodes = append(c.nodes, &clusterNode{name: name, opts: &server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       freePort(t),
			NoSigs:     true,
			NoLog:      true,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster:    server.ClusterOpts{Name: "gcnats-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
			// Lame duck mode as a Helm chart's preStop hook starts it, in
			// seconds rather than its default two minutes.
			LameDuckDuration:    2 * time.Second,
			LameDuckGracePeriod: 500 * time.Millisecond,
		}})
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.stop(nd)
		}
	})
	for _, nd := range c.nodes {
		c.launch(nd)
	}
	for _, nd := range c.nodes {
		c.ready(nd)
	}
	c.waitPeers(n)
	return c
}

// waitPeers waits until the cluster has one JetStream meta leader, every
// running node follows it, and the leader counts n peers online. Followers
// can be current before the leader has heard from them: until it has, it
// places no stream on them ("no suitable peers for placement, peer
// offline").
func (c *testCluster) waitPeers(n int) {
	c.t.Helper()
	c.waitFor(fmt.Sprintf("a JetStream meta leader that every node follows, with %d peers online", n), func() bool {
		var leader *server.Server
		for _, nd := range c.nodes {
			if nd.srv == nil {
				continue
			}
			if !nd.srv.JetStreamIsCurrent() {
				return false
			}
			if nd.srv.JetStreamIsLeader() {
				if leader != nil {
					return false
				}
				leader = nd.srv
			}
		}
		return leader != nil && len(leader.JetStreamClusterPeers()) == n
	})
}

// launch starts a node without waiting for it: nodes of a cluster come up
// together.
func (c *testCluster) launch(nd *clusterNode) {
	c.t.Helper()
	if err := nd.boot(); err != nil {
		c.t.Fatal(err)
	}
}

func (c *testCluster) ready(nd *clusterNode) {
	c.t.Helper()
	if err := nd.ready(); err != nil {
		c.t.Fatal(err)
	}
}

// start brings a stopped node back with its store.
func (c *testCluster) start(nd *clusterNode) {
	c.t.Helper()
	c.launch(nd)
	c.ready(nd)
}

// boot and ready return their errors, for a node started from another
// goroutine than the test's.
func (nd *clusterNode) boot() error {
	srv, err := server.NewServer(nd.opts.Clone())
	if err != nil {
		return fmt.Errorf("node %s: %w", nd.name, err)
	}
	srv.Start()
	nd.srv = srv
	return nil
}

func (nd *clusterNode) ready() error {
	// A node recovering its JetStream store under -race, beside every other
	// test package on two cores, has taken over 10 s (make test).
	if !nd.srv.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("node %s not accepting clients after 30s", nd.name)
	}
	return nil
}

func (c *testCluster) stop(nd *clusterNode) {
	if nd.srv == nil {
		return
	}
	nd.srv.Shutdown()
	nd.srv.WaitForShutdown()
	nd.srv = nil
}

// urls is NATS_URL for the cluster: every node's client URL.
func (c *testCluster) urls() string {
	var u []string
	for _, nd := range c.nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", nd.opts.Port))
	}
	return strings.Join(u, ",")
}

func (c *testCluster) node(name string) *clusterNode {
	c.t.Helper()
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// streamLeader is the node leading the stream, or nil while none does.
func (c *testCluster) streamLeader(stream string) *clusterNode {
	for _, nd := range c.nodes {
		if nd.srv != nil && nd.srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return nd
		}
	}
	return nil
}

// waitStreamCurrent waits until every running node has the stream's
// replicated state and one of them leads it.
func (c *testCluster) waitStreamCurrent(stream string) {
	c.t.Helper()
	c.waitFor("stream "+stream+" led and current on every running node", func() bool {
		for _, nd := range c.nodes {
			if nd.srv != nil && (!nd.srv.JetStreamIsCurrent() || !nd.srv.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream)) {
				return false
			}
		}
		return c.streamLeader(stream) != nil
	})
}

// waitFor polls the servers' own state: nats-server offers no
// notification for leadership or catch-up.
func (c *testCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster: no %s after %s", what, testTimeout)
		}
		<-tick.C
	}
}

// clusterHarness runs gcnats against a fresh three-node cluster with its
// streams on all three nodes, and the test's reader on the cluster too.
func clusterHarness(t *testing.T) (*harness, *testCluster) {
	t.Helper()
	c := startCluster(t, 3)
	h := clusterHarnessOn(c)
	h.start(faultTopicCount)
	h.checkClusterStream(c)
	return h, c
}

// clusterHarnessOn is a harness whose sidecar and reader use the cluster
// c, with R3 streams; the sidecar is not started.
func clusterHarnessOn(c *testCluster) *harness {
	t := c.t
	t.Helper()
	h := faultHarness(t, simulator.Options{}, map[string]string{
		"NATS_URL":               c.urls(),
		"GCNATS_STREAM_REPLICAS": "3",
	})
	var err error
	h.nc, err = nats.Connect(c.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	return h
}

// checkClusterStream checks the started sidecar's stream is R3 and
// current on every running node.
func (h *harness) checkClusterStream(c *testCluster) {
	t := h.t
	t.Helper()
	if logs := h.logs.full(); !strings.Contains(logs, "mode=external servers="+c.urls()) {
		t.Errorf("no start-up line naming the external mode and every server of NATS_URL (%s)", c.urls())
	}
	c.waitStreamCurrent("GENESYS")
	s, err := h.js.Stream(context.Background(), "GENESYS")
	if err != nil {
		t.Fatal(err)
	}
	if r := s.CachedInfo().Config.Replicas; r != 3 {
		t.Fatalf("stream GENESYS has %d replicas, want 3", r)
	}
}

// catchUp measures how long, from the end of a fault, the events read
// until then take to be stored: the publisher's Flush returns once every
// record accepted before the call is acked.
func catchUp(h *harness) time.Duration {
	h.t.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := h.sc.pub.Flush(ctx); err != nil {
		h.t.Fatalf("the events read before the fault ended were not stored: %v (%d buffered)\n%s", err, h.sc.pub.Stats().Buffered, h.logs)
	}
	return time.Since(start)
}

// takeGcnatsNode takes away, with down, the node gcnats is connected to,
// and brings it back once gcnats has moved to another node and caught up;
// it returns the time from the fault's start until then.
func takeGcnatsNode(h *harness, c *testCluster, how string, down func(*clusterNode)) time.Duration {
	h.t.Helper()
	nd := c.node(h.sc.pub.Conn().ConnectedServerName())
	began := time.Now()
	down(nd)
	// Caught up means on another node: nats.go may not have noticed the
	// loss yet when nothing was in flight.
	c.waitFor("gcnats on another node", func() bool {
		nc := h.sc.pub.Conn()
		return nc.IsConnected() && nc.ConnectedServerName() != nd.name
	})
	catchUp(h)
	took := time.Since(began)
	h.t.Logf("node %s (gcnats' own) %s: gcnats moved to %s, caught up %s after the fault began",
		nd.name, how, h.sc.pub.Conn().ConnectedServerName(), took.Round(time.Millisecond))
	c.start(nd)
	c.waitStreamCurrent("GENESYS")
	return took
}

// TestClusterFailover runs gcnats against a three-node JetStream cluster
// with an R3 stream while the org sends a steady stream of events, and
// takes nodes away under it. Every event is stored once: publishes cut
// off by a fault are retried with their dedup ids, and the dedup state is
// replicated, so it survives a change of leader.
func TestClusterFailover(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(*harness, *testCluster) time.Duration // returns the catch-up time
	}{
		{"stream leader shut down", func(h *harness, c *testCluster) time.Duration {
			leader := c.streamLeader("GENESYS")
			c.stop(leader)
			t0 := catchUp(h)
			h.t.Logf("leader %s shut down: caught up %s after", leader.name, t0.Round(time.Millisecond))
			c.start(leader)
			c.waitStreamCurrent("GENESYS")
			return t0
		}},
		{"gcnats' node shut down", func(h *harness, c *testCluster) time.Duration {
			return takeGcnatsNode(h, c, "shut down", c.stop)
		}},
		{"gcnats' node in lame duck mode", func(h *harness, c *testCluster) time.Duration {
			// How the NATS Helm chart takes a node down (preStop: nats-server
			// --signal ldm): the node hands its Raft leaderships over, stops
			// its JetStream, tells its clients, and closes them one by one.
			return takeGcnatsNode(h, c, "in lame duck mode", func(nd *clusterNode) {
				nd.srv.LameDuckShutdown()
				c.stop(nd)
			})
		}},
		{"rolling restart", func(h *harness, c *testCluster) time.Duration {
			var worst time.Duration
			for _, nd := range c.nodes {
				c.stop(nd)
				c.start(nd)
				took := catchUp(h)
				// Each node is back and current before the next goes, as
				// a StatefulSet's rolling update waits for readiness.
				c.waitStreamCurrent("GENESYS")
				h.t.Logf("node %s restarted: caught up %s after it was back", nd.name, took.Round(time.Millisecond))
				worst = max(worst, took)
			}
			return worst
		}},
		{"quorum lost for 10s", func(h *harness, c *testCluster) time.Duration {
			// Two of three down: the stream has no leader and refuses
			// every write until one of them is back.
			keep := c.nodes[0]
			for _, nd := range c.nodes {
				if nd != c.streamLeader("GENESYS") && nd.name != h.sc.pub.Conn().ConnectedServerName() {
					keep = nd
				}
			}
			var down []*clusterNode
			for _, nd := range c.nodes {
				if nd != keep {
					c.stop(nd)
					down = append(down, nd)
				}
			}
			// The outage's length is the scenario itself.
			time.Sleep(10 * time.Second)
			buffered := h.sc.pub.Stats().Buffered
			for _, nd := range down {
				c.start(nd)
			}
			took := catchUp(h)
			h.t.Logf("quorum lost 10s (%s and %s down, %d events buffered): caught up %s after both were back",
				down[0].name, down[1].name, buffered, took.Round(time.Millisecond))
			c.waitStreamCurrent("GENESYS")
			return took
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, c := clusterHarness(t)
			em := startEmitter(h.sim, 10*time.Millisecond)
			em.waitMore(h, 60)
			took := tc.fault(h, c)
			em.waitMore(h, 60)
			acc := h.verify(em.finish(), true)
			dups := counterValue(h.sc.metrics.duplicates)
			t.Logf("cluster, %s: sent %d, stored %d, lost %d, duplicated %d, catch-up %s (retries collapsed by JetStream: %v)",
				tc.name, acc.Sent, acc.Stored, acc.Lost, acc.Duplicated, took.Round(time.Millisecond), dups)
			if !slices.ContainsFunc(c.nodes, func(nd *clusterNode) bool { return nd.srv != nil }) {
				t.Fatal("no node running")
			}
		})
	}
}

// TestClusterStartWithoutQuorum starts gcnats while two nodes of three
// are down, as when its pod starts while the NATS cluster recovers from an
// outage: with no meta leader the cluster can neither find nor create a
// stream. gcnats waits, saying why, rather than exiting (a pod that exits
// is restarted later and later by its kubelet); once the nodes are back it
// sets the stream up and stores every event.
func TestClusterStartWithoutQuorum(t *testing.T) {
	c := startCluster(t, 3)
	down := c.nodes[1:]
	for _, nd := range down {
		c.stop(nd)
	}
	h := clusterHarnessOn(c)
	base := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	h.environ["GCNATS_HTTP_ADDR"] = strings.TrimPrefix(base, "http://")

	back := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := h.logs.waitFor(ctx, "cannot set up the stream yet; retrying"); err != nil {
			back <- fmt.Errorf("no line saying stream set-up is retried: %w", err)
			return
		}
		// The probe says why the app is held back.
		resp, err := http.Get(base + "/startupz")
		if err != nil {
			back <- err
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "setting up stream GENESYS, retrying") {
			back <- fmt.Errorf("/startupz %d %q while the stream cannot be set up; want 503 saying it retries", resp.StatusCode, body)
			return
		}
		for _, nd := range down {
			if err := nd.boot(); err != nil {
				back <- err
				return
			}
		}
		for _, nd := range down {
			if err := nd.ready(); err != nil {
				back <- err
				return
			}
		}
		back <- nil
	}()
	h.start(faultTopicCount)
	if err := <-back; err != nil {
		t.Fatalf("%v\n%s", err, h.logs)
	}
	h.checkClusterStream(c)

	em := startEmitter(h.sim, 10*time.Millisecond)
	em.waitMore(h, 60)
	acc := h.verify(em.finish(), true)
	t.Logf("cluster, started without quorum: %s", acc)
}

// TestClusterStartStoppedWhileWaiting stops gcnats while it waits for a
// cluster without quorum: it ends promptly, and as a shutdown (the
// command exits 0), not as a failed start.
func TestClusterStartStoppedWhileWaiting(t *testing.T) {
	c := startCluster(t, 3)
	for _, nd := range c.nodes[1:] {
		c.stop(nd)
	}
	h := clusterHarnessOn(c)
	s, err := loadSettings(h.environ)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- runSidecar(ctx, s, slog.New(slog.NewTextHandler(h.logs, nil)), sidecarHooks{}) }()
	wctx, wcancel := context.WithTimeout(context.Background(), testTimeout)
	defer wcancel()
	if err := h.logs.waitFor(wctx, "cannot set up the stream yet; retrying"); err != nil {
		t.Fatalf("%v\n%s", err, h.logs)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("stopped while waiting for the cluster: %v; want context.Canceled", err)
		}
	case <-time.After(testTimeout):
		t.Fatalf("still waiting %s after the stop\n%s", testTimeout, h.logs)
	}
}
