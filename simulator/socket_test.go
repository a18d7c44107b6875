package simulator_test

import (
	"bytes"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

func TestHeartbeatAndPing(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{HeartbeatInterval: 30 * time.Millisecond})
	ch := createChannel(t, sdk(t, sim))
	c := dialConnected(t, sim, ch)
	for range 2 {
		f := c.mustRead()
		if string(f.raw) != `{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}` {
			t.Fatalf("want a heartbeat, got %s", f.raw)
		}
	}
	c.send(map[string]string{"message": "ping"})
	if f := c.next(); string(f.raw) != `{"topicName":"channel.metadata","eventBody":{"message":"pong"}}` {
		t.Fatalf("want a pong, got %s", f.raw)
	}
	if st := sim.Stats(); st.PingsAnswered != 1 || st.Heartbeats < 2 {
		t.Errorf("stats: pings %d heartbeats %d", st.PingsAnswered, st.Heartbeats)
	}
	if len(sim.Events()) != 0 {
		t.Errorf("control frames were recorded as events")
	}
}

// TestPongDelay: with SetPongDelay, the answer to a ping comes that much
// later, behind the events written meanwhile.
func TestPongDelay(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	const delay = 300 * time.Millisecond
	sim.SetPongDelay(delay)
	sent := time.Now()
	c.send(map[string]string{"message": "ping"})
	evs := sim.Emit(topic)
	if f := c.next(); !bytes.Equal(f.raw, evs[0].Frame) {
		t.Fatalf("want the event ahead of the pong, got %s", f.raw)
	}
	if f := c.next(); f.TopicName != "channel.metadata" || !strings.Contains(string(f.EventBody), "pong") {
		t.Fatalf("want the pong, got %s", f.raw)
	}
	if waited := time.Since(sent); waited < delay {
		t.Fatalf("the pong came after %s, before the delay of %s", waited, delay)
	}
	if st := sim.Stats(); st.PingsAnswered != 1 {
		t.Fatalf("pings answered: %d", st.PingsAnswered)
	}
}

func TestSocketSubscribe(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	ch := createChannel(t, sdk(t, sim))
	c := dialConnected(t, sim, ch)
	u := sim.Users()[2].ID
	c.send(map[string]any{"message": "subscribe", "topics": []string{"v2.users." + u + "?presence&routingStatus"}, "correlationId": "abc"})
	f := c.next()
	if f.CorrelationID != "abc" || f.Result != "200" || f.Status != "subscribed" || len(f.Topics) != 2 {
		t.Fatalf("subscribe answer: %s", f.raw)
	}
	c.send(map[string]any{"message": "subscribe", "topics": []string{"v2.nonsense"}, "correlationId": "def"})
	if f := c.next(); f.Result != "400" || f.Status != "error" || f.Message == "" {
		t.Fatalf("bad subscribe answer: %s", f.raw)
	}
	evs := sim.Emit()
	if len(evs) != 2 {
		t.Fatalf("emitted %d events for the socket's 2 topics", len(evs))
	}
	for _, ev := range evs {
		if f := c.next(); !bytes.Equal(f.raw, ev.Frame) || ev.Delivered != 1 {
			t.Fatalf("got %s, want %s (delivered %d)", f.raw, ev.Frame, ev.Delivered)
		}
	}
}

func TestOneSocketPerChannel(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	first := dialConnected(t, sim, ch)
	second := dialConnected(t, sim, ch)
	_, err := first.read()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) {
		t.Fatalf("first socket: %v, want a close", err)
	}
	ev := sim.Emit(topic)[0]
	if ev.Delivered != 1 {
		t.Fatalf("delivered %d, want 1", ev.Delivered)
	}
	if f := second.next(); !bytes.Equal(f.raw, ev.Frame) {
		t.Fatalf("second socket got %s", f.raw)
	}
	if info, _ := sim.Snapshot().Channel(*ch.Id); info.Connects != 2 || !info.Connected {
		t.Errorf("channel info %+v", info)
	}
}

func TestDialUnknownChannel(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	c := dial(t, strings.Replace(sim.URL(), "http", "ws", 1)+"/channels/streaming-0-gone")
	if f := c.mustRead(); f.Result != "404" || f.Message == "" {
		t.Fatalf("got %s, want a 404 frame", f.raw)
	}
	if _, err := c.read(); !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
		t.Fatalf("then %v, want a normal close", err)
	}
}

// TestDeliveryToOverlappingChannels is what lets a sidecar overlap two
// channels and deduplicate: one event, identical bytes on both sockets.
func TestDeliveryToOverlappingChannels(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfg := sdk(t, sim)
	topic := queueTopic(sim, 1, "conversations")
	a, b := createChannel(t, cfg, topic), createChannel(t, cfg, topic)

	// Nobody connected: generated, but nobody could have received it.
	if ev := sim.Emit(topic)[0]; ev.Delivered != 0 {
		t.Fatalf("delivered %d with no socket", ev.Delivered)
	}
	ca := dialConnected(t, sim, a)
	if ev := sim.Emit(topic)[0]; ev.Delivered != 1 {
		t.Fatalf("delivered %d with one socket", ev.Delivered)
	}
	ca.next()
	cb := dialConnected(t, sim, b)
	ev := sim.Emit(topic)[0]
	if ev.Delivered != 2 {
		t.Fatalf("delivered %d with two sockets", ev.Delivered)
	}
	fa, fb := ca.next(), cb.next()
	if !bytes.Equal(fa.raw, fb.raw) || !bytes.Equal(fa.raw, ev.Frame) || !bytes.Equal(fa.EventBody, ev.Body) {
		t.Fatalf("frames differ:\n%s\n%s", fa.raw, fb.raw)
	}
	corr, _ := fa.Metadata["CorrelationId"].(string)
	got, ok := sim.EventByCorrelationID(corr)
	if !ok || got.Seq != ev.Seq || got.Seq != 3 {
		t.Fatalf("by correlation id: %+v %v", got, ok)
	}
	if all := sim.Events(); len(all) != 3 || all[0].Seq != 1 || all[0].Delivered != 0 {
		t.Fatalf("record: %+v", all)
	}
	if st := sim.Stats(); st.Events != 3 || st.Deliveries != 3 {
		t.Errorf("stats: events %d deliveries %d", st.Events, st.Deliveries)
	}
}

func TestEventInterval(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{EventInterval: 10 * time.Millisecond})
	topic := queueTopic(sim, 0, "users")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	var got []frame
	for len(got) < 3 {
		if f := c.next(); f.TopicName == topic {
			got = append(got, f)
		}
	}
	for _, f := range got {
		corr, _ := f.Metadata["CorrelationId"].(string)
		ev, ok := sim.EventByCorrelationID(corr)
		if !ok || !bytes.Equal(ev.Frame, f.raw) || ev.Delivered != 1 {
			t.Fatalf("frame %s not in the record as delivered", f.raw)
		}
	}
}

func TestWaitSeesEvents(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	done := make(chan error, 1)
	go func() {
		done <- sim.Wait(ctxT(t), func(s simulator.Snapshot) bool { return s.LastSeq >= 5 })
	}()
	sim.EmitN(5, queueTopic(sim, 0, "conversations"))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRESTFaults(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfg := sdk(t, sim)
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	routing := platformclientv2.NewRoutingApiWithConfig(cfg)

	// 429 and 5xx: the SDK's retrying HTTP client gives up (RetryMax 0)
	// and hands back no response at all, so the shape is checked raw.
	sim.AddFault(simulator.Fault{Method: "POST", Path: simulator.RouteChannels, Status: 429, RetryAfter: 3 * time.Second, Times: 2})
	if _, resp, err := api.PostNotificationsChannels(); err == nil || resp != nil {
		t.Fatalf("429 through the SDK: %v %+v", err, resp)
	}
	st, h, m := call(t, "POST", sim.URL()+simulator.RouteChannels, cfg.AccessToken, nil)
	if st != 429 || h.Get("Retry-After") != "3" || m["code"] != "too.many.requests" || m["status"] != 429.0 {
		t.Fatalf("429: %d %v %v", st, h, m)
	}
	if _, _, err := api.PostNotificationsChannels(); err != nil {
		t.Fatalf("after the fault: %v", err)
	}

	sim.AddFault(simulator.Fault{Path: simulator.RouteQueues, Status: 403, Permission: "routing:queue:view"})
	_, resp, err := routing.GetRoutingQueues(1, 25, "", "", nil, nil, nil, "", false, nil)
	if err == nil || resp.StatusCode != 403 || resp.Error.Code != "missing.permissions" || !strings.Contains(resp.Error.Message, "routing:queue:view") {
		t.Fatalf("403: %v %+v", err, resp)
	}

	sim.FailNext("", "/api/v2/", 503, 1)
	if st, _, m := call(t, "GET", sim.URL()+simulator.RouteQueues, cfg.AccessToken, nil); st != 503 || m["code"] != "service.unavailable" {
		t.Fatalf("503: %d %v", st, m)
	}

	sim.FailNext("HEAD", "/api/v2/notifications/channels/", 404, 1)
	if resp, err := api.HeadNotificationsChannel("streaming-0-any"); err == nil || resp.StatusCode != 404 {
		t.Fatalf("head 404: %v", err)
	}

	sim.FailNext("POST", "/oauth/token", 401, 1)
	if err := sdkUnauthorized(sim).AuthorizeClientCredentials(sim.ClientID(), sim.ClientSecret()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Fatalf("oauth 401: %v", err)
	}

	sim.AddFault(simulator.Fault{Path: simulator.RouteUsers, Status: 500, Times: -1})
	for range 3 {
		if st, _, m := call(t, "GET", sim.URL()+simulator.RouteUsers, cfg.AccessToken, nil); st != 500 || m["code"] != "internal.server.error" {
			t.Fatalf("persistent 500: %d %v", st, m)
		}
	}
	sim.ClearFaults()
	users := platformclientv2.NewUsersApiWithConfig(cfg)
	if _, _, err := users.GetUsers(25, 1, nil, nil, "", nil, "", ""); err != nil {
		t.Fatalf("after ClearFaults: %v", err)
	}
	if st := sim.Stats(); st.FaultsServed != 9 {
		t.Errorf("faults served %d, want 9", st.FaultsServed)
	}
}

func TestFaultCloseSocket(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	ev := sim.Emit(topic)[0]
	if err := sim.CloseSocket(*ch.Id); err != nil {
		t.Fatal(err)
	}
	// What was written before the drop still arrives, then the stream ends
	// with no close frame.
	if f := c.next(); !bytes.Equal(f.raw, ev.Frame) {
		t.Fatalf("got %s", f.raw)
	}
	_, err := c.read()
	if !websocket.IsCloseError(err, websocket.CloseAbnormalClosure) {
		t.Fatalf("read after drop: %v, want an abnormal closure (1006)", err)
	}
	if ev := sim.Emit(topic)[0]; ev.Delivered != 0 {
		t.Fatalf("delivered %d to a dropped socket", ev.Delivered)
	}
	// The channel lives on; a reconnect keeps the subscriptions.
	c2 := dialConnected(t, sim, ch)
	ev = sim.Emit(topic)[0]
	if f := c2.next(); ev.Delivered != 1 || !bytes.Equal(f.raw, ev.Frame) {
		t.Fatalf("after reconnect: delivered %d, got %s", ev.Delivered, f.raw)
	}
	if err := sim.CloseSocket("streaming-0-unknown"); !errors.Is(err, simulator.ErrNoChannel) {
		t.Errorf("unknown channel: %v", err)
	}
}

func TestFaultStallSocket(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{HeartbeatInterval: 20 * time.Millisecond})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	c.mustRead() // a heartbeat: the socket is live
	if err := sim.StallSocket(*ch.Id); err != nil {
		t.Fatal(err)
	}
	beats := sim.Stats().Heartbeats
	ev := sim.Emit(topic)[0]
	if ev.Delivered != 0 {
		t.Fatalf("delivered %d to a stalled socket", ev.Delivered)
	}
	c.send(map[string]string{"message": "ping"})
	// Nothing more arrives: drain what was in flight before the stall (at
	// most heartbeats), then expect silence over several heartbeat periods.
	_ = c.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	for {
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			var ne interface{ Timeout() bool }
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("stalled socket: %v, want a read timeout", err)
			}
			break
		}
		if !strings.Contains(string(data), "Heartbeat") {
			t.Fatalf("stalled socket wrote %s", data)
		}
	}
	if st := sim.Stats(); st.Heartbeats != beats || st.PingsAnswered != 0 {
		t.Errorf("stalled socket kept being written: heartbeats %d -> %d, pongs %d", beats, st.Heartbeats, st.PingsAnswered)
	}
	if info, _ := sim.Snapshot().Channel(*ch.Id); !info.Stalled || !info.Connected {
		t.Errorf("info %+v", info)
	}
	// The client gives up and closes; the channel is free again.
	c.conn.Close()
	waitFor(t, sim, func(s simulator.Snapshot) bool { return s.Sockets == 0 })
	c2 := dialConnected(t, sim, ch)
	if f := c2.mustRead(); !strings.Contains(string(f.raw), "Heartbeat") {
		t.Fatalf("new socket got %s", f.raw)
	}
}

func TestFaultClosingWarning(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	c := dialConnected(t, sim, ch)
	const closeAfter = 300 * time.Millisecond
	warned := time.Now()
	if err := sim.SendClosingWarning(*ch.Id, closeAfter); err != nil {
		t.Fatal(err)
	}
	if f := c.next(); string(f.raw) != `{"topicName":"v2.system.socket_closing","eventBody":{"message":"Socket closing"}}` {
		t.Fatalf("got %s", f.raw)
	}
	// The socket still carries events until it closes.
	if ev := sim.Emit(topic)[0]; ev.Delivered == 1 {
		if f := c.next(); !bytes.Equal(f.raw, ev.Frame) {
			t.Fatalf("after warning: %s", f.raw)
		}
	} else if time.Since(warned) < closeAfter {
		t.Fatalf("event not delivered %v after the warning", time.Since(warned))
	}
	if _, err := c.read(); !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("want close 1001, got %v", err)
	}
	if d := time.Since(warned); d < closeAfter {
		t.Fatalf("closed %v after the warning, want %v", d, closeAfter)
	}
	if _, ok := sim.Snapshot().Channel(*ch.Id); !ok {
		t.Fatal("channel died with its socket")
	}
}

func TestFaultExpireChannel(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfg := sdk(t, sim)
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, cfg, topic)
	c := dialConnected(t, sim, ch)
	if err := sim.ExpireChannel(*ch.Id); err != nil {
		t.Fatal(err)
	}
	if f := c.next(); f.Result != "404" || f.Message == "" {
		t.Fatalf("got %s", f.raw)
	}
	if _, err := c.read(); err == nil {
		t.Fatal("socket of an expired channel still open")
	}
	api := platformclientv2.NewNotificationsApiWithConfig(cfg)
	if resp, err := api.HeadNotificationsChannel(*ch.Id); err == nil || resp.StatusCode != 404 {
		t.Errorf("head: %v", err)
	}
	if _, resp, err := api.PostNotificationsChannelSubscriptions(*ch.Id, []platformclientv2.Channeltopic{{Id: &topic}}, false); err == nil || resp.StatusCode != 404 {
		t.Errorf("subscribe: %v", err)
	}
	if ev := sim.Emit(topic)[0]; ev.Delivered != 0 {
		t.Errorf("delivered %d to an expired channel", ev.Delivered)
	}
	// A re-dial of the dead channel is told so too.
	c2 := dial(t, *ch.ConnectUri)
	if f := c2.mustRead(); f.Result != "404" {
		t.Fatalf("re-dial got %s", f.raw)
	}
}

func TestFaultEvictChannel(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	ch := createChannel(t, sdk(t, sim))
	c := dialConnected(t, sim, ch)
	if err := sim.EvictChannel(*ch.Id); err != nil {
		t.Fatal(err)
	}
	if f := c.next(); f.Result != "404" {
		t.Fatalf("got %s", f.raw)
	}
	if len(sim.Channels()) != 0 {
		t.Fatal("evicted channel still listed")
	}
}

func TestFaultExpireToken(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	cfgA, cfgB := sdk(t, sim), sdk(t, sim)
	a, b := createChannel(t, cfgA), createChannel(t, cfgB)
	ca := dialConnected(t, sim, a)
	if err := sim.ExpireToken(cfgA.AccessToken); err != nil {
		t.Fatal(err)
	}
	if f := ca.next(); f.Result != "404" {
		t.Fatalf("got %s", f.raw)
	}
	snap := sim.Snapshot()
	if _, ok := snap.Channel(*a.Id); ok {
		t.Fatal("channel outlived its token")
	}
	if info, ok := snap.Channel(*b.Id); !ok || info.Token != cfgB.AccessToken {
		t.Fatal("another token's channel died")
	}
	_, resp, err := platformclientv2.NewNotificationsApiWithConfig(cfgA).PostNotificationsChannels()
	if err == nil || resp.StatusCode != 401 {
		t.Fatalf("expired token still works: %v", err)
	}
	sim.ExpireTokens()
	if s := sim.Snapshot(); s.Tokens != 0 || len(s.Channels) != 0 {
		t.Fatalf("after ExpireTokens: %+v", s)
	}
	if err := sim.ExpireToken("nope"); !errors.Is(err, simulator.ErrNoToken) {
		t.Errorf("unknown token: %v", err)
	}
}

func TestFaultRefuseDials(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	ch := createChannel(t, sdk(t, sim))
	sim.SetRefuseDials(true)
	_, resp, err := websocket.DefaultDialer.Dial(*ch.ConnectUri, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("refused dial: %v", err)
	}
	sim.SetRefuseDials(false)
	dialConnected(t, sim, ch)
	sim.RefuseDials(time.Hour)
	if _, _, err := websocket.DefaultDialer.Dial(*ch.ConnectUri, nil); err == nil {
		t.Fatal("dial during RefuseDials succeeded")
	}
	if st := sim.Stats(); st.DialsRefused != 2 || st.Requests[simulator.RequestKey{Method: "GET", Route: simulator.RouteSocket, Status: 101}] != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestNothingDeliveredAfterTheServersCloseFrame: a client's close frame is
// answered with the server's, and no frame follows that one (RFC 6455), so
// every event that counts as delivered to the socket is one the client read
// before the server's close frame: a client stops reading there.
func TestNothingDeliveredAfterTheServersCloseFrame(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := queueTopic(sim, 0, "conversations")
	ch := createChannel(t, sdk(t, sim), topic)
	for range 20 { // the close handshake races the emitter: try it often
		c := dialConnected(t, sim, ch)
		stop := make(chan struct{})
		emitted := make(chan []simulator.Event)
		go func() {
			var all []simulator.Event
			for {
				select {
				case <-stop:
					emitted <- all
					return
				default:
					all = append(all, sim.Emit(topic)...)
				}
			}
		}()
		read := map[string]bool{}
		first := c.next() // the emitter is writing
		read[first.Metadata["CorrelationId"].(string)] = true
		if err := c.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		for {
			f, err := c.read()
			if err != nil {
				if !websocket.IsCloseError(err, websocket.CloseNormalClosure) {
					t.Fatalf("read: %v, want the server's close frame", err)
				}
				break
			}
			if id, ok := f.Metadata["CorrelationId"].(string); ok {
				read[id] = true
			}
		}
		waitFor(t, sim, func(s simulator.Snapshot) bool { info, _ := s.Channel(*ch.Id); return !info.Connected })
		close(stop)
		for _, ev := range <-emitted {
			if got, _ := sim.EventBySeq(ev.Seq); got.Delivered > 0 && !read[ev.CorrelationID] {
				t.Fatalf("event %d counts as delivered but came after the server's close frame", ev.Seq)
			}
		}
	}
}
