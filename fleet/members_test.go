package fleet

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestMembersListsLiveMembers(t *testing.T) {
	const ttl = time.Second
	srv := startJetStream(t)
	_, kv := openBucket(t, srv.ClientURL(), ttl)
	now := time.Now().UTC()
	for i, id := range []string{"app-7d9f-x2", "app-7d9f-k1"} {
		rec := Record{ID: id, Client: ClientKey("client-a"), Budget: 20, Config: "c1", Started: now.Add(time.Duration(i) * time.Second)}
		b, _ := json.Marshal(rec)
		if _, err := Acquire(t.Context(), kv, MemberKey(id), b, ttl); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Members(t.Context(), kv)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].ID != "app-7d9f-k1" || got[1].ID != "app-7d9f-x2" {
		t.Fatalf("members = %+v", got)
	}
	// Not renewed: both expire with the bucket's TTL.
	deadline := time.Now().Add(5 * ttl)
	for len(got) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("members still listed %v after their TTL", got)
		}
		time.Sleep(50 * time.Millisecond)
		if got, err = Members(t.Context(), kv); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckConfigFollowsTheOldestMember(t *testing.T) {
	t0 := time.Now()
	old := []Record{{ID: "a", Config: "old", Started: t0}, {ID: "b", Config: "old", Started: t0.Add(time.Second)}}
	self := Record{ID: "c", Config: "new", Started: t0.Add(time.Minute)}
	err := CheckConfig(self, append(old, self))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Fleet != "old" || len(ce.Members) != 2 {
		t.Fatalf("err = %v, want the fleet's config named with its 2 members", err)
	}
	if !strings.Contains(err.Error(), "GCNATS_TOPICS") {
		t.Errorf("the error names no setting: %v", err)
	}
	// The last old member gone: the new settings are the fleet's.
	if err := CheckConfig(self, []Record{self, {ID: "d", Config: "new", Started: t0.Add(2 * time.Minute)}}); err != nil {
		t.Fatalf("after the old members left: %v", err)
	}
	if ConfigHash([]string{"b", "a", "a"}, nil) != ConfigHash([]string{"a", "b"}, nil) {
		t.Error("ConfigHash depends on the topics' order")
	}
	if ClientKey("x") == ClientKey("y") || strings.Contains(ClientKey("secret-looking-id"), "secret") {
		t.Error("ClientKey must tell clients apart without naming them")
	}
}
