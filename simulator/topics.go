package simulator

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

//go:generate go run gen_models.go

// notificationMappings is a copy of the file at the root of
// github.com/mypurecloud/platform-client-sdk-go/v162@v162.0.0. Embedding it
// keeps topic validation in step with the SDK the connector is built against.
//
//go:embed notificationMappings.json
var notificationMappings []byte

// topicPattern is one notificationMappings.json entry.
type topicPattern struct {
	Pattern string       // e.g. "v2.routing.queues.{id}.conversations"
	Class   string       // e.g. "QueueConversationEventTopicConversation"
	Model   reflect.Type // the SDK struct type for Class
}

// topicNode is a trie over dot-separated topic segments; "{id}" segments go to
// the id child so that a lookup is one walk however many patterns exist.
type topicNode struct {
	literal map[string]*topicNode
	id      *topicNode
	pattern *topicPattern
}

// catalog is the parsed, immutable topic set shared by all servers.
type catalog struct {
	root     *topicNode
	patterns []*topicPattern
}

var topics = mustLoadCatalog(notificationMappings)

func mustLoadCatalog(raw []byte) *catalog {
	c, err := loadCatalog(raw)
	if err != nil {
		// The file is embedded at build time, so this is a build defect.
		panic(err)
	}
	return c
}

func loadCatalog(raw []byte) (*catalog, error) {
	var m struct {
		Notifications []struct {
			Topic string `json:"topic"`
			Class string `json:"class"`
		} `json:"notifications"`
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("parse notification mappings: %w", err)
	}
	c := &catalog{root: &topicNode{}}
	for _, n := range m.Notifications {
		t, ok := topicModels[n.Class]
		if !ok {
			return nil, fmt.Errorf("notification mappings: class %s has no SDK model (run go generate)", n.Class)
		}
		p := &topicPattern{Pattern: n.Topic, Class: n.Class, Model: t}
		c.patterns = append(c.patterns, p)
		node := c.root
		for seg := range strings.SplitSeq(n.Topic, ".") {
			if seg == "{id}" {
				if node.id == nil {
					node.id = &topicNode{}
				}
				node = node.id
				continue
			}
			if node.literal == nil {
				node.literal = map[string]*topicNode{}
			}
			next := node.literal[seg]
			if next == nil {
				next = &topicNode{}
				node.literal[seg] = next
			}
			node = next
		}
		node.pattern = p
	}
	return c, nil
}

// match returns the pattern a concrete topic belongs to and the values of its
// {id} segments. Literal segments win over ids, with backtracking, so
// "v2.system.socket_closing" is not taken for "v2.system.{id}.{id}".
func (c *catalog) match(topic string) (*topicPattern, []string) {
	if topic == "" || len(topic) > 512 {
		return nil, nil
	}
	segs := strings.Split(topic, ".")
	var ids []string
	var walk func(n *topicNode, i int) *topicPattern
	walk = func(n *topicNode, i int) *topicPattern {
		if i == len(segs) {
			return n.pattern
		}
		if next := n.literal[segs[i]]; next != nil {
			if p := walk(next, i+1); p != nil {
				return p
			}
		}
		if n.id != nil && isIDToken(segs[i]) {
			ids = append(ids, segs[i])
			if p := walk(n.id, i+1); p != nil {
				return p
			}
			ids = ids[:len(ids)-1]
		}
		return nil
	}
	p := walk(c.root, 0)
	if p == nil {
		return nil, nil
	}
	return p, ids
}

// isIDToken accepts what Genesys uses in the id position: UUIDs, and for a
// few families other opaque tokens, but never an empty or dotted string.
func isIDToken(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return true
}

// expandTopic turns a subscription entry into individual topics. Genesys
// accepts "v2.users.{id}?presence&routingStatus" as shorthand for
// "v2.users.{id}.presence" and "v2.users.{id}.routingStatus".
func expandTopic(entry string) []string {
	base, suffixes, ok := strings.Cut(entry, "?")
	if !ok {
		return []string{entry}
	}
	var out []string
	for s := range strings.SplitSeq(suffixes, "&") {
		out = append(out, base+"."+s)
	}
	return out
}

// validTopic reports whether a concrete topic is one the SDK knows.
func validTopic(topic string) bool {
	p, _ := topics.match(topic)
	return p != nil
}

// TopicPatterns returns the topic patterns the simulator accepts, as listed in
// the SDK's notificationMappings.json (e.g. "v2.routing.queues.{id}.users").
func TopicPatterns() []string {
	out := make([]string, len(topics.patterns))
	for i, p := range topics.patterns {
		out[i] = p.Pattern
	}
	return out
}

// ValidTopic reports whether Genesys would accept topic in a subscription:
// it matches a notificationMappings.json pattern with an id in each {id}.
func ValidTopic(topic string) bool { return validTopic(topic) }

// handleAvailableTopics answers GET /api/v2/notifications/availabletopics
// with the SDK's topics, in the SDK's own listing type. Genesys returns
// each topic's id (a template such as v2.users.{id}.presence) and, when
// expand names it, topicParameters; descriptions, schemas and permissions
// are not in the SDK's mappings, so they are left out even when asked for.
func handleAvailableTopics(w http.ResponseWriter, r *http.Request) {
	var expand []string
	for _, v := range r.URL.Query()["expand"] {
		expand = append(expand, strings.Split(v, ",")...)
	}
	withParams := slices.Contains(expand, "topicParameters")
	entities := make([]platformclientv2.Availabletopic, len(topics.patterns))
	for i, p := range topics.patterns {
		entities[i].Id = &p.Pattern
		if withParams {
			params := topicParameters(p.Pattern)
			entities[i].TopicParameters = &params
		}
	}
	writeJSON(w, http.StatusOK, platformclientv2.Availabletopicentitylisting{Entities: &entities})
}

// topicParameters names a template's placeholders: v2.users.{id}.presence
// has one, id.
func topicParameters(pattern string) []string {
	var out []string
	for seg := range strings.SplitSeq(pattern, ".") {
		if name, ok := strings.CutPrefix(seg, "{"); ok {
			out = append(out, strings.TrimSuffix(name, "}"))
		}
	}
	return out
}
