package connector

import (
	"hash/maphash"
	"sync"
)

// reportAudit counts a finished handover's audit and warns, once per
// process, the first time the assumption fails.
func (c *Connector) reportAudit(a *correlationAudit) {
	match, mismatch := a.result()
	c.obs.HandoverAudited(match, mismatch)
	if mismatch > 0 && c.auditWarned.CompareAndSwap(false, true) {
		c.log.Warn("one event reached two channels under different correlation ids: "+
			"the dedup id cannot collapse handover overlaps, so events read by both sockets are stored twice; "+
			"see gcnats_handover_correlation_total", "bodies_mismatched", mismatch, "bodies_matched", match)
	}
}

// correlationAudit checks, during a handover, what the dedup id rests on:
// that one event fanned out to two channels carries the same
// metadata.CorrelationId on both. Genesys does not document it. While an
// old and a new socket both read, every event either sees is noted by
// (topic, body) and correlation id; when the overlap ends, a body seen on
// both sockets with no correlation id in common is a mismatch. Were the
// assumption wrong, every overlap would store its events twice, so an
// operator needs to hear of it; bodies that repeat legitimately (an agent
// joining twice) still share their ids across the sockets.
type correlationAudit struct {
	seed maphash.Seed

	mu   sync.Mutex
	seen map[uint64]*[2][]string // by hash of topic and body: correlation ids per side
}

// maxAuditBodies bounds an audit's memory during a busy overlap.
const maxAuditBodies = 10_000

func newCorrelationAudit() *correlationAudit {
	return &correlationAudit{seed: maphash.MakeSeed(), seen: make(map[uint64]*[2][]string)}
}

// auditTap is one socket's side of an audit: 0 the old socket, 1 the new.
type auditTap struct {
	audit *correlationAudit
	side  int
}

// observe notes an event read on one side. It copies what it keeps.
func (a *correlationAudit) observe(side int, topic, correlationID, body []byte) {
	if len(correlationID) == 0 {
		return // the id falls back to the body: nothing to check
	}
	var h maphash.Hash
	h.SetSeed(a.seed)
	h.Write(topic)
	h.WriteByte(0)
	h.Write(body)
	key := h.Sum64()

	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.seen[key]
	if !ok {
		if len(a.seen) >= maxAuditBodies {
			return
		}
		e = new([2][]string)
		a.seen[key] = e
	}
	e[side] = append(e[side], string(correlationID))
}

// result counts the bodies both sides saw: with a correlation id in
// common (match) or none (mismatch).
func (a *correlationAudit) result() (match, mismatch int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.seen {
		if len(e[0]) == 0 || len(e[1]) == 0 {
			continue // seen on one side only: the overlap's edges
		}
		if shareAny(e[0], e[1]) {
			match++
		} else {
			mismatch++
		}
	}
	return match, mismatch
}

func shareAny(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if x == y {
				return true
			}
		}
	}
	return false
}
