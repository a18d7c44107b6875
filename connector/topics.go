package connector

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// entityKind is what a '*' in a topic's id position expands over.
type entityKind int

const (
	noWildcard entityKind = iota
	queues
	users
)

// wildcardKind finds the '*' of a topic and what it stands for. Only queue
// and user ids can be listed over REST; a '*' anywhere else is an error.
func wildcardKind(topic string) (entityKind, error) {
	if !strings.Contains(topic, "*") {
		return noWildcard, nil
	}
	tokens := strings.Split(topic, ".")
	switch {
	case len(tokens) > 3 && tokens[0] == "v2" && tokens[1] == "routing" && tokens[2] == "queues" && tokens[3] == "*":
		if slices.Contains(tokens[4:], "*") {
			break
		}
		return queues, nil
	case len(tokens) > 2 && tokens[0] == "v2" && tokens[1] == "users" && strings.HasPrefix(tokens[2], "*") && (tokens[2] == "*" || tokens[2][1] == '?'):
		if strings.Contains(strings.Join(tokens[3:], "."), "*") {
			break
		}
		return users, nil
	}
	return noWildcard, fmt.Errorf("topic %q: '*' can stand only for the queue id of v2.routing.queues.*… or the user id of v2.users.*…", topic)
}

// ValidateTopics checks the configured topics without calling Genesys.
func ValidateTopics(topics []string) error {
	if len(topics) == 0 {
		return fmt.Errorf("no topics configured")
	}
	for _, t := range topics {
		if t == "" || strings.ContainsAny(t, " \t\r\n") {
			return fmt.Errorf("topic %q: empty or contains whitespace", t)
		}
		if _, err := wildcardKind(t); err != nil {
			return err
		}
	}
	return nil
}

// resolveTopics expands every '*' over the org's queues or users, listing
// each kind at most once, and returns the sorted, de-duplicated topics.
func (c *Connector) resolveTopics(ctx context.Context) ([]string, error) {
	var queueIDs, userIDs []Entity
	var listedQueues, listedUsers bool
	out := make([]string, 0, len(c.opts.Topics))
	for _, t := range c.opts.Topics {
		kind, err := wildcardKind(t)
		if err != nil {
			return nil, err
		}
		var ids []Entity
		switch kind {
		case noWildcard:
			out = append(out, t)
			continue
		case queues:
			if !listedQueues {
				if queueIDs, err = c.api.listQueues(ctx); err != nil {
					return nil, fmt.Errorf("expand %q: %w", t, err)
				}
				listedQueues = true
			}
			ids = queueIDs
		case users:
			if !listedUsers {
				if userIDs, err = c.api.listUsers(ctx); err != nil {
					return nil, fmt.Errorf("expand %q: %w", t, err)
				}
				listedUsers = true
			}
			ids = userIDs
		}
		for _, e := range ids {
			out = append(out, strings.Replace(t, "*", e.ID, 1))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// subscriptionCount is how many of a channel's 1,000 topics a subscription
// uses: v2.users.{id}?presence&routingStatus counts each topic it names.
func subscriptionCount(topic string) int {
	_, query, ok := strings.Cut(topic, "?")
	if !ok {
		return 1
	}
	return strings.Count(query, "&") + 1
}

// PlanError is a topic set that does not fit the channel budget.
type PlanError struct {
	Topics, PerChannel, Needed, Budget int
}

func (e *PlanError) Error() string {
	return fmt.Sprintf("%d topics need %d channels of %d topics, and a budget of %d (GCNATS_MAX_CHANNELS) holds %d plus the spare a rollover needs: subscribe to fewer topics or raise the budget (Genesys allows 20 channels per OAuth client, shared by every replica)",
		e.Topics, e.Needed, e.PerChannel, e.Budget, slotsFor(e.Budget))
}

// slotsFor is how many channels a budget plans: one stays spare, because a
// rollover makes the new channel before it lets the old one go.
func slotsFor(budget int) int { return budget - 1 }

// plan spreads topics evenly over the fewest channels that hold them, so
// each channel keeps room to grow when the org does.
func plan(topics []string, perChannel, budget int) ([][]string, error) {
	total := 0
	for _, t := range topics {
		total += subscriptionCount(t)
	}
	if total == 0 {
		return nil, fmt.Errorf("no topics to subscribe to")
	}
	needed := (total + perChannel - 1) / perChannel
	if needed > slotsFor(budget) {
		return nil, &PlanError{Topics: total, PerChannel: perChannel, Needed: needed, Budget: budget}
	}
	share := (total + needed - 1) / needed
	groups := make([][]string, 0, needed)
	var cur []string
	n := 0
	for _, t := range topics {
		c := subscriptionCount(t)
		if n+c > share && len(cur) > 0 {
			groups = append(groups, cur)
			cur, n = nil, 0
		}
		cur = append(cur, t)
		n += c
	}
	groups = append(groups, cur)
	if len(groups) > slotsFor(budget) {
		return nil, &PlanError{Topics: total, PerChannel: perChannel, Needed: len(groups), Budget: budget}
	}
	return groups, nil
}

// replan fits a new topic set onto existing channels, moving no topic that
// stays: removed topics leave, new ones fill the channels with room, and a
// new channel is added only when none has room.
func replan(current [][]string, topics []string, perChannel, budget int) ([][]string, error) {
	want := make(map[string]bool, len(topics))
	for _, t := range topics {
		want[t] = true
	}
	next := make([][]string, len(current))
	placed := make(map[string]bool, len(topics))
	for i, group := range current {
		for _, t := range group {
			if want[t] && !placed[t] {
				next[i] = append(next[i], t)
				placed[t] = true
			}
		}
	}
	counts := make([]int, len(next))
	for i, g := range next {
		for _, t := range g {
			counts[i] += subscriptionCount(t)
		}
	}
	total := 0
	for _, t := range topics {
		total += subscriptionCount(t)
	}
	for _, t := range topics {
		c := subscriptionCount(t)
		if placed[t] {
			continue
		}
		i := slices.IndexFunc(counts, func(n int) bool { return n+c <= perChannel })
		if i < 0 {
			if len(next) >= slotsFor(budget) {
				return nil, &PlanError{Topics: total, PerChannel: perChannel, Needed: len(next) + 1, Budget: budget}
			}
			next = append(next, nil)
			counts = append(counts, 0)
			i = len(next) - 1
		}
		next[i] = append(next[i], t)
		counts[i] += c
	}
	return next, nil
}
