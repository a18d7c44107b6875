package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/simulator"
)

// serverWitness watches every message the JetStream server takes in, over
// a plain core subscription beside the stream. When events go missing it
// tells where: an event the witness saw reached the server and was lost
// there (or after); one it never saw was lost on the sidecar's side.
//
// It is a witness, not a judge: it can miss messages while it reconnects
// after a NATS restart, so "not seen" is only meaningful beside "seen".
type serverWitness struct {
	nc  *nats.Conn
	sub *nats.Subscription

	mu   sync.Mutex
	seen map[string]struct{} // Genesys-Correlation-Id
	gaps []string            // its own disconnections and errors, for the report
}

func newServerWitness(url string, start time.Time) (*serverWitness, error) {
	w := &serverWitness{seen: map[string]struct{}{}}
	nc, err := nats.Connect(url,
		nats.MaxReconnects(-1),
		nats.ReconnectWait(20*time.Millisecond),
		nats.ReconnectJitter(0, 0),
		nats.DisconnectErrHandler(func(*nats.Conn, error) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("down at %s", time.Since(start).Round(time.Millisecond)))
			w.mu.Unlock()
		}),
		nats.ReconnectHandler(func(*nats.Conn) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("up at %s", time.Since(start).Round(time.Millisecond)))
			w.mu.Unlock()
		}),
		// Into the report, not nats.go's default of standard error.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			w.mu.Lock()
			w.gaps = append(w.gaps, fmt.Sprintf("error at %s: %v", time.Since(start).Round(time.Millisecond), err))
			w.mu.Unlock()
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("witness connect: %w", err)
	}
	w.nc = nc
	w.sub, err = nc.Subscribe("genesys.>", func(m *nats.Msg) {
		id := m.Header.Get("Genesys-Correlation-Id")
		w.mu.Lock()
		w.seen[id] = struct{}{}
		w.mu.Unlock()
	})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("witness subscribe: %w", err)
	}
	_ = w.sub.SetPendingLimits(-1, -1)
	if err := nc.FlushTimeout(10 * time.Second); err != nil {
		nc.Close()
		return nil, fmt.Errorf("witness flush: %w", err)
	}
	return w, nil
}

// verdict says how many of the lost correlation ids reached the server.
func (w *serverWitness) verdict(lost []string) string {
	dropped, _ := w.sub.Dropped()
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := 0
	for _, id := range lost {
		if _, ok := w.seen[id]; ok {
			seen++
		}
	}
	gaps := w.gaps[max(0, len(w.gaps)-20):]
	return fmt.Sprintf("the server took in %d of the %d lost events (witness dropped %d; its last disconnections: %v)",
		seen, len(lost), dropped, gaps)
}

func (w *serverWitness) close() { w.nc.Close() }

// The coverage oracle. An event that reached no socket is no loss of the
// sidecar's only when no socket could have had it: every interval in
// which a topic of the org had no receiving socket (simulator.Coverage)
// must be explained by a fault that made coverage impossible, and end
// within a stated bound of that fault healing. Anything else is the
// sidecar leaving a topic uncovered, reported like a loss.

const (
	// chaosRecoveryBound is how long after a fault heals the sidecar may
	// take to have every topic received again when nothing hinders it.
	// The longest unhindered recovery is a channel ended with its token:
	// a new token, a channel, a subscription, a dial and its pong, five
	// round trips to the simulator plus a first retry's backoff (at most
	// 250 ms), all under -race on a shared 2-core machine where a round
	// trip can take a second or more under load. Measured, recoveries
	// take under 1.5 s; 5 s leaves room, and is still half the 10 s a
	// dead socket waits for the next planned rotation (a 12 s channel
	// rotated 2 s before its end), which is what a slot holding a socket
	// that ended unnoticed costs.
	chaosRecoveryBound = 5 * time.Second
	// chaosStallNotice is how long a stalled socket takes to be noticed:
	// GCNATS_HEARTBEAT_TIMEOUT, during which the sidecar rightly waits.
	chaosStallNotice = 3 * time.Second
	// chaosRefresh is GCNATS_TOPIC_REFRESH: a topic the org gains is
	// subscribed at the next refresh, which the bound is counted from.
	chaosRefresh = time.Second
	// chaosRefusalTail: after a run of refused or failed requests the
	// sidecar retries with a doubling backoff from 200-250 ms drawn with
	// full jitter, so its next try comes about as long again after the
	// run as the run lasted; at least this.
	chaosRefusalTail = 2 * time.Second
	// chaosReadyBlind is how long the sidecar may say it is ready while a
	// topic of the org has no receiving socket, beyond what hindered it:
	// a stalled socket is noticed after GCNATS_HEARTBEAT_TIMEOUT (3 s),
	// and a topic the org gained waits for the next refresh (1 s); 2 s
	// more for a loaded machine. A socket that ended unnoticed keeps the
	// sidecar ready and blind until the next rotation, up to 10 s.
	chaosReadyBlind = chaosStallNotice + 2*time.Second
	// chaosHitExcuse: a handover empties the old channel a REST call
	// after it promotes the new one; a fault that ended the new one in
	// between leaves the topics nowhere, through no fault of the
	// sidecar's. A REST call takes well under this even under load.
	chaosHitExcuse = 2 * time.Second
)

// topicLife is when the org had a topic: from its queue or user being
// made (the run's start for the first ones) to its removal.
type topicLife struct{ from, until time.Time }

// window is a span of time, with why it matters.
type window struct {
	from, to time.Time
	why      string
}

// hit is a fault that ended coverage of topics (nil: of every topic).
type hit struct {
	at     time.Time
	kind   faultKind
	topics []string
}

func queueTopics(id string) []string {
	return []string{"v2.routing.queues." + id + ".conversations", "v2.routing.queues." + id + ".users"}
}

func userTopics(id string) []string { return []string{"v2.users." + id + ".presence"} }

// trackTopics records the org's topics at the run's start and starts the
// simulator's coverage record.
func (c *chaos) trackTopics() {
	c.h.sim.TrackCoverage()
	from := time.Now() // the coverage at the start is recorded before it
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, q := range c.h.sim.Queues() {
		for _, t := range queueTopics(q.ID) {
			c.topics[t] = &topicLife{from: from}
		}
	}
	for _, u := range c.h.sim.Users() {
		for _, t := range userTopics(u.ID) {
			c.topics[t] = &topicLife{from: from}
		}
	}
}

func (c *chaos) topicsBegin(topics ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range topics {
		c.topics[t] = &topicLife{from: time.Now()}
	}
}

func (c *chaos) topicsEnd(topics ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range topics {
		if l := c.topics[t]; l != nil && l.until.IsZero() {
			l.until = time.Now()
		}
	}
}

// orgTopics are the topics the org has now.
func (c *chaos) orgTopics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for t, l := range c.topics {
		if l.until.IsZero() {
			out = append(out, t)
		}
	}
	slices.Sort(out)
	return out
}

// startOrgEmitter emits one event on each of the org's topics every
// interval, subscribed or not, as an org does: an event on a topic no
// socket receives is one the oracle must explain.
func (c *chaos) startOrgEmitter(every time.Duration) *emitter {
	return startEmitterOf(c.h.sim, every, c.orgTopics)
}

func (c *chaos) hit(kind faultKind, topics []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hits = append(c.hits, hit{at: time.Now(), kind: kind, topics: topics})
}

func (c *chaos) hinder(kind faultKind, from, to time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hindrances = append(c.hindrances, window{from: from, to: to, why: string(kind)})
}

// inBackground runs a fault that waits for its moment; healing the run
// ends the wait.
func (c *chaos) inBackground(fn func(stop <-chan struct{})) {
	c.bg.Add(1)
	go func() {
		defer c.bg.Done()
		fn(c.bgStop)
	}()
}

// refreshInHandover changes the org while a rotation is under way, the
// moment item 1 of issue 21 lost events in: it waits for the next channel
// to be made, has that channel's subscription wired s.For late (so the
// handover stays open past a topic refresh), and adds a queue (or, one
// time in four, removes one) for the refresh to find.
func (c *chaos) refreshInHandover(s step) {
	sim := c.h.sim
	c.inBackground(func(stop <-chan struct{}) {
		ctx, cancel := context.WithTimeout(context.Background(), chaosChannelLife)
		defer cancel()
		go func() {
			select {
			case <-stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		// A handover: a channel just made, not yet subscribed, while
		// another, connected, holds the topics.
		var made simulator.ChannelInfo
		seen := map[string]bool{}
		err := sim.Wait(ctx, func(snap simulator.Snapshot) bool {
			made = simulator.ChannelInfo{}
			live := false
			for _, ch := range snap.Channels {
				switch {
				case len(ch.Topics) > 0:
					seen[ch.ID] = true
					live = live || ch.Connected
				case !seen[ch.ID]:
					made = ch
				}
			}
			return made.ID != "" && live
		})
		if err != nil {
			c.note(s, "missed: no channel made")
			return
		}
		now := time.Now()
		c.hinder(s.Kind, now, now.Add(2*s.For+time.Second))
		sim.SetSubscribeDelay(s.For)
		// Only the new channel's subscription is late: the refresh's
		// subscription of the old one takes effect at once, so the added
		// topic is received there until the handover ends.
		err = sim.Wait(ctx, func(snap simulator.Snapshot) bool {
			ch, ok := snap.Channel(made.ID)
			return !ok || len(ch.Topics) > 0
		})
		sim.SetSubscribeDelay(0)
		if err != nil {
			c.note(s, "missed: channel "+channelTag(made.ID)+" never subscribed")
			return
		}
		what := 0
		if s.Pick%4 == 3 {
			what = 2
		}
		c.note(s, "channel "+channelTag(made.ID)+" made; "+c.changeOrg(what, s.Pick))
	})
}

// dialRace ends the next s.N new sockets at their dial, before their pong
// or (two times in three) right after it, racing the dial's answer; every
// other time it sends a closing warning too, so that the socket ended is
// the one that answers it (item 2 of issue 21).
func (c *chaos) dialRace(s step) {
	sim := c.h.sim
	when, where := simulator.DropAfterPong, "after its pong"
	if s.Pick%3 == 0 {
		when, where = simulator.DropAtUpgrade, "before its pong"
	}
	sim.DropNewSockets(s.N, when)
	c.later(3*time.Second, func() { sim.DropNewSockets(0, when) })
	if s.Pick%2 == 0 {
		if ch, ok := c.liveChannel(s.Pick); ok && sim.SendClosingWarning(ch.ID, 300*time.Millisecond) == nil {
			c.hit(s.Kind, ch.Topics)
			c.note(s, "closing warning to channel "+channelTag(ch.ID)+"; new sockets end "+where)
			return
		}
	}
	c.note(s, "new sockets end "+where)
}

// leaderInFlight loses the stream's leader while a burst is being
// published (item 5 of issue 21): it steps down, or one time in two the
// leader's node stops for s.For.
func (c *chaos) leaderInFlight(s step) {
	evs := c.h.sim.EmitN(s.N)
	c.mu.Lock()
	c.expected = append(c.expected, evs...)
	c.mu.Unlock()
	if s.Pick%2 == 0 {
		c.stepdown(s)
		return
	}
	stream := c.h.sc.settings.Stream
	var leader *natstest.Node
	c.mu.Lock()
	for _, nd := range c.cluster.Nodes {
		if _, down := c.nodesDown[nd]; !down && nd.Srv.JetStreamIsStreamLeader(server.DEFAULT_GLOBAL_ACCOUNT, stream) {
			leader = nd
		}
	}
	if leader != nil {
		c.nodesDown[leader] = nodeStopping
	}
	c.mu.Unlock()
	if leader == nil {
		c.note(s, "missed: no leader up")
		return
	}
	c.cluster.Stop(leader)
	c.mu.Lock()
	c.nodesDown[leader] = nodeStopped
	c.mu.Unlock()
	c.note(s, fmt.Sprintf("%d events in flight; leader %s stopped", len(evs), leader.Name))
	c.later(s.For, func() { c.nodeUp(leader) })
}

// topicSpan is a span of time one topic spent in some state.
type topicSpan struct {
	topic    string
	from, to time.Time
}

// watchReadyBlind notes, at one instant, which topics of the org have no
// receiving socket while the sidecar says it is ready.
func (c *chaos) watchReadyBlind() {
	ready, _ := c.h.sc.conn.Status().Ready()
	now := time.Now()
	topics := c.orgTopics()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, t := range topics {
		since, blind := c.blindSince[t]
		switch receiving := c.h.sim.Receiving(t); {
		case ready && !receiving && !blind:
			c.blindSince[t] = now
		case blind && (!ready || receiving):
			delete(c.blindSince, t)
			c.blind = append(c.blind, topicSpan{topic: t, from: since, to: now})
		}
	}
}

// checkReadyBlind fails the run on a span the sidecar said it was ready
// while a topic had no receiving socket for longer than chaosReadyBlind
// beyond what hindered it: the sidecar holding, as live, a socket that
// no longer reads (issue 21, item 2).
func (c *chaos) checkReadyBlind(cov simulator.Coverage, end time.Time) {
	c.mu.Lock()
	spans := slices.Clone(c.blind)
	for t, since := range c.blindSince {
		spans = append(spans, topicSpan{topic: t, from: since, to: end})
	}
	hindrances := append(slices.Clone(c.hindrances), refusalWindows(cov.Refusals)...)
	start := c.start
	c.mu.Unlock()
	var bad []string
	for _, sp := range spans {
		hindered := overlap(hindrances, sp.from, sp.to)
		if sp.to.Sub(sp.from)-hindered > chaosReadyBlind {
			bad = append(bad, fmt.Sprintf("%s had no receiving socket %s–%s (%s, %s hindered) while the sidecar said it was ready",
				sp.topic, sp.from.Sub(start).Round(time.Millisecond), sp.to.Sub(start).Round(time.Millisecond),
				sp.to.Sub(sp.from).Round(time.Millisecond), hindered.Round(time.Millisecond)))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		c.fail("the sidecar was ready and blind for longer than %s beyond what hindered it (a socket held as live that no longer reads):\n%s",
			chaosReadyBlind, strings.Join(bad, "\n"))
	}
}

// coverageVerdict is what the oracle found.
type coverageVerdict struct {
	intervals  int           // uncovered intervals, all explained
	events     int           // events that fell in them
	worst      time.Duration // the longest recovery beyond what hindered it
	worstWhat  string
	violations []string
	explained  []string // each explained interval, for a verbose run
}

func (v coverageVerdict) String() string {
	return fmt.Sprintf("coverage: %d intervals with a topic of the org received by no socket, each explained by a fault (%d events fell in them); slowest recovery %s beyond what hindered it (%s), bound %s",
		v.intervals, v.events, v.worst.Round(time.Millisecond), v.worstWhat, chaosRecoveryBound)
}

// checkCoverage explains every interval in which a topic of the org had no
// receiving socket, up to end, and fails the run on one it cannot.
func (c *chaos) checkCoverage(cov simulator.Coverage, events []simulator.Event, end time.Time) coverageVerdict {
	c.mu.Lock()
	lives := maps.Clone(c.topics)
	hits := slices.Clone(c.hits)
	stops := slices.Clone(c.stops)
	hindrances := append(slices.Clone(c.hindrances), refusalWindows(cov.Refusals)...)
	start := c.start
	c.mu.Unlock()

	byTopic := map[string][]simulator.CoverageChange{}
	for _, ch := range cov.Changes {
		byTopic[ch.Topic] = append(byTopic[ch.Topic], ch)
	}
	var v coverageVerdict
	at := func(t time.Time) string { return t.Sub(start).Round(time.Millisecond).String() }
	for _, topic := range slices.Sorted(maps.Keys(lives)) {
		life := lives[topic]
		until := end
		if !life.until.IsZero() && life.until.Before(end) {
			until = life.until
		}
		for _, gap := range uncovered(byTopic[topic], life.from, until) {
			if gap.to.Sub(gap.from) < time.Millisecond {
				// A socket replaced by a new dial: gone and back in one
				// step of the org's.
				continue
			}
			n := 0
			for _, ev := range events {
				if ev.Topic == topic && ev.Delivered == 0 && !ev.At.Before(gap.from) && ev.At.Before(gap.to) {
					n++
				}
			}
			bound, why := chaosRecoveryBound, gap.cause.String()
			switch {
			case gap.cause == (simulator.Cause{}) && gap.from.Equal(life.from):
				bound, why = chaosRefresh+chaosRecoveryBound, "a topic new to the org"
			case gap.cause.ByClient && !gap.held && strings.Contains(gap.cause.What, "subscriptions") &&
				!recentHit(hits, topic, gap.from) && !within(stops, gap.from):
				v.violations = append(v.violations, fmt.Sprintf("%s had no receiving socket %s–%s (%s, %d events reached no socket): %s while that channel was the last receiving it and no connected channel held it",
					topic, at(gap.from), at(gap.to), gap.to.Sub(gap.from).Round(time.Millisecond), n, gap.cause))
				continue
			case strings.Contains(gap.cause.What, "stalled"):
				bound += chaosStallNotice
			}
			hindered := overlap(hindrances, gap.from, gap.to)
			beyond := gap.to.Sub(gap.from) - hindered
			if beyond > bound {
				v.violations = append(v.violations, fmt.Sprintf("%s had no receiving socket %s–%s (%s, %d events reached no socket): after %s, not received again within %s of what hindered recovery (%s hindered)",
					topic, at(gap.from), at(gap.to), gap.to.Sub(gap.from).Round(time.Millisecond), n, why, bound, hindered.Round(time.Millisecond)))
				continue
			}
			v.intervals++
			v.events += n
			v.explained = append(v.explained, fmt.Sprintf("%s %s–%s (%s, %s hindered, %d events): %s",
				topic, at(gap.from), at(gap.to), gap.to.Sub(gap.from).Round(time.Millisecond), hindered.Round(time.Millisecond), n, why))
			if beyond > v.worst {
				v.worst, v.worstWhat = beyond, why
			}
		}
	}
	if len(v.violations) > 0 {
		c.fail("%d uncovered intervals no fault explains (a topic the sidecar left without a receiving socket):\n%s",
			len(v.violations), strings.Join(v.violations, "\n"))
	}
	return v
}

// gap is one interval a topic had no receiving socket, and what began it
// (zero for a topic the org gained uncovered).
type gap struct {
	from, to time.Time
	cause    simulator.Cause
	held     bool
}

// uncovered turns a topic's coverage changes into its uncovered
// intervals within [from, until).
func uncovered(changes []simulator.CoverageChange, from, until time.Time) []gap {
	var out []gap
	open := &gap{from: from} // uncovered until a change says otherwise
	for _, ch := range changes {
		if !ch.At.Before(until) {
			break
		}
		switch {
		case ch.Covered && open != nil:
			if ch.At.After(open.from) {
				open.to = ch.At
				out = append(out, *open)
			}
			open = nil
		case !ch.Covered && open == nil:
			open = &gap{from: ch.At, cause: ch.Cause, held: ch.HeldElsewhere}
			if open.from.Before(from) {
				open.from = from
			}
		}
	}
	if open != nil && until.After(open.from) {
		open.to = until
		out = append(out, *open)
	}
	return out
}

// refusalWindows turns the org's refusals into spans the sidecar's
// recovery was hindered: runs of refusals less than chaosRefusalTail
// apart, each followed by the backoff the run may have grown to.
func refusalWindows(all []simulator.Refusal) []window {
	// Only what a recovery needs: a token, the channel calls, a dial.
	// The topic refresh's listings retry on their own.
	var rs []simulator.Refusal
	for _, r := range all {
		if strings.Contains(r.What, "/oauth/") || strings.Contains(r.What, "/notifications/") || strings.Contains(r.What, "/channels/") || strings.HasPrefix(r.What, "dial") {
			rs = append(rs, r)
		}
	}
	var out []window
	for i := 0; i < len(rs); {
		first, last := rs[i].At, rs[i].Until
		j := i + 1
		for ; j < len(rs) && rs[j].At.Sub(last) < chaosRefusalTail; j++ {
			if rs[j].Until.After(last) {
				last = rs[j].Until
			}
		}
		tail := max(chaosRefusalTail, last.Sub(first))
		out = append(out, window{from: first, to: last.Add(tail), why: rs[i].What})
		i = j
	}
	return out
}

// overlap is how much of [from, to) the windows cover together.
func overlap(ws []window, from, to time.Time) time.Duration {
	slices.SortFunc(ws, func(a, b window) int { return a.from.Compare(b.from) })
	var total time.Duration
	cur := from
	for _, w := range ws {
		a, b := w.from, w.to
		if a.Before(cur) {
			a = cur
		}
		if b.After(to) {
			b = to
		}
		if b.After(a) {
			total += b.Sub(a)
			cur = b
		}
	}
	return total
}

// recentHit reports whether a fault ended coverage of topic on some
// channel within chaosHitExcuse before t: the channel the sidecar had just
// moved the topic to may be the one the fault ended.
func recentHit(hits []hit, topic string, t time.Time) bool {
	for _, h := range hits {
		if h.at.After(t) || t.Sub(h.at) > chaosHitExcuse {
			continue
		}
		if h.topics == nil || slices.Contains(h.topics, topic) {
			return true
		}
	}
	return false
}

func within(ws []window, t time.Time) bool {
	for _, w := range ws {
		if !t.Before(w.from) && !t.After(w.to) {
			return true
		}
	}
	return false
}
