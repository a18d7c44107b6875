package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/simulator"
)

// clusterHarness runs gcnats against a fresh three-node cluster with its
// streams on all three nodes, and the test's reader on the cluster too.
func clusterHarness(t *testing.T) (*harness, *natstest.Cluster) {
	t.Helper()
	c := natstest.StartCluster(t, 3)
	h := clusterHarnessOn(t, c)
	h.start(faultTopicCount)
	h.checkClusterStream(c)
	return h, c
}

// clusterHarnessOn is a harness whose sidecar and reader use the cluster
// c, with R3 streams; the sidecar is not started.
func clusterHarnessOn(t *testing.T, c *natstest.Cluster) *harness {
	t.Helper()
	h := faultHarness(t, simulator.Options{}, map[string]string{
		"NATS_URL":               c.URLs(),
		"GCNATS_STREAM_REPLICAS": "3",
	})
	var err error
	h.nc, err = nats.Connect(c.URLs(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
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
func (h *harness) checkClusterStream(c *natstest.Cluster) {
	t := h.t
	t.Helper()
	if logs := h.logs.full(); !strings.Contains(logs, "mode=external servers="+c.URLs()) {
		t.Errorf("no start-up line naming the external mode and every server of NATS_URL (%s)", c.URLs())
	}
	c.WaitStreamCurrent("GENESYS")
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
func takeGcnatsNode(h *harness, c *natstest.Cluster, how string, down func(*natstest.Node)) time.Duration {
	h.t.Helper()
	nd := c.Node(h.sc.pub.Conn().ConnectedServerName())
	began := time.Now()
	down(nd)
	// Caught up means on another node: nats.go may not have noticed the
	// loss yet when nothing was in flight.
	c.WaitFor("gcnats on another node", func() bool {
		nc := h.sc.pub.Conn()
		return nc.IsConnected() && nc.ConnectedServerName() != nd.Name
	})
	catchUp(h)
	took := time.Since(began)
	h.t.Logf("node %s (gcnats' own) %s: gcnats moved to %s, caught up %s after the fault began",
		nd.Name, how, h.sc.pub.Conn().ConnectedServerName(), took.Round(time.Millisecond))
	c.Start(nd)
	c.WaitStreamCurrent("GENESYS")
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
		fault func(*harness, *natstest.Cluster) time.Duration // returns the catch-up time
	}{
		{"stream leader shut down", func(h *harness, c *natstest.Cluster) time.Duration {
			leader := c.StreamLeader("GENESYS")
			c.Stop(leader)
			t0 := catchUp(h)
			h.t.Logf("leader %s shut down: caught up %s after", leader.Name, t0.Round(time.Millisecond))
			c.Start(leader)
			c.WaitStreamCurrent("GENESYS")
			return t0
		}},
		{"gcnats' node shut down", func(h *harness, c *natstest.Cluster) time.Duration {
			return takeGcnatsNode(h, c, "shut down", c.Stop)
		}},
		{"gcnats' node in lame duck mode", func(h *harness, c *natstest.Cluster) time.Duration {
			// How the NATS Helm chart takes a node down (preStop: nats-server
			// --signal ldm): the node hands its Raft leaderships over, stops
			// its JetStream, tells its clients, and closes them one by one.
			return takeGcnatsNode(h, c, "in lame duck mode", func(nd *natstest.Node) {
				nd.Srv.LameDuckShutdown()
				c.Stop(nd)
			})
		}},
		{"rolling restart", func(h *harness, c *natstest.Cluster) time.Duration {
			var worst time.Duration
			for _, nd := range c.Nodes {
				c.Stop(nd)
				c.Start(nd)
				took := catchUp(h)
				// Each node is back and current before the next goes, as
				// a StatefulSet's rolling update waits for readiness.
				c.WaitStreamCurrent("GENESYS")
				h.t.Logf("node %s restarted: caught up %s after it was back", nd.Name, took.Round(time.Millisecond))
				worst = max(worst, took)
			}
			return worst
		}},
		{"quorum lost for 10s", func(h *harness, c *natstest.Cluster) time.Duration {
			// Two of three down: the stream has no leader and refuses
			// every write until one of them is back.
			keep := c.Nodes[0]
			for _, nd := range c.Nodes {
				if nd != c.StreamLeader("GENESYS") && nd.Name != h.sc.pub.Conn().ConnectedServerName() {
					keep = nd
				}
			}
			var down []*natstest.Node
			for _, nd := range c.Nodes {
				if nd != keep {
					c.Stop(nd)
					down = append(down, nd)
				}
			}
			// The outage's length is the scenario itself.
			time.Sleep(10 * time.Second)
			buffered := h.sc.pub.Stats().Buffered
			for _, nd := range down {
				c.Start(nd)
			}
			took := catchUp(h)
			h.t.Logf("quorum lost 10s (%s and %s down, %d events buffered): caught up %s after both were back",
				down[0].Name, down[1].Name, buffered, took.Round(time.Millisecond))
			c.WaitStreamCurrent("GENESYS")
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
			if !slices.ContainsFunc(c.Nodes, func(nd *natstest.Node) bool { return nd.Srv != nil }) {
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
	c := natstest.StartCluster(t, 3)
	down := c.Nodes[1:]
	for _, nd := range down {
		c.Stop(nd)
	}
	h := clusterHarnessOn(t, c)
	base := fmt.Sprintf("http://127.0.0.1:%d", natstest.FreePort(t))
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
			if err := nd.Boot(); err != nil {
				back <- err
				return
			}
		}
		for _, nd := range down {
			if err := nd.Ready(); err != nil {
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
	c := natstest.StartCluster(t, 3)
	for _, nd := range c.Nodes[1:] {
		c.Stop(nd)
	}
	h := clusterHarnessOn(t, c)
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

// TestClusterStreamLeaderLoss shuts the stream's leader down again and
// again under a steady stream of events, and measures how long after the
// cluster elects a new leader gcnats stores again (within a second in every
// run), and how long until every event read until then is stored (within
// two).
// Publishes the old leader took with it get no answer; they must not wait
// out the ack timeout, and nothing else may wait for them.
func TestClusterStreamLeaderLoss(t *testing.T) {
	const runs = 8
	h, c := clusterHarness(t)
	em := startEmitter(h.sim, 10*time.Millisecond)
	em.waitMore(h, 60)
	var worstStall, worstCatchUp time.Duration
	var slow []string
	for i := range runs {
		leader := c.StreamLeader("GENESYS")
		if leader == nil {
			t.Fatal("stream GENESYS has no leader")
		}
		meta := leader.Srv.JetStreamIsLeader()
		own := h.sc.pub.Conn().ConnectedServerName() == leader.Name
		stopped := time.Now()
		c.Stop(leader)
		c.WaitFor("a new leader of stream GENESYS", func() bool { return c.StreamLeader("GENESYS") != nil })
		elected := time.Now()
		resumed := h.waitStoredAfter("GENESYS", elected)
		// Every event read until now is stored: the publishes the old
		// leader took with it were sent again.
		catchUp(h)
		stall, caughtUp := resumed.Sub(elected), time.Since(elected)
		line := fmt.Sprintf("run %d: leader %s (meta leader too: %v, gcnats' node: %v) shut down; new leader after %s; storing again %s after it; caught up %s after it",
			i+1, leader.Name, meta, own, elected.Sub(stopped).Round(time.Millisecond),
			stall.Round(time.Millisecond), caughtUp.Round(time.Millisecond))
		t.Log(line)
		worstStall, worstCatchUp = max(worstStall, stall), max(worstCatchUp, caughtUp)
		if stall > time.Second || caughtUp > 2*time.Second {
			slow = append(slow, line)
		}
		c.Start(leader)
		c.WaitPeers(len(c.Nodes))
		c.WaitStreamCurrent("GENESYS")
		em.waitMore(h, 60)
	}
	acc := h.verify(em.finish(), true)
	t.Logf("cluster, stream leader shut down %d times: sent %d, stored %d, lost %d, duplicated %d; longest stall after an election %s, longest catch-up after one %s",
		runs, acc.Sent, acc.Stored, acc.Lost, acc.Duplicated, worstStall.Round(time.Millisecond), worstCatchUp.Round(time.Millisecond))
	if len(slow) > 0 {
		t.Errorf("storing stalled over 1s, or events read before waited over 2s, after a new leader was elected in %d of %d runs:\n%s", len(slow), runs, strings.Join(slow, "\n"))
	}
}

// waitStoredAfter waits for the stream to store a message after since and
// returns when the stream stamped it. The stream info is asked of whichever
// node the reader is on; while a leader is elected it may not answer.
func (h *harness) waitStoredAfter(stream string, since time.Time) time.Time {
	h.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		s, err := h.js.Stream(ctx, stream)
		var last time.Time
		if err == nil {
			var info *jetstream.StreamInfo
			if info, err = s.Info(ctx); err == nil {
				last = info.State.LastTime
			}
		}
		cancel()
		if last.After(since) {
			return last
		}
		time.Sleep(10 * time.Millisecond) // polling the stream's state: the server has no notification for it
	}
	h.t.Fatalf("stream %s stored nothing in %s after %s", stream, testTimeout, since.Format(time.RFC3339Nano))
	return time.Time{}
}
