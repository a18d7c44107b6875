package simulator

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestCatalogMatchesEmbeddedMappings(t *testing.T) {
	if len(topics.patterns) != 206 {
		t.Fatalf("%d patterns, want the SDK's 206", len(topics.patterns))
	}
	cases := map[string]string{
		"v2.routing.queues.8f0c2f4e-1b1a-4a53-9f61-6a0c6e0a1b2c.conversations":       "QueueConversationEventTopicConversation",
		"v2.routing.queues.8f0c2f4e-1b1a-4a53-9f61-6a0c6e0a1b2c.conversations.calls": "QueueConversationCallEventTopicCallConversation",
		"v2.users.abc.routingStatus":                                      "UserRoutingStatusUserRoutingStatus",
		"v2.system.socket_closing":                                        "SystemMessageSystemMessage",
		"v2.system.a.b":                                                   "SystemMessageSystemMessage",
		"v2.users.u1.conversations.c1.recordings.r1":                      "RecordingTranscodeCompleteTopicRecording",
		"v2.detail.events.conversation.c-1.wrapup":                        "WrapupDetailEventTopicWrapupEvent",
		"v2.outbound.settings":                                            "DialerOutboundSettingsConfigChangeOutboundSettings",
		"v2.workforcemanagement.businessunits.b1.shorttermforecasts.copy": "WfmBuShortTermForecastCopyCompleteTopicBuShortTermForecastNotification",
	}
	for topic, class := range cases {
		p, _ := topics.match(topic)
		if p == nil || p.Class != class {
			t.Errorf("%s matched %v, want %s", topic, p, class)
		}
	}
	for _, bad := range []string{"", "v2", "v2.routing.queues", "v2.routing.queues..conversations",
		"v2.routing.queues.a.b.conversations", "v2.routing.queues.a b.conversations", "v2.users.x.presence.extra", "v2.Users.x.presence"} {
		if validTopic(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
	if got := expandTopic("v2.users.u?presence&routingStatus"); strings.Join(got, ",") != "v2.users.u.presence,v2.users.u.routingStatus" {
		t.Errorf("expand = %v", got)
	}
}

// TestEveryTopicModel generates two events for a concrete topic of every
// pattern and checks that each body decodes into the topic's SDK model
// without losing a key. Two bodies may be equal: many models carry no
// timestamp, and Genesys repeats those bytes.
func TestEveryTopicModel(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, p := range topics.patterns {
		topic := p.Pattern
		for i := 0; strings.Contains(topic, "{id}"); i++ {
			id := newUUID()
			if i == 0 && strings.Contains(topic, ".queues.{id}") {
				id = s.org.Load().queues[0].ID
			}
			if i == 0 && strings.HasPrefix(topic, "v2.users.{id}") {
				id = s.org.Load().users[0].ID
			}
			topic = strings.Replace(topic, "{id}", id, 1)
		}
		a, err := s.gen.body(topic)
		if err != nil {
			t.Fatalf("%s: %v", topic, err)
		}
		if len(a) <= 2 {
			t.Errorf("%s: empty body", p.Pattern)
		}
		m := reflect.New(p.Model)
		if err := json.Unmarshal(a, m.Interface()); err != nil {
			t.Fatalf("%s: decode into %s: %v", p.Pattern, p.Model, err)
		}
		again, _ := json.Marshal(m.Interface())
		var x, y any
		_ = json.Unmarshal(a, &x)
		_ = json.Unmarshal(again, &y)
		if !reflect.DeepEqual(x, y) {
			t.Errorf("%s: %s loses data:\nsent %s\nkept %s", p.Pattern, p.Model, a, again)
		}
	}
}
