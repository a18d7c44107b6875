package simulator_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

// TestCoverageNamesWhatEndedIt: the coverage record says when a topic
// lost its last receiving socket and whether the org or the client did it.
func TestCoverageNamesWhatEndedIt(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: -1})
	sim.TrackCoverage()
	cfg := sdk(t, sim)
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, cfg, topic)
	dialConnected(t, sim, ch)
	if err := sim.CloseSocket(*ch.Id); err != nil {
		t.Fatal(err)
	}
	dialConnected(t, sim, ch)
	status, _, _ := call(t, http.MethodDelete, sim.URL()+"/api/v2/notifications/channels/"+*ch.Id+"/subscriptions", cfg.AccessToken, nil)
	if status != http.StatusNoContent {
		t.Fatalf("unsubscribe: %d", status)
	}
	var got []string
	for _, c := range sim.Coverage().Changes {
		if c.Topic != topic {
			t.Errorf("a change of %s", c.Topic)
		}
		got = append(got, map[bool]string{true: "+", false: "-"}[c.Covered]+map[bool]string{true: "client", false: "org"}[c.Cause.ByClient]+": "+c.Cause.String())
	}
	want := []string{
		"+client: the client changed the channel's subscriptions", // subscribed before its socket: the dial made it count
		"-org: CloseSocket dropped the socket",
		"+client: the client dialled the channel anew",
		"-client: the client changed the channel's subscriptions",
	}
	if len(got) != len(want) {
		t.Fatalf("changes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i := 1; i < len(want); i++ { // the first is the dial's or the subscription's, by timing
		if got[i] != want[i] {
			t.Errorf("change %d: %s, want %s", i, got[i], want[i])
		}
	}
}

// TestDropNewSocketsAfterPong: the dial's ping is answered, then the
// socket ends, with no close frame.
func TestDropNewSocketsAfterPong(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: -1, HeartbeatInterval: time.Hour})
	ch := createChannel(t, sdk(t, sim), queueTopic(sim, 0, "users"))
	sim.DropNewSockets(1, simulator.DropAfterPong)
	c := dial(t, *ch.ConnectUri)
	c.send(map[string]string{"message": "ping"})
	if f := c.next(); !strings.Contains(string(f.EventBody), "pong") {
		t.Fatalf("first frame %s, want the pong", f.raw)
	}
	if f, err := c.read(); err == nil || !strings.Contains(err.Error(), "1006") {
		t.Fatalf("after the pong: frame %s, err %v; want the socket ended (1006)", f.raw, err)
	}
	// Only the next one.
	c = dial(t, *ch.ConnectUri)
	c.send(map[string]string{"message": "ping"})
	c.next()
	waitFor(t, sim, func(s simulator.Snapshot) bool { info, ok := s.Channel(*ch.Id); return ok && info.Connected })
}
