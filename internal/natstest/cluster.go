// Package natstest runs real nats-server JetStream clusters inside a test
// process, as net/http/httptest runs real HTTP servers: nodes routed to
// each other on loopback, each with its own store, so that a test can stop
// and start a node, take a leader away or lose quorum, and wait on the
// servers' own state for the cluster to recover.
package natstest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Timeout bounds every wait: long enough for a loaded 2-core machine
// under -race, short enough to fail rather than hang.
const Timeout = 60 * time.Second

// Cluster is a real JetStream cluster in the test process: nats-server
// nodes routed to each other on loopback, each with its own store, so a
// node can be stopped and started again with what it had stored.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
}

// Node is one server of a Cluster.
type Node struct {
	Name string
	Opts *server.Options // the template each start clones
	Srv  *server.Server  // nil while the node is down
}

// FreePort finds a loopback port for a server to listen on, below the
// kernel's ephemeral range. Routes name every node's cluster port before
// any node starts, and a stopped node comes back on its ports, so the
// ports cannot be left to the servers to pick; and a port from the
// ephemeral range, while its server is down, can become the local port of
// any outgoing connection on the machine (test packages run side by
// side), after which the node cannot listen on it again. A process never
// hands out the same port twice.
func FreePort(t testing.TB) int {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	low := ephemeralLow()
	for range 1000 {
		port := minPort + rand.IntN(low-minPort)
		if portsGiven[port] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken
		}
		l.Close()
		portsGiven[port] = true
		return port
	}
	t.Fatalf("no free port in %d-%d after 1000 tries", minPort, low-1)
	return 0
}

// minPort is the lowest port FreePort picks: above the well-known and
// most registered services' ports.
const minPort = 20000

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// ephemeralLow is the first port of the kernel's ephemeral range, from
// which it picks the local ports of outgoing connections (Linux's default
// 32768 elsewhere).
func ephemeralLow() int {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > minPort+1000 {
				low = n
			}
		}
	}
	return low
}

// StartCluster starts n nodes and waits until the cluster has elected a
// JetStream meta leader and every node has caught up with it.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t}
	clusterPorts := make([]int, n)
	var routes []string
	for i := range n {
		clusterPorts[i] = FreePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", clusterPorts[i]))
	}
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		c.Nodes = append(c.Nodes, &Node{Name: name, Opts: &server.Options{
			ServerName: name,
			Host:       "127.0.0.1",
			Port:       FreePort(t),
			NoSigs:     true,
			NoLog:      true,
			JetStream:  true,
			StoreDir:   t.TempDir(),
			Cluster:    server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: clusterPorts[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
			// Lame duck mode as a Helm chart's preStop hook starts it, in
			// seconds rather than its default two minutes.
			LameDuckDuration:    2 * time.Second,
			LameDuckGracePeriod: 500 * time.Millisecond,
		}})
	}
	t.Cleanup(func() {
		for _, nd := range c.Nodes {
			c.Stop(nd)
		}
	})
	for _, nd := range c.Nodes {
		c.Launch(nd)
	}
	for _, nd := range c.Nodes {
		c.Ready(nd)
	}
	c.WaitPeers(n)
	return c
}

// WaitPeers waits until the cluster has one JetStream meta leader, every
// running node follows it, and the leader counts n peers online. Followers
// can be current before the leader has heard from them: until it has, it
// places no stream on them ("no suitable peers for placement, peer
// offline").
func (c *Cluster) WaitPeers(n int) {
	c.t.Helper()
	c.WaitFor(fmt.Sprintf("a JetStream meta leader that every node follows, with %d peers online", n), func() bool {
		var leader *server.Server
		for _, nd := range c.Nodes {
			if nd.Srv == nil {
				continue
			}
			if !nd.Srv.JetStreamIsCurrent() {
				return false
			}
			if nd.Srv.JetStreamIsLeader() {
				if leader != nil {
					return false
				}
				leader = nd.Srv
			}
		}
		return leader != nil && len(leader.JetStreamClusterPeers()) == n
	})
}

// Launch starts a node without waiting for it: nodes of a cluster come up
// together.
func (c *Cluster) Launch(nd *Node) {
	c.t.Helper()
	if err := nd.Boot(); err != nil {
		c.t.Fatal(err)
	}
}

// Ready waits until a launched node accepts clients.
func (c *Cluster) Ready(nd *Node) {
	c.t.Helper()
	if err := nd.Ready(); err != nil {
		c.t.Fatal(err)
	}
}

// Start brings a stopped node back with its store.
func (c *Cluster) Start(nd *Node) {
	c.t.Helper()
	c.Launch(nd)
	c.Ready(nd)
}

// portsTaken names the ports the node has not bound because another
// socket holds them: ReadyForConnections does not say why it gave up.
func (nd *Node) portsTaken() string {
	var ports []int
	if nd.Srv.Addr() == nil {
		ports = append(ports, nd.Opts.Port)
	}
	if nd.Srv.ClusterAddr() == nil {
		ports = append(ports, nd.Opts.Cluster.Port)
	}
	var taken []string
	for _, port := range ports {
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err != nil {
			taken = append(taken, err.Error())
		} else {
			l.Close()
		}
	}
	if len(taken) == 0 {
		return ""
	}
	return " (" + strings.Join(taken, "; ") + ")"
}

// Boot and Ready return their errors, for a node started from another
// goroutine than the test's.
func (nd *Node) Boot() error {
	srv, err := server.NewServer(nd.Opts.Clone())
	if err != nil {
		return fmt.Errorf("node %s: %w", nd.Name, err)
	}
	srv.Start()
	nd.Srv = srv
	return nil
}

func (nd *Node) Ready() error {
	// A node recovering its JetStream store under -race, beside every other
	// test package on two cores, has taken over 10 s (make test).
	if !nd.Srv.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("node %s not accepting clients after 30s%s", nd.Name, nd.portsTaken())
	}
	return nil
}

// Stop shuts a node down, keeping its store; a stopped node is left alone.
func (c *Cluster) Stop(nd *Node) {
	if nd.Srv == nil {
		return
	}
	nd.Srv.Shutdown()
	nd.Srv.WaitForShutdown()
	nd.Srv = nil
}

// URLs lists every node's client URL, comma-separated, as NATS clients
// take a cluster's servers.
func (c *Cluster) URLs() string {
	var u []string
	for _, nd := range c.Nodes {
		u = append(u, fmt.Sprintf("nats://127.0.0.1:%d", nd.Opts.Port))
	}
	return strings.Join(u, ",")
}

// Node is the node named name.
func (c *Cluster) Node(name string) *Node {
	c.t.Helper()
	for _, nd := range c.Nodes {
		if nd.Name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %q", name)
	return nil
}

// StreamLeader is the node leading the stream, or nil while none does.
func (c *Cluster) StreamLeader(stream string) *Node {
	for _, nd := range c.Nodes {
		if nd.Srv != nil && nd.Srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			return nd
		}
	}
	return nil
}

// WaitStreamCurrent waits until every running node has the stream's
// replicated state and one of them leads it.
func (c *Cluster) WaitStreamCurrent(stream string) {
	c.t.Helper()
	c.WaitFor("stream "+stream+" led and current on every running node", func() bool {
		for _, nd := range c.Nodes {
			if nd.Srv != nil && (!nd.Srv.JetStreamIsCurrent() || !nd.Srv.JetStreamIsStreamCurrent(server.DEFAULT_GLOBAL_ACCOUNT, stream)) {
				return false
			}
		}
		return c.StreamLeader(stream) != nil
	})
}

// WaitFor polls the servers' own state: nats-server offers no
// notification for leadership or catch-up.
func (c *Cluster) WaitFor(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(Timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("cluster: no %s after %s", what, Timeout)
		}
		<-tick.C
	}
}
