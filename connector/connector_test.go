package connector

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gcnats/gcnats/simulator"
)

func topicsN(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("v2.routing.queues.%08d-0000-4000-8000-000000000000.conversations", i)
	}
	return out
}

func TestPlanSpreadsOverFewestChannels(t *testing.T) {
	groups, err := plan(topicsN(1500), 1000, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 2 || len(groups[0]) != 750 || len(groups[1]) != 750 {
		t.Fatalf("1,500 topics: groups of %v, want two of 750", lens(groups))
	}
	groups, err = plan(topicsN(1000), 1000, 10)
	if err != nil || len(groups) != 1 {
		t.Fatalf("1,000 topics: %v groups, %v", lens(groups), err)
	}
	groups, err = plan([]string{"v2.users.u1?presence&routingStatus", "v2.users.u2?presence&routingStatus", "v2.users.u3.presence"}, 2, 10)
	if err != nil || len(groups) != 3 {
		t.Fatalf("combined subscriptions count each topic: groups %v, %v", lens(groups), err)
	}
}

func TestPlanOverBudgetNamesTheNumbers(t *testing.T) {
	_, err := plan(topicsN(2500), 1000, 2)
	var pe *PlanError
	if !errors.As(err, &pe) || pe.Needed != 3 || pe.Budget != 2 || pe.Topics != 2500 {
		t.Fatalf("got %v", err)
	}
	for _, want := range []string{"2500 topics", "3 channels", "budget of 2", "GCNATS_MAX_CHANNELS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if !Permanent(err) {
		t.Error("a plan over budget should be permanent")
	}
}

func TestReplanMovesNoTopicThatStays(t *testing.T) {
	all := topicsN(1800)
	current, err := plan(all[:1500], 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	// Remove 100 from the first channel, add 300 new ones.
	next := slices.Concat(all[100:1500], all[1500:1800])
	got, err := replan(current, next, 1000, 3)
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]int{}
	for i, g := range got {
		if len(g) > 1000 {
			t.Fatalf("channel %d holds %d topics", i, len(g))
		}
		for _, tp := range g {
			if _, dup := where[tp]; dup {
				t.Fatalf("%s planned twice", tp)
			}
			where[tp] = i
		}
	}
	if len(where) != len(next) {
		t.Fatalf("planned %d topics, want %d", len(where), len(next))
	}
	for i, g := range current {
		for _, tp := range g {
			if j, ok := where[tp]; ok && j != i {
				t.Fatalf("%s moved from channel %d to %d", tp, i, j)
			}
		}
	}
	if len(got) != 2 {
		t.Errorf("%d channels, want the 2 that hold the topics", len(got))
	}
	if _, err := replan(current, topicsN(3100), 1000, 3); err == nil {
		t.Error("replan over budget should fail")
	}
}

func TestWildcardKinds(t *testing.T) {
	for topic, want := range map[string]entityKind{
		"v2.routing.queues.*.conversations":        queues,
		"v2.routing.queues.*.users":                queues,
		"v2.users.*.presence":                      users,
		"v2.users.*?presence&routingStatus":        users,
		"v2.detail.events.conversation.abc.wrapup": noWildcard,
	} {
		got, err := wildcardKind(topic)
		if err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", topic, got, err, want)
		}
	}
	for _, topic := range []string{"v2.detail.events.conversation.*.wrapup", "v2.routing.queues.*.*", "v2.users.x.*"} {
		if _, err := wildcardKind(topic); err == nil {
			t.Errorf("%s: want an error", topic)
		}
	}
}

func lens(groups [][]string) []int {
	out := make([]int, len(groups))
	for i, g := range groups {
		out[i] = len(g)
	}
	return out
}

// runConnector runs a connector against sim until ready or failed.
func runConnector(t *testing.T, sim *simulator.Server, topics []string, opts ...func(*Options)) (*Connector, chan error) {
	t.Helper()
	return runWith(t, sim, topics, nil, append([]func(*Options){func(o *Options) { o.HeartbeatTimeout = time.Second }}, opts...)...)
}

// waitReadyOrFail waits until the connector is ready, or returns its error.
func waitReadyOrFail(t *testing.T, c *Connector, done chan error) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ready := make(chan error, 1)
	go func() { ready <- c.Wait(ctx, func(s Status) bool { ok, _ := s.Ready(); return ok }) }()
	select {
	case err := <-done:
		done <- err
		return err
	case err := <-ready:
		if err != nil {
			t.Fatalf("not ready: %v", err)
		}
		return nil
	}
}

var testTopics = []string{"v2.routing.queues.*.conversations", "v2.users.*.presence"}

func TestRetryAfterIsHonoured(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	sim.AddFault(simulator.Fault{Method: "POST", Path: "/api/v2/notifications/channels", Status: http.StatusTooManyRequests, RetryAfter: time.Second})
	start := time.Now()
	c, done := runConnector(t, sim, testTopics)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < time.Second {
		t.Fatalf("ready after %s, before the 429's Retry-After of 1s", elapsed)
	}
	if sim.Stats().FaultsServed != 1 {
		t.Fatal("the 429 was not served")
	}
}

func TestServerErrorsAreRetried(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	sim.FailNext("PUT", "/api/v2/notifications/channels/", http.StatusServiceUnavailable, 2)
	sim.FailNext("GET", "/api/v2/users", http.StatusBadGateway, 1)
	c, done := runConnector(t, sim, testTopics)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	if got := sim.Stats().FaultsServed; got != 3 {
		t.Fatalf("%d faults served, want 3", got)
	}
}

func TestUnauthorizedRefreshesTheTokenOnce(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	sim.FailNext("POST", "/api/v2/notifications/channels", http.StatusUnauthorized, 1)
	c, done := runConnector(t, sim, testTopics)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	if got := sim.Stats().TokensIssued; got != 2 {
		t.Fatalf("%d tokens issued, want 2 (the first, then one refresh after the 401)", got)
	}
}

func TestForbiddenStopsNamingThePermission(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	sim.AddFault(simulator.Fault{Method: "GET", Path: "/api/v2/routing/queues", Status: http.StatusForbidden, Permission: "routing:queue:view", Times: -1})
	c, done := runConnector(t, sim, testTopics)
	err := waitReadyOrFail(t, c, done)
	if err == nil || !Permanent(err) || !IsStatus(err, http.StatusForbidden) {
		t.Fatalf("got %v, want a permanent 403", err)
	}
	if !strings.Contains(err.Error(), "routing:queue:view") {
		t.Fatalf("error %q does not name the missing permission", err)
	}
}

func TestBadCredentialsStop(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	c, done := runConnector(t, sim, testTopics, func(o *Options) { o.ClientSecret = "wrong-secret-value" })
	err := waitReadyOrFail(t, c, done)
	if err == nil || !IsStatus(err, http.StatusUnauthorized) {
		t.Fatalf("got %v, want a 401", err)
	}
	if !strings.Contains(err.Error(), "GENESYSCLOUD_OAUTHCLIENT_SECRET") {
		t.Errorf("error %q does not say what to check", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-value") {
		t.Errorf("error %q holds the secret", err)
	}
}

// TestBadTopicStops: a topic Genesys does not offer stops the connector
// before any channel; when the list of topics cannot be had, Genesys'
// 400 at the subscription still does.
func TestBadTopicStops(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	c, done := runConnector(t, sim, []string{"v2.users.*.presence", "v2.no.such.topic"})
	err := waitReadyOrFail(t, c, done)
	var ute *UnknownTopicError
	if !errors.As(err, &ute) || ute.Topic != "v2.no.such.topic" || ute.Nearest != "" {
		t.Fatalf("got %v, want the unknown topic, with nothing near it", err)
	}
	if !strings.Contains(err.Error(), "GCNATS_TOPICS") {
		t.Errorf("error %q does not point at the setting", err)
	}

	sim.AddFault(simulator.Fault{Method: http.MethodGet, Path: simulator.RouteTopics, Status: http.StatusNotFound, Times: -1})
	c, done = runConnector(t, sim, []string{"v2.users.*.presence", "v2.no.such.topic"})
	err = waitReadyOrFail(t, c, done)
	if err == nil || !IsStatus(err, http.StatusBadRequest) {
		t.Fatalf("without the list: got %v, want a 400", err)
	}
	if !strings.Contains(err.Error(), "GCNATS_TOPICS") {
		t.Errorf("error %q does not point at the setting", err)
	}
}

func TestRefusedDialsBackOffAndRecover(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	sim.SetRefuseDials(true)
	c, done := runConnector(t, sim, testTopics)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sim.Wait(ctx, func(s simulator.Snapshot) bool { return sim.Stats().DialsRefused >= 2 }); err != nil {
		t.Fatal(err)
	}
	if ok, _ := c.Status().Ready(); ok {
		t.Fatal("ready while every dial is refused")
	}
	sim.SetRefuseDials(false)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
}

func TestTokenSourceCachesAndRefreshesAhead(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{TokenLifetime: time.Hour})
	ts := NewTokenSource(sim.URL(), sim.ClientID(), sim.ClientSecret(), nil)
	now := time.Now()
	ts.now = func() time.Time { return now }
	ctx := context.Background()
	first, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.Lifetime != time.Hour {
		t.Fatalf("lifetime %s", first.Lifetime)
	}
	now = now.Add(44 * time.Minute)
	again, _ := ts.Token(ctx)
	if again.Value != first.Value {
		t.Fatal("refreshed with more than a quarter of the life left")
	}
	now = now.Add(2 * time.Minute)
	next, err := ts.Token(ctx)
	if err != nil || next.Value == first.Value {
		t.Fatalf("not refreshed with under a quarter of the life left: %v", err)
	}
	if got := sim.Stats().TokensIssued; got != 2 {
		t.Fatalf("%d tokens issued, want 2", got)
	}
	if s := fmt.Sprint(next); strings.Contains(s, next.Value) {
		t.Fatal("a token prints its value")
	}
}

func TestRotateAt(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for life, lead := range map[time.Duration]time.Duration{
		24 * time.Hour:   10 * time.Minute,
		time.Minute:      6 * time.Second,
		10 * time.Second: 2 * time.Second,
		2 * time.Second:  time.Second,
	} {
		ch := &channelInfo{Expires: created.Add(life), TokenExpires: created.Add(2 * life)}
		if got := ch.deadline().Sub(rotateAt(ch, created)); got != lead {
			t.Errorf("life %s: rotates %s before its deadline, want %s", life, got, lead)
		}
	}
	// The token's end comes first.
	ch := &channelInfo{Expires: created.Add(24 * time.Hour), TokenExpires: created.Add(time.Hour)}
	if got := rotateAt(ch, created); !got.Equal(created.Add(time.Hour - 6*time.Minute)) {
		t.Errorf("rotates at %s, want 54m after creation", got.Sub(created))
	}
}

func TestTokenAfterOutlivesTheOldToken(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{TokenLifetime: time.Hour})
	ts := NewTokenSource(sim.URL(), sim.ClientID(), sim.ClientSecret(), nil)
	ctx := context.Background()
	first, err := ts.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Fresh by Token's rule, yet not good enough for a channel that must
	// outlive the first token.
	next, err := ts.TokenAfter(ctx, first.Expiry)
	if err != nil || next.Value == first.Value || !next.Expiry.After(first.Expiry) {
		t.Fatalf("TokenAfter returned the same token or an error: %v", err)
	}
	if again, _ := ts.TokenAfter(ctx, first.Expiry); again.Value != next.Value {
		t.Fatal("TokenAfter refreshed although the cached token outlives the time")
	}
}

// TestDeadChannelFoundByHead: while dials are refused the channel dies;
// HEAD finds it gone, one new channel is made and dialled until dials work
// again, never one per attempt.
func TestDeadChannelFoundByHead(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 2, Users: 2})
	c, done := runConnector(t, sim, testTopics)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	first := sim.Channels()[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sim.SetRefuseDials(true)
	if err := sim.CloseSocket(first.ID); err != nil {
		t.Fatal(err)
	}
	if err := sim.Wait(ctx, func(simulator.Snapshot) bool { return sim.Stats().DialsRefused >= 1 }); err != nil {
		t.Fatal(err)
	}
	if err := sim.ExpireChannel(first.ID); err != nil {
		t.Fatal(err)
	}
	if err := sim.Wait(ctx, func(simulator.Snapshot) bool { return sim.Stats().ChannelsCreated == 2 }); err != nil {
		t.Fatal(err)
	}
	refused := sim.Stats().DialsRefused
	if err := sim.Wait(ctx, func(simulator.Snapshot) bool { return sim.Stats().DialsRefused >= refused+2 }); err != nil {
		t.Fatal(err)
	}
	if got := sim.Stats().ChannelsCreated; got != 2 {
		t.Fatalf("%d channels created while dials were refused, want 2: one per attempt leaks channels", got)
	}
	if sim.Stats().Calls("HEAD", simulator.RouteChannel) == 0 {
		t.Fatal("the dead channel was not checked with HEAD")
	}
	sim.SetRefuseDials(false)
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	if got := sim.Stats().ChannelsCreated; got != 2 {
		t.Fatalf("%d channels created, want 2", got)
	}
}

// TestConnectorsShareAProcess makes connectors while another one talks to
// Genesys: the SDK keeps its logging settings in package variables that
// every new configuration writes and every call reads. Found by chaos
// (seed 11, a second replica joining); -race fails it without sdkGlobals.
func TestConnectorsShareAProcess(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	c, done := runConnector(t, sim, testTopics, func(o *Options) { o.TopicRefresh = time.Millisecond })
	if err := waitReadyOrFail(t, c, done); err != nil {
		t.Fatal(err)
	}
	// Refreshes list queues and users back to back meanwhile.
	calls := func() int { return sim.Stats().Calls("GET", simulator.RouteUsers) }
	for from := calls(); calls() < from+20; {
		if _, err := New(Options{APIURL: sim.URL(), ClientID: "id", ClientSecret: "secret", Topics: testTopics}, nil); err != nil {
			t.Fatal(err)
		}
	}
}
