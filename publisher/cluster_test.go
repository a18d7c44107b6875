package publisher

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
)

// On a replicated stream, a send that reaches the leader while an earlier
// send of the same id is still being agreed on gets "409 duplicate message
// id is in process" (10158). That is not a refusal: the earlier send may
// yet be stored, or be lost with a leader change. The record is sent again
// until the stream answers with an ack, a duplicate one if the earlier send
// made it, and it is stored once. Here the stream's followers are stopped
// under a publish: the leader proposes it and cannot commit it, the
// record's ack times out, and its next send meets the proposal.
func TestInProcessDuplicateIsRetried(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nc := connectTest(t, c.URLs())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}, Replicas: 3, Duplicates: 2 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	c.WaitStreamCurrent("TEST")
	leader := c.StreamLeader("TEST")
	// The client on the leader: its sends must reach the leader while the
	// followers are down.
	lnc := connectTest(t, leader.Srv.ClientURL())
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
	var followers []*natstest.Node
	for _, nd := range c.Nodes {
		if nd != leader {
			followers = append(followers, nd)
		}
	}
	for _, nd := range followers {
		c.Stop(nd)
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
	for _, nd := range followers {
		c.Launch(nd)
	}
	for _, nd := range followers {
		c.Ready(nd)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v (stats %+v)", err, p.Stats())
	}
	if st := p.Stats(); st.Failed != 0 || st.Acked != 1 {
		t.Fatalf("stats %+v", st)
	}
	c.WaitPeers(len(c.Nodes))
	c.WaitStreamCurrent("TEST")
	// Read through the leader, which stayed up: a node just started may
	// take a connection before its JetStream answers (no responders).
	assertExactlyOnce(t, ljs, "TEST", map[string]bool{string(r.ID): true})
	t.Logf("in-process answers retried: %d", inProcess.Load())
}
