package simulator_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

// TestSubscribeDelay: a topic new to a channel receives events only after
// the delay; a topic the channel already held keeps receiving.
func TestSubscribeDelay(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1})
	cfg := sdk(t, sim)
	first, second := queueTopic(sim, 0, "conversations"), queueTopic(sim, 1, "conversations")
	ch := createChannel(t, cfg, first)
	dialConnected(t, sim, ch)
	sim.SetSubscribeDelay(300 * time.Millisecond)
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	body := []platformclientv2.Channeltopic{{Id: &first}, {Id: &second}}
	if _, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, body, false); err != nil {
		t.Fatal(err)
	}
	evs := sim.Emit(first, second)
	if evs[0].Delivered != 1 || evs[1].Delivered != 0 {
		t.Fatalf("right after the call: delivered %d and %d, want 1 (held) and 0 (new)", evs[0].Delivered, evs[1].Delivered)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := sim.Wait(ctx, func(s simulator.Snapshot) bool { c, _ := s.Channel(*ch.Id); return c.Pending == 0 }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("the new topic received after %s, before the delay", d)
	}
	if ev := sim.Emit(second)[0]; ev.Delivered != 1 {
		t.Fatalf("after the delay: delivered %d, want 1", ev.Delivered)
	}
}

// TestRejectTopicsAndHang: refused topics fail a strict call with their
// status and are answered Rejected with ignoreErrors; HangREST holds a
// request until its time or Close.
func TestRejectTopicsAndHang(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 1})
	cfg := sdk(t, sim)
	ok, refused := queueTopic(sim, 0, "conversations"), queueTopic(sim, 1, "conversations")
	sim.RejectTopics(http.StatusForbidden, "", refused)
	ch := createChannel(t, cfg)
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	body := []platformclientv2.Channeltopic{{Id: &ok}, {Id: &refused}}
	if _, resp, err := api.PutNotificationsChannelSubscriptions(*ch.Id, body, false); err == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("strict call: %v", err)
	}
	got, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, body, true)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, e := range *got.Entities {
		states[*e.Id] = *e.State
	}
	if states[ok] != "Permitted" || states[refused] != "Rejected" {
		t.Fatalf("states %v", states)
	}
	sim.AcceptTopics()
	if _, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, body, false); err != nil {
		t.Fatalf("after AcceptTopics: %v", err)
	}

	sim.HangREST("HEAD", "/api/v2/notifications/channels/", time.Hour)
	done := make(chan error, 1)
	go func() {
		_, err := api.HeadNotificationsChannel(*ch.Id)
		done <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sim.Wait(ctx, func(simulator.Snapshot) bool { return sim.Stats().RequestsHung == 1 }); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		t.Fatalf("a hung request answered: %v", err)
	default:
	}
	_ = sim.Close()
	<-done
}
