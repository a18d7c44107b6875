package simulator_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"

	"github.com/gcnats/gcnats/simulator"
)

// TestAvailableTopics: the SDK's own call reads every topic of the SDK's
// notificationMappings.json as Genesys lists them, templates with {id}
// placeholders, and topicParameters when expanded; without a token it is
// refused as Genesys refuses it.
func TestAvailableTopics(t *testing.T) {
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 1})
	api := platformclientv2.NewNotificationsApiWithConfig(sdk(t, sim))
	listing, resp, err := api.GetNotificationsAvailabletopics([]string{"topicParameters"}, true)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("availabletopics: %v (%v)", err, resp)
	}
	var ids []string
	for _, e := range *listing.Entities {
		ids = append(ids, *e.Id)
		if *e.Id == "v2.users.{id}.presence" && (e.TopicParameters == nil || !slices.Equal(*e.TopicParameters, []string{"id"})) {
			t.Errorf("v2.users.{id}.presence: topicParameters %v", e.TopicParameters)
		}
	}
	want := simulator.TopicPatterns()
	slices.Sort(ids)
	slices.Sort(want)
	if !slices.Equal(ids, want) || !slices.Contains(ids, "v2.routing.queues.{id}.conversations") {
		t.Fatalf("%d topics listed, want the %d of notificationMappings.json", len(ids), len(want))
	}

	status, _, _ := call(t, http.MethodGet, sim.URL()+simulator.RouteTopics, "", nil)
	if status != http.StatusUnauthorized {
		t.Fatalf("without a token: %d", status)
	}
}
