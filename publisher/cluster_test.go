package publisher

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// miniCluster is three routed nats-server nodes in the test process, each
// with its own store so a node can be stopped and started again.
type miniCluster struct {
	t    *testing.T
	opts []*server.Options
	srvs []*server.Server
}

// freeLoopbackPort reserves a loopback port and releases it for a server
// to take, where the port must be known before the server starts.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func startMiniCluster(t *testing.T) *miniCluster {
	t.Helper()
	c := &miniCluster{t: t}
	var routes []string
	clusterPorts := make([]int, 3)
	for i := range clusterPorts {
		clusterPorts[i] = freeLoopbackPort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range clusterPorts {
		c.opts = append(c.opts, &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: freeLoopbackPort(t),
			NoSigs: true, NoLog: true, JetStream: true, StoreDir: t.TempDir(),
			Cluster: server.ClusterOpts{Name: "publisher-test", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		})
	}
	c.srvs = make([]*server.Server, 3)
	t.Cleanup(func() {
		for i := range c.srvs {
			c.stop(i)
		}
	})
	for i := range c.srvs {
		c.boot(i)
	}
	for i := range c.srvs {
		c.ready(i)
	}
	c.waitPeers()
	return c
}

// waitPeers waits until every node follows one meta leader that counts
// all three online: only then does it place streams and consumers.
func (c *miniCluster) waitPeers() {
	c.t.Helper()
	c.waitFor("a meta leader counting three peers online", func() bool {
		leaders := 0
		for _, s := range c.srvs {
			if !s.JetStreamIsCurrent() {
				return false
			}
			if s.JetStreamIsLeader() && len(s.JetStreamClusterPeers()) == 3 {
				leaders++
			}
		}
		return leaders == 1
	})
}

// waitStream waits until the stream has a leader and every node has its
// replicated state.
func (c *miniCluster) waitStream(stream string) {
	c.t.Helper()
	c.waitFor("stream "+stream+" led and current on every node", func() bool {
		for _, s := range c.srvs {
			if !s.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
				return false
			}
		}
		return c.streamLeader(stream) >= 0
	})
}

func (c *miniCluster) boot(i int) {
	c.t.Helper()
	s, err := server.NewServer(c.opts[i].Clone())
	if err != nil {
		c.t.Fatal(err)
	}
	s.Start()
	c.srvs[i] = s
}

func (c *miniCluster) ready(i int) {
	c.t.Helper()
	if !c.srvs[i].ReadyForConnections(30 * time.Second) {
		c.t.Fatalf("node %d not accepting clients after 30s", i+1)
	}
}

func (c *miniCluster) stop(i int) {
	if c.srvs[i] == nil {
		return
	}
	c.srvs[i].Shutdown()
	c.srvs[i].WaitForShutdown()
	c.srvs[i] = nil
}

func (c *miniCluster) waitFor(what string, cond func() bool) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, what, cond)
}

func (c *miniCluster) streamLeader(stream string) int {
	for i, s := range c.srvs {
		if s != nil && s.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return i
		}
	}
	return -1
}

// On a replicated stream, a send that reaches the leader while an earlier
// send of the same id is still being agreed on gets "409 duplicate message
// id is in process" (10158). That is not a refusal: the earlier send may
// yet be stored, or be lost with a leader change. The record is sent again
// until the stream answers with an ack, a duplicate one if the earlier send
// made it, and it is stored once. Here the stream's followers are stopped
// under a publish: the leader proposes it and cannot commit it, the
// record's ack times out, and its next send meets the proposal.
func TestInProcessDuplicateIsRetried(t *testing.T) {
	c := startMiniCluster(t)
	var urls []string
	for _, o := range c.opts {
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	nc := connectTest(t, strings.Join(urls, ","))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, Replicas: 3, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	c.waitStream("TEST")
	leader := c.streamLeader("TEST")
	// The client on the leader: its sends must reach the leader while the
	// followers are down.
	lnc := connectTest(t, c.srvs[leader].ClientURL())
	ljs, err := jetstream.New(lnc)
	if err != nil {
		t.Fatal(err)
	}

	var reasons reasonCounter
	var inProcess atomic.Int64
	obs := reasons.observer()
	obs.Retried = func(reason string) {
		if reason == ReasonInProcess {
			inProcess.Add(1)
		}
	}
	p := newPublisher(t, ljs, WithAckTimeout(300*time.Millisecond), WithObserver(obs))
	var followers []int
	for i := range c.srvs {
		if i != leader {
			followers = append(followers, i)
		}
	}
	for _, i := range followers {
		c.stop(i)
	}
	r := testRecord(1, nil)
	if err := p.Publish(ctx, r); err != nil {
		t.Fatal(err)
	}
	// The leader keeps leading for a while without its followers; the
	// record's second send meets the first one's proposal.
	waitFor(t, 30*time.Second, "a send answered 'in process'", func() bool {
		return inProcess.Load() > 0 || reasons.get(ReasonRejected) > 0
	})
	if n := reasons.get(ReasonRejected); n > 0 {
		t.Fatalf("the record was given up as rejected (stats %+v)", p.Stats())
	}
	for _, i := range followers {
		c.boot(i)
	}
	for _, i := range followers {
		c.ready(i)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v (stats %+v)", err, p.Stats())
	}
	if st := p.Stats(); st.Failed != 0 || st.Acked != 1 {
		t.Fatalf("stats %+v", st)
	}
	c.waitPeers()
	c.waitStream("TEST")
	assertExactlyOnce(t, js, "TEST", map[string]bool{string(r.ID): true})
	t.Logf("in-process answers retried: %d", inProcess.Load())
}
