package simulator_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

func TestOAuthClientCredentials(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{TokenLifetime: 2 * time.Hour})

	cfg := sdk(t, sim)
	if cfg.AccessToken == "" || cfg.AccessTokenExpiresIn != 7200 {
		t.Fatalf("token %q expires_in %d, want a token and 7200", cfg.AccessToken, cfg.AccessTokenExpiresIn)
	}

	bad := sdkUnauthorized(sim)
	err := bad.AuthorizeClientCredentials(sim.ClientID(), "wrong")
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("bad secret: err = %v, want a 401 invalid_client", err)
	}

	form := func(grant, id, secret string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, sim.URL()+"/oauth/token",
			strings.NewReader(url.Values{"grant_type": {grant}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(id, secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = jsonDecode(resp.Body, &m)
		return resp.StatusCode, m
	}
	if st, m := form("client_credentials", "nobody", "x"); st != 401 || m["error"] != "invalid_client" || m["description"] == "" {
		t.Errorf("bad client: %d %v", st, m)
	}
	if st, m := form("password", sim.ClientID(), sim.ClientSecret()); st != 400 || m["error"] != "unsupported_grant_type" {
		t.Errorf("wrong grant: %d %v", st, m)
	}
	if st, m := form("client_credentials", sim.ClientID(), sim.ClientSecret()); st != 200 || m["token_type"] != "bearer" || m["expires_in"] != 7200.0 {
		t.Errorf("good: %d %v", st, m)
	}
}

func TestBearerRequired(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	st, _, m := call(t, http.MethodGet, sim.URL()+"/api/v2/routing/queues", "", nil)
	if st != 401 || m["code"] != "authentication.required" || m["status"] != 401.0 || m["message"] == "" {
		t.Errorf("no token: %d %v", st, m)
	}
	st, h, m := call(t, http.MethodGet, sim.URL()+"/api/v2/routing/queues", "not-a-token", nil)
	if st != 401 || m["code"] != "bad.credentials" || m["contextId"] == "" || h.Get("ININ-Correlation-ID") == "" {
		t.Errorf("bad token: %d %v", st, m)
	}
}

func TestTokenExpiry(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{TokenLifetime: 300 * time.Millisecond})
	cfg := sdk(t, sim)
	if cfg.AccessTokenExpiresIn != 1 {
		t.Errorf("expires_in = %d, want a sub-second lifetime rounded up to 1", cfg.AccessTokenExpiresIn)
	}
	routing := platformclientv2.NewRoutingApiWithConfig(cfg)
	if _, _, err := routing.GetRoutingQueues(1, 25, "", "", nil, nil, nil, "", false, nil); err != nil {
		t.Fatalf("fresh token: %v", err)
	}
	ch := createChannel(t, cfg, queueTopic(sim, 0, "conversations"))
	c := dialConnected(t, sim, ch)

	waitFor(t, sim, func(s simulator.Snapshot) bool { return s.Tokens == 0 })
	_, resp, err := routing.GetRoutingQueues(1, 25, "", "", nil, nil, nil, "", false, nil)
	if err == nil || resp.StatusCode != 401 || resp.Error.Code != "bad.credentials" {
		t.Fatalf("expired token: err %v resp %+v", err, resp)
	}
	// The channel died with its token.
	if f := c.next(); f.Result != "404" {
		t.Fatalf("socket got %s, want a 404 frame", f.raw)
	}
	if len(sim.Channels()) != 0 {
		t.Fatalf("channels outlived their token: %+v", sim.Channels())
	}
}

// TestClockOffset: an org whose clock runs ahead answers with times on
// its clock, the channel's expires and the Date header alike, while the
// channel still lives its lifetime.
func TestClockOffset(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{ChannelLifetime: time.Hour, ClockOffset: 30 * time.Minute})
	ch, resp, err := platformclientv2.NewNotificationsApiWithConfig(sdk(t, sim)).PostNotificationsChannels()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(*ch.Expires); d < 89*time.Minute || d > 90*time.Minute {
		t.Errorf("expires in %v by this clock, want 1h30m: an hour on the org's, 30 minutes ahead", d)
	}
	date, err := http.ParseTime(resp.Header["Date"][0])
	if err != nil {
		t.Fatal(err)
	}
	if ahead := time.Until(date); ahead < 29*time.Minute || ahead > 30*time.Minute {
		t.Errorf("Date is %v ahead, want 30m", ahead)
	}
	if life := ch.Expires.Sub(date); life < time.Hour || life > time.Hour+time.Second {
		t.Errorf("expires minus Date is %v, want the lifetime, 1h", life)
	}
}

func TestChannelLifecycle(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{ChannelLifetime: time.Hour})
	cfg := sdk(t, sim)
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)

	ch, _, err := api.PostNotificationsChannels()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(*ch.Id, "streaming-0-") || *ch.ConnectUri != "ws://"+strings.TrimPrefix(sim.URL(), "http://")+"/channels/"+*ch.Id {
		t.Errorf("channel = %s", ch.String())
	}
	if d := time.Until(*ch.Expires); d < 59*time.Minute || d > time.Hour {
		t.Errorf("expires in %v, want about 1h", d)
	}

	q0, q1 := queueTopic(sim, 0, "conversations"), queueTopic(sim, 1, "users")
	put := []platformclientv2.Channeltopic{{Id: &q0}}
	got, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, put, false)
	if err != nil || len(*got.Entities) != 1 || *(*got.Entities)[0].Id != q0 {
		t.Fatalf("put: %v %v", err, got)
	}
	got, _, err = api.PostNotificationsChannelSubscriptions(*ch.Id, []platformclientv2.Channeltopic{{Id: &q1}}, false)
	if err != nil || len(*got.Entities) != 2 {
		t.Fatalf("post: %v %v", err, got)
	}
	got, _, err = api.GetNotificationsChannelSubscriptions(*ch.Id)
	if err != nil || len(*got.Entities) != 2 {
		t.Fatalf("get: %v %v", err, got)
	}
	if _, err := api.HeadNotificationsChannel(*ch.Id); err != nil {
		t.Fatalf("head: %v", err)
	}
	list, _, err := api.GetNotificationsChannels("token")
	if err != nil || len(*list.Entities) != 1 || *(*list.Entities)[0].Id != *ch.Id {
		t.Fatalf("list: %v %v", err, list)
	}
	// Another token of the same client sees it only with includechannels=oauthclient.
	other := platformclientv2.NewNotificationsApiWithConfig(sdk(t, sim))
	if l, _, _ := other.GetNotificationsChannels("token"); len(*l.Entities) != 0 {
		t.Errorf("other token lists %d channels, want 0", len(*l.Entities))
	}
	if l, _, _ := other.GetNotificationsChannels("oauthclient"); len(*l.Entities) != 1 || (*l.Entities)[0].Id != nil {
		t.Errorf("oauthclient lists %d channels, want 1 with its id hidden", len(*l.Entities))
	}
	if _, err := api.DeleteNotificationsChannelSubscriptions(*ch.Id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if info, _ := sim.Snapshot().Channel(*ch.Id); len(info.Topics) != 0 {
		t.Errorf("topics after delete: %v", info.Topics)
	}

	resp, err := api.HeadNotificationsChannel("streaming-0-doesnotexist")
	if err == nil || resp.StatusCode != 404 {
		t.Errorf("head unknown: %v %v", err, resp)
	}
	_, resp, err = api.GetNotificationsChannelSubscriptions("streaming-0-doesnotexist")
	if err == nil || resp.StatusCode != 404 || resp.Error.Code != "not.found" {
		t.Errorf("subscriptions of unknown: %v %+v", err, resp)
	}
}

func TestSubscriptionRenewsChannel(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{ChannelLifetime: 400 * time.Millisecond})
	cfg := sdk(t, sim)
	ch := createChannel(t, cfg)
	created, _ := sim.Snapshot().Channel(*ch.Id)
	topic := queueTopic(sim, 0, "conversations")
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	if _, _, err := api.PostNotificationsChannelSubscriptions(*ch.Id, []platformclientv2.Channeltopic{{Id: &topic}}, false); err != nil {
		t.Fatal(err)
	}
	renewed, _ := sim.Snapshot().Channel(*ch.Id)
	if !renewed.Expires.After(created.Expires) {
		t.Errorf("subscribing did not extend the channel: %v -> %v", created.Expires, renewed.Expires)
	}
	// Left alone, the channel expires on its own.
	waitFor(t, sim, func(s simulator.Snapshot) bool { return len(s.Channels) == 0 })
	if resp, err := api.HeadNotificationsChannel(*ch.Id); err == nil || resp.StatusCode != 404 {
		t.Errorf("head after expiry: %v", err)
	}
}

func TestTopicValidationAndLimit(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Users: 600})
	cfg := sdk(t, sim)
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	ch := createChannel(t, cfg)
	topics := func(ts ...string) []platformclientv2.Channeltopic {
		out := make([]platformclientv2.Channeltopic, len(ts))
		for i := range ts {
			out[i] = platformclientv2.Channeltopic{Id: &ts[i]}
		}
		return out
	}

	good := queueTopic(sim, 0, "conversations")
	_, resp, err := api.PutNotificationsChannelSubscriptions(*ch.Id, topics(good, "v2.routing.queues.nope"), false)
	if err == nil || resp.StatusCode != 400 || resp.Error.Code != "bad.request" {
		t.Fatalf("invalid topic: %v %+v", err, resp)
	}
	got, _, err := api.PutNotificationsChannelSubscriptions(*ch.Id, topics(good, "v2.routing.queues.nope", "v2.users.x.y.z"), true)
	if err != nil || len(*got.Entities) != 3 || *(*got.Entities)[0].Id != good || *(*got.Entities)[0].State != "Permitted" {
		t.Fatalf("ignoreErrors: %v %v", err, got)
	}
	for _, e := range (*got.Entities)[1:] {
		if e.State == nil || *e.State != "Rejected" || e.RejectionReason == nil || *e.RejectionReason == "" {
			t.Fatalf("ignoreErrors: a skipped topic is not answered Rejected with a reason: %+v", e)
		}
	}

	// The combined form subscribes each individual topic.
	u := sim.Users()[0].ID
	got, _, err = api.PutNotificationsChannelSubscriptions(*ch.Id, topics("v2.users."+u+"?presence&routingStatus"), false)
	if err != nil || len(*got.Entities) != 2 {
		t.Fatalf("combined: %v %v", err, got)
	}
	info, _ := sim.Snapshot().Channel(*ch.Id)
	if want := []string{"v2.users." + u + ".presence", "v2.users." + u + ".routingStatus"}; fmt.Sprint(info.Topics) != fmt.Sprint(want) {
		t.Errorf("combined topics = %v, want %v", info.Topics, want)
	}

	// 1,000 topics fit; the call that would make 1,001 fails whole.
	var thousand []string
	for _, usr := range sim.Users()[:500] {
		thousand = append(thousand, "v2.users."+usr.ID+".presence", "v2.users."+usr.ID+".routingStatus")
	}
	if got, _, err = api.PutNotificationsChannelSubscriptions(*ch.Id, topics(thousand...), false); err != nil || len(*got.Entities) != 1000 {
		t.Fatalf("1000 topics: %v", err)
	}
	_, resp, err = api.PostNotificationsChannelSubscriptions(*ch.Id, topics(good), false)
	if err == nil || resp.StatusCode != 400 || !strings.Contains(resp.Error.Message, "1000") {
		t.Fatalf("1001st topic: %v %+v", err, resp)
	}
	if info, _ := sim.Snapshot().Channel(*ch.Id); len(info.Topics) != 1000 {
		t.Errorf("a failed call changed the subscriptions: %d topics", len(info.Topics))
	}
	// Re-adding a topic already there does not count twice.
	if _, _, err := api.PostNotificationsChannelSubscriptions(*ch.Id, topics(thousand[0]), false); err != nil {
		t.Errorf("re-adding a subscribed topic: %v", err)
	}
}

func TestChannelEviction(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfg := sdk(t, sim)
	var chans []platformclientv2.Channel
	for range 20 {
		chans = append(chans, createChannel(t, cfg))
	}
	// The oldest channel has a socket, so the 21st evicts the second oldest.
	c0 := dialConnected(t, sim, chans[0])
	chans = append(chans, createChannel(t, cfg))
	snap := sim.Snapshot()
	if len(snap.Channels) != 20 {
		t.Fatalf("%d channels, want 20", len(snap.Channels))
	}
	if _, ok := snap.Channel(*chans[1].Id); ok {
		t.Fatalf("channel 1 (oldest without a socket) was not evicted")
	}
	if _, ok := snap.Channel(*chans[0].Id); !ok {
		t.Fatalf("channel 0 (connected) was evicted")
	}
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	if resp, err := api.HeadNotificationsChannel(*chans[1].Id); err == nil || resp.StatusCode != 404 {
		t.Errorf("head evicted: %v", err)
	}

	// With every channel connected, the oldest goes, and its socket hears so.
	for _, ch := range chans[2:] {
		dialConnected(t, sim, ch)
	}
	createChannel(t, cfg)
	if f := c0.next(); f.Result != "404" || f.Message == "" {
		t.Fatalf("evicted socket got %s", f.raw)
	}
	if _, err := c0.read(); err == nil {
		t.Fatalf("evicted socket still open")
	}
	if _, ok := sim.Snapshot().Channel(*chans[0].Id); ok {
		t.Fatalf("oldest connected channel survived")
	}
	if st := sim.Stats(); st.ChannelsEvicted != 2 || st.ChannelsCreated != 22 {
		t.Errorf("stats: evicted %d created %d", st.ChannelsEvicted, st.ChannelsCreated)
	}
}

func TestPaging(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 60, Users: 130, Seed: 7})
	cfg := sdk(t, sim)
	routing := platformclientv2.NewRoutingApiWithConfig(cfg)
	var ids []string
	for page := 1; ; page++ {
		l, _, err := routing.GetRoutingQueues(page, 25, "", "", nil, nil, nil, "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if *l.Total != 60 || *l.PageCount != 3 || *l.PageSize != 25 || *l.PageNumber != page {
			t.Fatalf("page %d: total %d pageCount %d", page, *l.Total, *l.PageCount)
		}
		for _, q := range *l.Entities {
			ids = append(ids, *q.Id)
		}
		if l.NextUri == nil {
			break
		}
	}
	want := sim.Queues()
	if len(ids) != len(want) {
		t.Fatalf("paged %d queues, want %d", len(ids), len(want))
	}
	for i := range ids {
		if ids[i] != want[i].ID {
			t.Fatalf("queue %d = %s, want %s", i, ids[i], want[i].ID)
		}
	}
	// Ids are stable for a seed.
	again := simulator.Start(t, simulator.Options{Queues: 60, Users: 130, Seed: 7})
	if again.Queues()[59] != want[59] || again.Users()[0] != sim.Users()[0] {
		t.Errorf("same seed, different org")
	}
	// Filters.
	l, _, err := routing.GetRoutingQueues(0, 0, "", "", []string{want[3].ID, want[5].ID}, nil, nil, "", false, nil)
	if err != nil || *l.Total != 2 || *l.PageSize != 25 {
		t.Fatalf("id filter: %v %v", err, l)
	}
	l, _, err = routing.GetRoutingQueues(1, 100, "", want[4].Name, nil, nil, nil, "", false, nil)
	if err != nil || *l.Total != 1 || *(*l.Entities)[0].Id != want[4].ID {
		t.Fatalf("name filter: %v", err)
	}

	users := platformclientv2.NewUsersApiWithConfig(cfg)
	seen := 0
	for page := 1; page < 10; page++ {
		l, _, err := users.GetUsers(500, page, nil, nil, "", nil, "", "")
		if err != nil {
			t.Fatal(err)
		}
		seen += len(*l.Entities)
		if page == 1 && (*l.Total != 130 || *l.PageCount != 1 || l.NextUri != nil) {
			t.Fatalf("users page: %v", l.String())
		}
		if l.NextUri == nil {
			break
		}
	}
	if seen != 130 {
		t.Errorf("paged %d users, want 130", seen)
	}
	_, resp, err := users.GetUsers(501, 1, nil, nil, "", nil, "", "")
	if err == nil || resp.StatusCode != 400 {
		t.Errorf("pageSize 501: %v", err)
	}
}

func TestRequestStats(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfg := sdk(t, sim)
	createChannel(t, cfg, queueTopic(sim, 0, "conversations"))
	st := sim.Stats()
	for _, k := range []simulator.RequestKey{
		{Method: "POST", Route: simulator.RouteToken, Status: 200},
		{Method: "POST", Route: simulator.RouteChannels, Status: 200},
		{Method: "PUT", Route: simulator.RouteSubscriptions, Status: 200},
	} {
		if st.Requests[k] != 1 {
			t.Errorf("%v counted %d, want 1 (all: %v)", k, st.Requests[k], st.Requests)
		}
	}
}
