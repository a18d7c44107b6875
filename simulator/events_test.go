package simulator_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

// roundTrip decodes body into the SDK model T and marshals it back. The
// SDK models have their own UnmarshalJSON, which ignores unknown keys even
// under DisallowUnknownFields; so "nothing lost" is checked by comparing the
// re-marshalled model with the original body: any key the model does not
// know would be missing.
func roundTrip[T any](t *testing.T, body []byte) T {
	t.Helper()
	var m T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode into %T: %v\n%s", m, err, body)
	}
	again, err := json.Marshal(m)
	if err != nil {
		t.Fatalf("re-marshal %T: %v", m, err)
	}
	var a, b any
	_ = json.Unmarshal(body, &a)
	_ = json.Unmarshal(again, &b)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("%T loses data:\nsent %s\nkept %s", m, body, again)
	}
	return m
}

func TestEventBodiesAreSDKModels(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	q, u := sim.Queues()[3].ID, sim.Users()[4].ID
	conv := "5b9b8e1c-3c1e-4b43-9b1a-2f5e7c0d9a11"

	participants := map[int]bool{}
	for _, ev := range sim.EmitN(16, "v2.routing.queues."+q+".conversations") {
		c := roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, ev.Body)
		participants[len(*c.Participants)] = true
		var acd bool
		for _, p := range *c.Participants {
			acd = acd || (p.QueueId != nil && *p.QueueId == q && *p.Purpose == "acd")
		}
		if !acd {
			t.Fatalf("conversation has no acd participant for the topic's queue: %s", ev.Body)
		}
	}
	if len(participants) < 3 {
		t.Errorf("participant counts %v, want variety", participants)
	}
	for _, ev := range sim.EmitN(4, "v2.routing.queues."+q+".conversations.calls") {
		roundTrip[platformclientv2.Queueconversationcalleventtopiccallconversation](t, ev.Body)
	}
	for _, ev := range sim.EmitN(4, "v2.routing.queues."+q+".users") {
		m := roundTrip[platformclientv2.Queueusereventtopicqueuemember](t, ev.Body)
		if *m.QueueId != q || *m.User.Id == "" {
			t.Fatalf("queue member %s", ev.Body)
		}
	}
	seen := map[string]bool{}
	for _, ev := range sim.EmitN(5, "v2.users."+u+".presence") {
		p := roundTrip[platformclientv2.Presenceeventuserpresence](t, ev.Body)
		seen[*p.PresenceDefinition.SystemPresence] = true
	}
	if len(seen) != len(simulator.SystemPresences) {
		t.Errorf("presences %v", seen)
	}
	seen = map[string]bool{}
	for _, ev := range sim.EmitN(5, "v2.users."+u+".routingStatus") {
		r := roundTrip[platformclientv2.Userroutingstatususerroutingstatus](t, ev.Body)
		seen[*r.RoutingStatus.Status] = true
		if *r.Id != u {
			t.Fatalf("routing status of %s for topic user %s", *r.Id, u)
		}
	}
	if len(seen) != len(simulator.RoutingStatuses) {
		t.Errorf("routing statuses %v", seen)
	}
	for _, ev := range sim.EmitN(3, "v2.detail.events.conversation."+conv+".wrapup") {
		w := roundTrip[platformclientv2.Wrapupdetaileventtopicwrapupevent](t, ev.Body)
		if *w.ConversationId != conv || *w.WrapupCode == "" {
			t.Fatalf("wrapup %s", ev.Body)
		}
	}
	for _, ev := range sim.EmitN(4, "v2.users."+u+".conversations.calls") {
		c := roundTrip[platformclientv2.Conversationcalleventtopiccallconversation](t, ev.Body)
		var mine bool
		for _, p := range *c.Participants {
			mine = mine || (p.User != nil && *p.User.Id == u)
		}
		if !mine {
			t.Fatalf("user's call without the user: %s", ev.Body)
		}
	}
	for _, ev := range sim.EmitN(4, "v2.users."+u+".conversations") {
		roundTrip[platformclientv2.Conversationeventtopicconversation](t, ev.Body)
	}
	for _, ev := range sim.EmitN(2, "v2.detail.events.conversation."+conv+".acd.start") {
		a := roundTrip[platformclientv2.Acdstartdetaileventtopicacdstartevent](t, ev.Body)
		if *a.ConversationId != conv || a.EventTime == nil {
			t.Fatalf("acd start %s", ev.Body)
		}
	}
}

// Queue membership carries no timestamp, so its bodies repeat byte for byte
// as Genesys' do; only the correlation id tells two events apart.
func TestEventFramesRepeatBodiesNotCorrelationIDs(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	topic := "v2.routing.queues." + sim.Queues()[0].ID + ".users"
	evs := sim.EmitN(200, topic)
	bodies := map[string]int{}
	corrs := map[string]bool{}
	for i, ev := range evs {
		if ev.Seq != uint64(i+1) {
			t.Fatalf("seq %d at %d", ev.Seq, i)
		}
		if corrs[ev.CorrelationID] {
			t.Fatalf("event %d repeats a correlation id", ev.Seq)
		}
		bodies[string(ev.Body)]++
		corrs[ev.CorrelationID] = true
		var f struct {
			TopicName string          `json:"topicName"`
			Version   string          `json:"version"`
			EventBody json.RawMessage `json:"eventBody"`
			Metadata  struct {
				CorrelationID string `json:"CorrelationId"`
			} `json:"metadata"`
		}
		dec := json.NewDecoder(bytes.NewReader(ev.Frame))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&f); err != nil {
			t.Fatal(err)
		}
		if f.TopicName != topic || f.Version != "2" || !bytes.Equal(f.EventBody, ev.Body) || f.Metadata.CorrelationID != ev.CorrelationID {
			t.Fatalf("frame %s does not match its record", ev.Frame)
		}
	}
	if len(bodies) >= len(evs)/2 {
		t.Errorf("%d distinct bodies in %d membership events: the simulator is stamping bodies unique", len(bodies), len(evs))
	}
	var joined platformclientv2.Queueusereventtopicqueuemember
	if err := json.Unmarshal(evs[0].Body, &joined); err != nil || joined.Joined == nil || joined.AdditionalProperties != nil {
		t.Errorf("membership body %s: want id, user, queueId and joined only", evs[0].Body)
	}
}

func TestEmitBodyAndBodyOfSize(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{})
	q := sim.Queues()[0].ID
	topic := "v2.routing.queues." + q + ".conversations"
	big, err := sim.BodyOfSize(topic, 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(big) < 2<<20 || len(big) > 2<<20+8 {
		t.Fatalf("body of %d bytes, want 2 MiB", len(big))
	}
	roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, big)
	body := []byte(`{"id":"u1","joined":true}`)
	a, err := sim.EmitBody(topic, body)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := sim.EmitBody(topic, body)
	if !bytes.Equal(a.Body, body) || !bytes.Equal(b.Body, body) || a.CorrelationID == b.CorrelationID {
		t.Fatalf("EmitBody: %s / %s, correlation ids %s %s", a.Body, b.Body, a.CorrelationID, b.CorrelationID)
	}
	if _, err := sim.EmitBody(topic, []byte(`{"id":`)); err == nil {
		t.Fatal("EmitBody took a body that is not JSON")
	}
}

func TestBodyPadding(t *testing.T) {
	for _, size := range []int{512, 4096, 32768} {
		sim := simulator.Start(t, simulator.Options{BodyPadding: size})
		q := sim.Queues()[0].ID
		for _, topic := range []string{
			"v2.routing.queues." + q + ".conversations",
			"v2.routing.queues." + q + ".conversations.calls",
			"v2.routing.queues." + q + ".users",
			"v2.users." + sim.Users()[0].ID + ".presence",
		} {
			for _, ev := range sim.EmitN(4, topic) {
				// Padding only grows a body; one already larger stays as is.
				padded := bytes.Contains(ev.Body, []byte("Simulated padding"))
				if len(ev.Body) < size || (padded && len(ev.Body) > size+8) {
					t.Errorf("%s: body of %d bytes, want about %d", topic, len(ev.Body), size)
				}
			}
		}
		ev := sim.Emit("v2.routing.queues." + q + ".conversations")[0]
		roundTrip[platformclientv2.Queueconversationeventtopicconversation](t, ev.Body)
	}
}

func TestRecordLimit(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{RecordLimit: 10})
	topic := "v2.routing.queues." + sim.Queues()[0].ID + ".users"
	evs := sim.EmitN(35, topic)
	rec := sim.Events()
	if len(rec) < 10 || len(rec) >= 20 || rec[len(rec)-1].Seq != 35 {
		t.Fatalf("record holds %d events ending at %d", len(rec), rec[len(rec)-1].Seq)
	}
	if _, ok := sim.EventByCorrelationID(evs[34].CorrelationID); !ok {
		t.Error("newest event not found")
	}
	if _, ok := sim.EventByCorrelationID(evs[0].CorrelationID); ok {
		t.Error("oldest event still indexed")
	}
	if since := sim.EventsSince(33); len(since) != 2 || since[0].Seq != 34 {
		t.Errorf("EventsSince(33) = %d events", len(since))
	}
}
