package connector

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

func newChecked(t *testing.T, sim *simulator.Server, topics ...string) *Connector {
	t.Helper()
	c, err := New(Options{APIURL: sim.URL(), ClientID: sim.ClientID(), ClientSecret: sim.ClientSecret(), Topics: topics}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestTopicCheckNamesTheNearest: a misspelt topic is refused before any
// channel is made, naming the nearest topic Genesys offers in the form it
// was written; the SDK's call reads the simulator's availabletopics, which
// serves the SDK's notificationMappings.json. Before the check, Plan
// accepted v2.users.*.presense and listed the org's users for it.
func TestTopicCheckNamesTheNearest(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ topic, unknown, nearest string }{
		{"v2.users.*.presense", "v2.users.*.presense", "v2.users.*.presence"},
		{"v2.routing.queues.*.conversation", "v2.routing.queues.*.conversation", "v2.routing.queues.*.conversations"},
		{"v2.users.abc-123?presence&routingstatus", "v2.users.abc-123.routingstatus", "v2.users.abc-123.routingStatus"},
		{"v2.nothing.like.it.at.all.here", "v2.nothing.like.it.at.all.here", ""},
	} {
		c := newChecked(t, sim, "v2.users.*.routingStatus", tc.topic)
		_, err := c.Plan(ctx)
		var ute *UnknownTopicError
		if !errors.As(err, &ute) {
			t.Fatalf("%s: got %v, want an unknown topic", tc.topic, err)
		}
		if ute.Topic != tc.unknown || ute.Nearest != tc.nearest {
			t.Errorf("%s: unknown %q, nearest %q; want %q, %q", tc.topic, ute.Topic, ute.Nearest, tc.unknown, tc.nearest)
		}
		if !Permanent(err) || !strings.Contains(err.Error(), "GCNATS_TOPICS") {
			t.Errorf("%s: %v is not a permanent error naming GCNATS_TOPICS", tc.topic, err)
		}
		t.Logf("%s: %v", tc.topic, err)
	}

	// The sidecar's path: Run stops at once, before any channel.
	c := newChecked(t, sim, "v2.users.*.presense")
	if err := c.Run(ctx); !Permanent(err) {
		t.Fatalf("Run: %v, want the unknown topic", err)
	}
	for key, n := range sim.Stats().Requests {
		if key.Route == simulator.RouteChannels || key.Route == simulator.RouteUsers {
			t.Errorf("%d × %s %s before the topics were checked", n, key.Method, key.Route)
		}
	}
}

// TestTopicCheckAcceptsEveryForm: wildcards, real ids, the combined form
// and topics with two ids pass the check.
func TestTopicCheckAcceptsEveryForm(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := newChecked(t, sim,
		"v2.routing.queues.*.conversations",
		"v2.users.*?presence&routingStatus",
		"v2.users.8f0c2b6e-0000-4000-8000-000000000001.presence",
		"v2.detail.events.conversation.8f0c2b6e-0000-4000-8000-000000000002.wrapup",
	)
	if err := c.checkTopics(ctx); err != nil {
		t.Fatal(err)
	}
	n := sim.Stats().Requests[simulator.RequestKey{Method: http.MethodGet, Route: simulator.RouteTopics, Status: http.StatusOK}]
	if n != 1 {
		t.Fatalf("%d availabletopics calls, want 1", n)
	}
}

// TestTopicCheckGoesOnWithoutTheList: when Genesys does not answer the
// listing, start-up is not held up; the subscription still checks.
func TestTopicCheckGoesOnWithoutTheList(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1})
	sim.AddFault(simulator.Fault{Method: http.MethodGet, Path: simulator.RouteTopics, Status: http.StatusNotFound})
	c := newChecked(t, sim, "v2.users.*.presence")
	if err := c.checkTopics(context.Background()); err != nil {
		t.Fatalf("a failed listing stopped the check: %v", err)
	}
}
