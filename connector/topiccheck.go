package connector

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/mypurecloud/platform-client-sdk-go/v162/platformclientv2"
)

// UnknownTopicError is a configured topic that is none of the topics
// Genesys offers (GET /api/v2/notifications/availabletopics).
type UnknownTopicError struct {
	Topic   string // as configured, e.g. v2.users.*.presense
	Nearest string // the nearest offered topic in the same form, e.g. v2.users.*.presence; empty if none is near
}

func (e *UnknownTopicError) Error() string {
	msg := fmt.Sprintf("GCNATS_TOPICS: %q is not a topic Genesys offers", e.Topic)
	if e.Nearest != "" {
		msg += fmt.Sprintf("; did you mean %q?", e.Nearest)
	}
	return msg + " (GET /api/v2/notifications/availabletopics lists them)"
}

// availableTopics lists the topic templates Genesys offers this client,
// e.g. v2.users.{id}.presence; preview topics included, since a preview
// topic can be subscribed.
func (a *api) availableTopics(ctx context.Context) ([]string, error) {
	var listing *platformclientv2.Availabletopicentitylisting
	err := a.call(ctx, "list available topics", func(cfg *platformclientv2.Configuration) (*platformclientv2.APIResponse, error) {
		var resp *platformclientv2.APIResponse
		var err error
		listing, resp, err = platformclientv2.NewNotificationsApiWithConfig(cfg).GetNotificationsAvailabletopics(nil, true)
		return resp, err
	})
	if err != nil {
		return nil, err
	}
	var out []string
	if listing != nil && listing.Entities != nil {
		for _, t := range *listing.Entities {
			if t.Id != nil && *t.Id != "" {
				out = append(out, *t.Id)
			}
		}
	}
	return out, nil
}

// checkTopics compares each configured topic with the templates Genesys
// offers, before any channel is made, so a misspelt topic is named with
// its nearest valid one instead of failing the first subscription. When
// the list cannot be had, the topics go unchecked here (with a warning):
// Genesys still refuses a bad one when it is subscribed.
func (c *Connector) checkTopics(ctx context.Context) error {
	templates, err := c.api.availableTopics(ctx)
	if err != nil {
		if ctx.Err() != nil || IsStatus(err, 401) {
			return err
		}
		c.log.Warn("cannot list the topics Genesys offers; topics are checked when subscribed", "err", err)
		return nil
	}
	if len(templates) == 0 {
		c.log.Warn("Genesys listed no available topics; topics are checked when subscribed")
		return nil
	}
	set := newTopicTemplates(templates)
	var errs []error
	for _, t := range c.opts.Topics {
		if err := set.check(t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// topicTemplates are Genesys' topic ids split into tokens; a token in
// braces ({id}, {queueId}) stands for an entity id.
type topicTemplates struct {
	all [][]string
}

func newTopicTemplates(ids []string) *topicTemplates {
	t := &topicTemplates{all: make([][]string, 0, len(ids))}
	for _, id := range ids {
		t.all = append(t.all, strings.Split(id, "."))
	}
	return t
}

func isPlaceholder(token string) bool {
	return len(token) > 2 && token[0] == '{' && token[len(token)-1] == '}'
}

// matches reports whether a configured topic's tokens fit a template: the
// same literal tokens, and an id ('*' or a real one) for each placeholder.
func matches(tokens, template []string) bool {
	if len(tokens) != len(template) {
		return false
	}
	for i, tok := range tokens {
		if isPlaceholder(template[i]) {
			if tok == "" || strings.ContainsAny(tok, "{}") {
				return false
			}
			continue
		}
		if tok != template[i] {
			return false
		}
	}
	return true
}

// check returns an *UnknownTopicError for a topic no template fits. The
// combined form v2.users.{id}?presence&routingStatus is checked topic by
// topic.
func (t *topicTemplates) check(entry string) error {
	for _, topic := range expandSubscription(entry) {
		tokens := strings.Split(topic, ".")
		found := false
		for _, tmpl := range t.all {
			if matches(tokens, tmpl) {
				found = true
				break
			}
		}
		if !found {
			return &UnknownTopicError{Topic: topic, Nearest: t.nearest(tokens)}
		}
	}
	return nil
}

// nearest is the template closest to tokens by edit distance, written in
// the form of the configured topic (its ids or '*' in the placeholders);
// empty when nothing is close enough to be a likely misspelling.
func (t *topicTemplates) nearest(tokens []string) string {
	best, bestDist, bestLiteral := "", -1, 0
	for _, tmpl := range t.all {
		candidate := make([]string, len(tmpl))
		literal := len(tmpl) - 1 // the dots
		for i, tok := range tmpl {
			candidate[i] = tok
			if !isPlaceholder(tok) {
				literal += len(tok)
			} else if i < len(tokens) {
				candidate[i] = tokens[i] // the user's id or '*'
			}
		}
		// Compare the shapes (ids in the user's form on both sides), so
		// that a long id counts for nothing.
		c := strings.Join(candidate, ".")
		d := editDistance(strings.Join(tokens, "."), c)
		if bestDist < 0 || d < bestDist {
			best, bestDist, bestLiteral = c, d, literal
		}
	}
	// More than a third of the template's own text changed is not a typo:
	// the ids filled in from the topic would make any template with many
	// placeholders look near.
	if bestDist < 0 || bestDist*3 > bestLiteral {
		return ""
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
