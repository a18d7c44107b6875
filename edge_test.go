package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/simulator"
)

const (
	hubStream   = "GENESYS_HUB"
	leafUser    = "edge"
	leafPass    = "edge-leaf-pw"
	edgeHost    = "Edge-Pod.0"
	edgeDomain  = "edge-pod_0" // domainFrom(edgeHost)
	hubJSDomain = "hub"
)

// testHub is a JetStream server in its own domain with a leaf node port
// that edges log in to, restartable with its store.
type testHub struct {
	t    *testing.T
	opts *server.Options
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
}

func startHub(t *testing.T) *testHub {
	t.Helper()
	hb := &testHub{t: t, opts: &server.Options{
		ServerName:      "hub",
		Host:            "127.0.0.1",
		Port:            natstest.FreePort(t),
		NoSigs:          true,
		NoLog:           true,
		JetStream:       true,
		JetStreamDomain: hubJSDomain,
		StoreDir:        t.TempDir(),
		LeafNode: server.LeafNodeOpts{
			Host: "127.0.0.1", Port: natstest.FreePort(t),
			Username: leafUser, Password: leafPass,
			// Otherwise the edge learns the hub's own leaf address and
			// redials it around the test's proxy.
			NoAdvertise: true,
		},
	}}
	hb.start()
	t.Cleanup(hb.stop)
	var err error
	hb.nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", hb.opts.Port), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hb.nc.Close)
	if hb.js, err = jetstream.New(hb.nc); err != nil {
		t.Fatal(err)
	}
	return hb
}

func (hb *testHub) start() {
	hb.t.Helper()
	srv, err := server.NewServer(hb.opts.Clone())
	if err != nil {
		hb.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		hb.t.Fatal("hub not ready")
	}
	hb.srv = srv
}

func (hb *testHub) stop() {
	if hb.srv != nil {
		hb.srv.Shutdown()
		hb.srv.WaitForShutdown()
		hb.srv = nil
	}
}

func (hb *testHub) leafAddr() string { return fmt.Sprintf("127.0.0.1:%d", hb.opts.LeafNode.Port) }

// msgs is how many messages the hub stream holds; 0 while it does not
// exist or the hub does not answer.
func (hb *testHub) msgs() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := hb.js.Stream(ctx, hubStream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// linkProxy stands between the edge and the hub's leaf port, so the test
// can cut the link while both servers stay up, as a network does.
type linkProxy struct {
	t            *testing.T
	addr, target string

	mu    sync.Mutex
	l     net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

func startProxy(t *testing.T, target string) *linkProxy {
	t.Helper()
	p := &linkProxy{t: t, addr: fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)), target: target, conns: map[net.Conn]bool{}}
	p.restore()
	t.Cleanup(func() { p.cut(); p.wg.Wait() })
	return p
}

// restore listens again: the edge's next redial gets through.
func (p *linkProxy) restore() {
	p.t.Helper()
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		p.t.Fatalf("proxy: %v", err)
	}
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d, err := net.Dial("tcp", p.target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[d] = true, true
			p.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, d}, {d, c}} {
				p.wg.Add(1)
				go func() {
					defer p.wg.Done()
					_, _ = io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				}()
			}
		}
	}()
}

// cut closes the link and refuses new ones until restore.
func (p *linkProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// edgeHarness runs gcnats in edge mode: its embedded server joins the hub
// as a leaf node (through a proxy the test can cut) and gcnats creates the
// hub stream that sources the local one. h.nc and h.js read the local
// stream, as an app in the pod does.
func edgeHarness(t *testing.T, environ map[string]string) (*harness, *testHub, *linkProxy) {
	t.Helper()
	hb := startHub(t)
	p := startProxy(t, hb.leafAddr())
	env := map[string]string{
		"NATS_URL":               "",
		"GCNATS_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)),
		"GCNATS_STORE_DIR":       t.TempDir(),
		"GCNATS_LEAF_REMOTE":     "nats-leaf://" + p.addr,
		"GCNATS_LEAF_USER":       leafUser,
		"GCNATS_LEAF_PASSWORD":   leafPass,
		"GCNATS_HUB_STREAM":      hubStream,
		"HOSTNAME":               edgeHost,
	}
	for k, v := range environ {
		env[k] = v
	}
	h := faultHarness(t, simulator.Options{}, env)
	h.start(faultTopicCount)
	var err error
	h.nc, err = nats.Connect(h.sc.embedded.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nc.Close)
	if h.js, err = jetstream.New(h.nc); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the hub stream", func() bool {
		_, err := hb.js.Stream(context.Background(), hubStream)
		return err == nil
	})
	return h, hb, p
}

// waitUntil polls state that offers no notification (a server's stream
// info, its leaf connections).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after %s", what, testTimeout)
		}
		<-tick.C
	}
}

// verifyHub checks that the hub stream holds every event a socket of the
// sidecar received, once, then verifies the local stream (which stops the
// sidecar).
func (h *harness) verifyHub(hb *testHub, events []simulator.Event, planned, checkLocal bool) accounting {
	h.t.Helper()
	mustStore := 0
	for _, ev := range events {
		if ev.Delivered > 0 {
			mustStore++
		}
	}
	local := h.js
	h.js = hb.js
	msgs := h.collect(hubStream, mustStore)
	h.js = local
	acc := account(events, msgs, func(ev simulator.Event) bool { return ev.Delivered == 0 })
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		h.t.Fatalf("hub: %v; lost seqs %v\n%s", acc, acc.lost, h.logs)
	}
	for _, m := range msgs {
		if m.Header.Get("Nats-Msg-Id") == "" {
			h.t.Fatalf("a message reached the hub without its Nats-Msg-Id: %v", m.Header)
		}
	}
	// The local stream lives in the sidecar's embedded server: read it
	// before the sidecar stops.
	if checkLocal {
		localMsgs := h.collect("GENESYS", mustStore)
		if n := h.eventMsgs("GENESYS"); n != mustStore {
			h.t.Errorf("local stream holds %d messages, want %d", n, mustStore)
		}
		if la := account(events, localMsgs, func(ev simulator.Event) bool { return ev.Delivered == 0 }); la.Lost != 0 || la.Duplicated != 0 || la.Unexpected != 0 {
			h.t.Fatalf("local: %v", la)
		}
		if planned && mustStore != len(events) {
			h.t.Errorf("%d events were sent while no socket was connected: a planned change left a gap", len(events)-mustStore)
		}
	}
	if err := h.stop(); err != nil {
		h.t.Fatalf("sidecar stopped with %v", err)
	}
	// The hub sources the local stream, gap records included.
	if n, gaps := hb.msgs(), gapsReported(h.sc); n != uint64(mustStore+gaps) {
		h.t.Fatalf("hub stream holds %d messages, want %d events and %d gap records", n, mustStore, gaps)
	}
	h.t.Logf("hub: sent %d, stored %d, lost %d, duplicated %d", acc.Sent, acc.Stored, acc.Lost, acc.Duplicated)
	return acc
}

// hubCatchUp measures how long the hub takes to hold what the local
// stream held at the call.
func (h *harness) hubCatchUp(hb *testHub) (time.Duration, uint64) {
	h.t.Helper()
	start := time.Now()
	want := h.streamMsgs("GENESYS")
	waitUntil(h.t, fmt.Sprintf("%d messages at the hub", want), func() bool { return hb.msgs() >= want })
	return time.Since(start), want
}

// TestEdgeForwardsToHub runs gcnats as an edge: events are stored in the
// local stream, which apps in the pod read, and reach the hub stream
// exactly once by sourcing. The hub stream has no subjects of its own and
// the edge's subjects never cross the link, so nothing is stored twice.
func TestEdgeForwardsToHub(t *testing.T) {
	h, hb, _ := edgeHarness(t, nil)
	base := "http://" + h.sc.httpAddr.String()

	s, err := hb.js.Stream(context.Background(), hubStream)
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	if len(cfg.Subjects) != 0 || len(cfg.Sources) != 1 || cfg.Sources[0].Name != "GENESYS" ||
		cfg.Sources[0].External == nil || cfg.Sources[0].External.APIPrefix != "$JS."+edgeDomain+".API" {
		t.Fatalf("hub stream config: subjects %v, sources %+v; want no subjects and one source GENESYS via $JS.%s.API", cfg.Subjects, cfg.Sources, edgeDomain)
	}

	// A hub stream on the edge's own subjects would store every event a
	// second time if they crossed the link.
	if _, err := hb.js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "TRAP", Subjects: []string{"genesys.>"}}); err != nil {
		t.Fatalf("%v\n%s", err, h.logs)
	}
	events := h.sim.EmitN(20 * faultTopicCount)

	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "leaf link to the hub up") {
		t.Errorf("/readyz %d %q; want 200 saying the leaf link is up", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "gcnats_leaf_connected 1") {
		t.Error("/metrics has no gcnats_leaf_connected 1")
	}
	if code, body := get(t, base+"/startupz"); code != 200 {
		t.Errorf("/startupz %d %q with the embedded server up", code, body)
	}
	h.verifyHub(hb, events, true, true)

	trap, err := hb.js.Stream(context.Background(), "TRAP")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := trap.Info(context.Background()); err != nil || info.State.Msgs != 0 {
		t.Errorf("a hub stream on genesys.> holds %v messages (err %v): the edge's subjects crossed the leaf link", info.State.Msgs, err)
	}
	logs := h.logs.full()
	if !strings.Contains(logs, "mode=leaf") || !strings.Contains(logs, "domain="+edgeDomain) || !strings.Contains(logs, "hub=nats-leaf://127.0.0.1:") {
		t.Errorf("no start-up line naming the leaf mode, its domain %s and its hub:\n%s", edgeDomain, h.logs)
	}
	if strings.Contains(logs, leafPass) {
		t.Error("the leaf password reached the log")
	}
}

// TestEdgeLeafLinkCut cuts the leaf link for 30 s while events flow, then
// restores it: the pod stays ready and says the link is down, events are
// stored locally meanwhile, and every one reaches the hub once.
func TestEdgeLeafLinkCut(t *testing.T) {
	// Most of its time is spent waiting on nats-server's timers (the cut,
	// the hub's retries of its source): it runs beside the other edge tests.
	t.Parallel()
	h, hb, p := edgeHarness(t, nil)
	base := "http://" + h.sc.httpAddr.String()
	em := startEmitter(h.sim, 50*time.Millisecond)
	em.waitMore(h, 60)
	waitUntil(t, "events at the hub before the cut", func() bool { return hb.msgs() > 0 })

	p.cut()
	waitUntil(t, "the leaf link down", func() bool { return !h.sc.embedded.LeafConnected() })
	before := h.streamMsgs("GENESYS")
	// The cut's length is the scenario itself: 30 s, longer than the
	// source consumer's heartbeats and the leaf's redials, which is what
	// data written while the link was down must survive.
	time.Sleep(30 * time.Second)
	if code, body := get(t, base+"/readyz"); code != 200 || !strings.Contains(body, "leaf link to the hub down") {
		t.Errorf("/readyz %d %q during the cut; want 200 saying the leaf link is down", code, body)
	}
	if _, body := get(t, base+"/metrics"); !strings.Contains(body, "gcnats_leaf_connected 0") {
		t.Error("/metrics has no gcnats_leaf_connected 0 during the cut")
	}
	during := h.streamMsgs("GENESYS") - before
	atHub := hb.msgs()
	p.restore()
	took, held := h.hubCatchUp(hb)
	t.Logf("leaf link cut 30s: %d events stored locally during the cut (hub held %d); the hub held all %d %s after the link was restored",
		during, atHub, held, took.Round(time.Millisecond))
	if during == 0 {
		t.Error("no event was stored locally during the cut")
	}
	em.waitMore(h, 60)
	h.verifyHub(hb, em.finish(), true, true)
}

// TestEdgeHubRestart restarts the hub, with its store, while events flow.
func TestEdgeHubRestart(t *testing.T) {
	// Most of its time is spent waiting on nats-server's timers (the cut,
	// the hub's retries of its source): it runs beside the other edge tests.
	t.Parallel()
	h, hb, _ := edgeHarness(t, nil)
	em := startEmitter(h.sim, 50*time.Millisecond)
	em.waitMore(h, 60)
	hb.stop()
	em.waitMore(h, 60)
	hb.start()
	took, held := h.hubCatchUp(hb)
	t.Logf("hub restarted: it held all %d events %s after it was back", held, took.Round(time.Millisecond))
	em.waitMore(h, 60)
	h.verifyHub(hb, em.finish(), true, true)
}

// TestEdgeRestart restarts gcnats, and its embedded server, with the same
// store: the hub resumes sourcing where it was. Then on an empty store (a
// lost volume): the edge stream begins again at sequence 1, below what the
// hub last took from it, and the hub must still take its new events
// (before nats-server 2.15 a hub waited for the new stream to pass the old
// sequence: nats-io/nats-server#6206, fixed by #8384).
func TestEdgeRestart(t *testing.T) {
	// Most of its time is spent waiting on nats-server's timers (the cut,
	// the hub's retries of its source): it runs beside the other edge tests.
	t.Parallel()
	for _, lostStore := range []bool{false, true} {
		t.Run(fmt.Sprintf("store lost %v", lostStore), func(t *testing.T) {
			t.Parallel()
			h, hb, _ := edgeHarness(t, nil)
			em := startEmitter(h.sim, 50*time.Millisecond)
			em.waitMore(h, 120)
			before := em.finish()
			// Everything the first run stored is at the hub before its
			// store goes, so the events the test expects there are known.
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			if err := h.sc.pub.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			_, first := h.hubCatchUp(hb)
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			if lostStore {
				h.environ["GCNATS_STORE_DIR"] = t.TempDir()
			}
			start := time.Now()
			h.replica = h.launch()
			h.replica.waitReady(h)
			em = startEmitter(h.sim, 50*time.Millisecond)
			em.waitMore(h, 60)
			after := em.finish()
			if err := h.sc.pub.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			local := h.streamMsgs("GENESYS")
			if lostStore && local >= first {
				t.Fatalf("the recreated stream holds %d messages, not fewer than the %d the hub took from the first: the test would not see a stall", local, first)
			}
			waitUntil(t, "every event at the hub", func() bool { return hb.msgs() >= first+uint64(len(after)) })
			t.Logf("edge restarted (store lost %v): the hub held the first run's %d and the second's %d events %s after the restart began",
				lostStore, first, len(after), time.Since(start).Round(time.Millisecond))
			h.verifyHub(hb, append(before, after...), true, !lostStore)
		})
	}
}

// TestEdgeTwoReplicas runs two edge pods as the StatefulSet of
// k8s/overlays/edge does: each with its own store, its JetStream domain
// from its pod name and its own leaf link to one hub, both reading every
// event, and one hub stream sourcing both. Then one pod's link is cut for
// longer than the edges' own duplicate window: its copies reach the hub
// that much later, plus the hub's retry of its source, and must still be
// recognised there as copies. Every event is stored once at the hub.
func TestEdgeTwoReplicas(t *testing.T) {
	// Most of its time is spent waiting on nats-server's timers (the cut,
	// the hub's retries of its source): it runs beside the other edge tests.
	t.Parallel()
	const window, cut = 3 * time.Second, 8 * time.Second
	h, hb, _ := edgeHarness(t, map[string]string{"HOSTNAME": "gcnats-edge-0", "GCNATS_DEDUP_WINDOW": window.String()})
	first := h.onlyChannel()
	p1 := startProxy(t, hb.leafAddr())
	maps.Copy(h.environ, map[string]string{
		"HOSTNAME":               "gcnats-edge-1",
		"GCNATS_EMBEDDED_LISTEN": fmt.Sprintf("127.0.0.1:%d", natstest.FreePort(t)),
		"GCNATS_STORE_DIR":       t.TempDir(),
		"GCNATS_LEAF_REMOTE":     "nats-leaf://" + p1.addr,
	})
	second := h.startReplica()
	h.waitBothReplicas(faultTopicCount)
	var secondCh simulator.ChannelInfo
	for _, c := range h.sim.Snapshot().Channels {
		if c.Connected && c.ID != first.ID {
			secondCh = c
		}
	}
	waitUntil(t, "both edges' leaf links up and the hub stream sourcing both domains", func() bool {
		s, err := hb.js.Stream(context.Background(), hubStream)
		return err == nil && len(s.CachedInfo().Config.Sources) == 2 &&
			h.sc.embedded.LeafConnected() && second.sc.embedded.LeafConnected()
	})

	em := startEmitter(h.sim, 50*time.Millisecond)
	em.waitMore(h, 60)
	waitUntil(t, "events at the hub before the cut", func() bool { return hb.msgs() > 0 })
	p1.cut()
	waitUntil(t, "edge 1's leaf link down", func() bool { return !second.sc.embedded.LeafConnected() })
	atCut := hb.msgs()
	// The cut's length is the scenario: longer than the window, so edge
	// 1's copies reach the hub further from edge 0's than the edges'
	// own window.
	time.Sleep(cut)
	if grew := hb.msgs() - atCut; grew == 0 {
		t.Error("the hub stored nothing during edge 1's cut: edge 0 does not feed it")
	}
	p1.restore()
	restored := time.Now()
	events := em.finish()

	// A last event on each edge's socket alone: sourcing keeps each
	// edge's order, so once the hub holds both, it has taken every copy.
	var marks []string
	for i, ch := range []simulator.ChannelInfo{first, secondCh} {
		id := fmt.Sprintf("edge-%d-last", i)
		frame := fmt.Sprintf(`{"topicName":%q,"version":"2","eventBody":{"edge":%d},"metadata":{"CorrelationId":%q}}`, events[0].Topic, i, id)
		if err := h.sim.SendRaw(ch.ID, false, []byte(frame)); err != nil {
			t.Fatal(err)
		}
		marks = append(marks, id)
	}
	msgs := readHubUntil(t, hb, marks...)
	took := time.Since(restored)
	msgs = slices.DeleteFunc(msgs, func(m storedMsg) bool { return slices.Contains(marks, m.Header.Get("Genesys-Correlation-Id")) })
	acc := account(events, msgs, func(ev simulator.Event) bool { return ev.Delivered == 0 })
	t.Logf("two edges, edge 1's link cut %s (edges' window %s): sent %d, stored %d at the hub, lost %d, duplicated %d; edge 1 caught up %s after its link was back",
		cut, window, acc.Sent, acc.Stored, acc.Lost, acc.Duplicated, took.Round(time.Millisecond))
	if acc.Lost != 0 || acc.Duplicated != 0 || acc.Unexpected != 0 {
		t.Fatalf("hub: %v; lost seqs %v", acc, acc.lost)
	}
	if n := hb.msgs(); n != uint64(len(msgs)+len(marks)) {
		t.Fatalf("hub stream holds %d messages, want %d", n, len(msgs)+len(marks))
	}
}

// readHubUntil reads the hub stream from its start until it has read a
// message with each of the Genesys-Correlation-Id values ids, and returns
// every message read.
func readHubUntil(t *testing.T, hb *testHub, ids ...string) []storedMsg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*testTimeout)
	defer cancel()
	cons, err := hb.js.OrderedConsumer(ctx, hubStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []storedMsg
	missing := slices.Clone(ids)
	for len(missing) > 0 {
		if ctx.Err() != nil {
			t.Fatalf("hub: read %d messages, none with Genesys-Correlation-Id %q after %s", len(out), missing, 2*testTimeout)
		}
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, storedMsg{Subject: m.Subject(), Header: m.Headers(), Data: m.Data()})
			missing = slices.DeleteFunc(missing, func(id string) bool { return id == m.Headers().Get("Genesys-Correlation-Id") })
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			t.Fatal(err)
		}
	}
	return out
}
