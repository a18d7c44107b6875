package connector

import "context"

// genesysChannelLimit is Genesys' limit of channels per OAuth client,
// shared by every token and so by every replica. Creating one more evicts
// the oldest channel without a socket, or failing that the oldest
// connected one: a live channel of this or another replica.
const genesysChannelLimit = 20

// spare is the connector's one channel beyond its plan. A rollover makes
// the new channel before it lets the old one go, so for a moment one slot
// holds two; the plan leaves room for exactly one such moment
// (MaxChannels-1 slots), and the spare makes sure two slots never have
// theirs at once.
//
// Invariant (budget): channels in use (subscribed or connected) by one
// connector ≤ slots + holders of the spare ≤ (MaxChannels-1) + 1.
type spare struct{ token chan struct{} }

func newSpare() *spare {
	s := &spare{token: make(chan struct{}, 1)}
	s.token <- struct{}{}
	return s
}

// acquire waits for the spare; false when ctx ended first.
func (s *spare) acquire(ctx context.Context) bool {
	select {
	case <-s.token:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *spare) release() {
	select {
	case s.token <- struct{}{}:
	default:
		panic("connector: spare channel released twice") // a bug in the slot machine, not a runtime condition
	}
}

// countClientChannels counts the OAuth client's channels across all its
// tokens and warns when this connector's budget plus the channels others
// hold passes Genesys' limit: then a rollover here, or a channel made by
// another replica, evicts a live channel.
func (c *Connector) countClientChannels(ctx context.Context) {
	ids, err := c.api.listClientChannels(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("cannot count the OAuth client's channels", "err", err)
		}
		return
	}
	ours := map[string]bool{}
	c.mu.Lock()
	for _, s := range c.slots {
		for _, id := range s.channelIDs() {
			ours[id] = true
		}
	}
	c.mu.Unlock()
	others := 0
	for _, id := range ids {
		if !ours[id] {
			others++ // another token's channel lists without its id
		}
	}
	atRisk := c.opts.MaxChannels+others > genesysChannelLimit
	c.mu.Lock()
	c.clientChannels, c.otherChannels, c.budgetAtRisk = len(ids), others, atRisk
	c.mu.Unlock()
	c.notify()
	if atRisk {
		c.log.Warn("GCNATS_MAX_CHANNELS plus the channels others hold pass Genesys' 20 per OAuth client: a rollover may evict a live channel; keep replicas × GCNATS_MAX_CHANNELS ≤ 20",
			"client_channels", len(ids), "others", others, "budget", c.opts.MaxChannels)
		return
	}
	c.log.Debug("OAuth client channels counted", "client_channels", len(ids), "others", others, "budget", c.opts.MaxChannels)
}
