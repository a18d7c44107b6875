package publisher

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// Some failures need a question to JetStream before the record's fate is
// known: no responders (is any stream there, or is one electing a leader?)
// and an ack timeout with nothing acked since (does JetStream answer for
// the subject?). A question can take as long as the ack timeout: the meta
// leader that answers it may be the node that just went. So the run
// goroutine never asks itself: it parks the record under its question and
// goes on sending every other record; the asker goroutine asks, one
// question at a time, and hands the answer back.

// questionKind says what is asked about a subject.
type questionKind uint8

const (
	// askCovered: does a stream cover the subject (after no responders)?
	// If none does and a kept stream would (WithStreams), it is set up
	// again. Its records do not wait for the reply (the stream may be
	// electing a leader, and the meta leader that answers may be the node
	// that went): they are sent again after a pause, and given up if
	// the reply says no stream covers them.
	askCovered questionKind = iota
	// askAnswers: does JetStream answer for the subject (after an ack
	// timeout with nothing acked since)? No stream covers it, or the one
	// that does answers an info request.
	askAnswers
	// askStored: which of the records handed over (asker.check) does the
	// stream hold already? See checkStored.
	askStored
)

type question struct {
	kind    questionKind
	subject string
}

// reply is the asker's answer to a question.
type reply struct {
	q  question
	ok bool // askCovered: a stream covers the subject (again); askAnswers: JetStream answers
	// askedAt: when the asker began asking.
	askedAt time.Time
	// recreated: askCovered found no stream and set a kept one up again.
	recreated bool
	check     storedCheck // askStored's records and findings
}

// noRespondersPause is how long records that found no stream leader wait
// before they are sent again: an election takes a few hundred
// milliseconds, and these records wait alone, the others go on.
const noRespondersPause = 100 * time.Millisecond

// asker is what the run goroutine shares with the asker goroutine, which
// asks JetStream the questions, each on a goroutine of its own. Run puts
// questions in; the askers put replies in and wake run.
type asker struct {
	mu      sync.Mutex
	asks    []question
	replies []reply
	check   storedCheck // askStored's records, handed over with the question
	// recreating: one stream is set up again at a time.
	recreating sync.Mutex
	wake       chan struct{} // the asker: a question is waiting (capacity 1)
	done       chan struct{}
}

// parking is the run goroutine's side: the questions asked, with the
// records waiting for each reply, and those waiting out a pause after no
// responders.
type parking struct {
	parked  map[question][]*rec
	cooling []cooled
	// toCheck: records waiting for the dedup check under way to end, to be
	// checked next (see checkStored).
	toCheck []*rec
	// noStreamAt: the subjects no stream covered, by when that was asked;
	// a no responders to a send made before then is given up.
	noStreamAt map[string]time.Time
	// spareReplies is the asker's last batch of replies, for reuse.
	spareReplies []reply
}

// cooled records go back to the retries at until.
type cooled struct {
	until time.Time
	recs  []*rec
}

// park holds rc until q is answered, asking q if it is not asked yet.
// Called on the run goroutine.
func (p *Publisher) park(q question, rc *rec) {
	q = p.askOnce(q)
	p.parked[q] = append(p.parked[q], rc)
}

// askOnce asks q unless it is asked already, and returns it with a
// subject of its own.
func (p *Publisher) askOnce(q question) question {
	if _, asked := p.parked[q]; asked {
		return q
	}
	q.subject = strings.Clone(q.subject) // it points into a record's reused buffer
	p.parked[q] = nil
	p.ask.mu.Lock()
	p.ask.asks = append(p.ask.asks, q)
	p.ask.mu.Unlock()
	signal(p.ask.wake)
	return q
}

// cool holds rc for a pause after no responders, and asks whether a
// stream covers its subject.
func (p *Publisher) cool(rc *rec) {
	p.askOnce(question{askCovered, rc.msg.Subject})
	until := time.Now().Add(noRespondersPause)
	if n := len(p.cooling); n > 0 && until.Sub(p.cooling[n-1].until) < 10*time.Millisecond {
		p.cooling[n-1].recs = append(p.cooling[n-1].recs, rc)
		return
	}
	p.cooling = append(p.cooling, cooled{until: until, recs: []*rec{rc}})
}

// runAsker hands each question to a goroutine of its own until the
// publisher's life ends: a question the lost meta leader holds up must not
// hold up the others (the dedup check above all). Questions are asked
// once at a time each (see askOnce), so they are few.
func (p *Publisher) runAsker() {
	defer close(p.ask.done)
	var asking sync.WaitGroup
	defer asking.Wait()
	for {
		select {
		case <-p.life.Done():
			return
		case <-p.ask.wake:
		}
		p.ask.mu.Lock()
		asks := p.ask.asks
		p.ask.asks = nil
		p.ask.mu.Unlock()
		for _, q := range asks {
			asking.Add(1)
			go func() {
				defer asking.Done()
				p.answer(q)
			}()
		}
	}
}

// answer asks q and hands the reply to the run goroutine.
func (p *Publisher) answer(q question) {
	r := reply{q: q, askedAt: time.Now()}
	switch q.kind {
	case askCovered:
		r.ok, r.recreated = p.covered(q.subject)
	case askAnswers:
		r.ok = p.jetStreamAnswers(q.subject)
	case askStored:
		p.ask.mu.Lock()
		r.check, p.ask.check = p.ask.check, storedCheck{}
		p.ask.mu.Unlock()
		p.lookUpStored(&r.check)
	}
	if p.life.Err() != nil {
		return
	}
	p.ask.mu.Lock()
	p.ask.replies = append(p.ask.replies, r)
	p.ask.mu.Unlock()
	p.signal()
}

// covered asks whether any stream covers subj; none does while a stream is
// deleted, and then a kept stream (WithStreams) that would cover it is set
// up again. No responders also happens while a server restarts or a stream
// elects a leader, and a lookup that fails counts as covered: those are
// worth waiting for.
func (p *Publisher) covered(subj string) (ok, recreated bool) {
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	defer cancel()
	js := p.cur.Load().js
	_, err := js.StreamNameBySubject(ctx, subj)
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return true, false
	}
	return p.recreate(ctx, js, subj), true
}

// recreate creates again the kept stream (WithStreams) that covers subj:
// true when it exists again. Gone, or edited to leave the subject out:
// EnsureStream creates it or puts its subjects back.
func (p *Publisher) recreate(ctx context.Context, js jetstream.JetStream, subj string) bool {
	i := slices.IndexFunc(p.o.streams, func(c StreamConfig) bool {
		return slices.ContainsFunc(c.Subjects, func(f string) bool { return server.SubjectMatchesFilter(subj, f) })
	})
	if i < 0 {
		return false
	}
	cfg := p.o.streams[i]
	// EnsureStream chains to the connection's error handler while it runs
	// (failOnAPIDenial): two at once would restore each other's.
	p.ask.recreating.Lock()
	_, err := EnsureStream(ctx, js, cfg)
	p.ask.recreating.Unlock()
	if err != nil {
		p.log.Error("no stream for the subject, and setting it up again failed", "stream", cfg.Name, "subject", subj, "err", err)
		return false
	}
	p.log.Warn("no stream for the subject; set the stream up again", "stream", cfg.Name, "subject", subj, "subjects", cfg.Subjects)
	return true
}

// jetStreamAnswers asks whether JetStream answers for subj: no stream covers it, or
// the stream covering it answers an info request, so it has a leader and
// could have acked.
func (p *Publisher) jetStreamAnswers(subj string) bool {
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	defer cancel()
	js := p.cur.Load().js
	name, err := js.StreamNameBySubject(ctx, subj)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return true
	}
	if err != nil {
		return false
	}
	_, err = js.Stream(ctx, name)
	return err == nil
}

// settleReplies decides the parked records' fate from the replies that
// came back. Called on the run goroutine.
func (p *Publisher) settleReplies(now time.Time) {
	p.ask.mu.Lock()
	replies := p.ask.replies
	p.ask.replies = p.spareReplies[:0]
	p.ask.mu.Unlock()
	for _, r := range replies {
		recs := p.parked[r.q]
		delete(p.parked, r.q)
		switch r.q.kind {
		case askCovered:
			p.settleCovered(r)
		case askAnswers:
			p.settleAnswered(r, recs, now)
		case askStored:
			p.settleStored(r.check, recs)
		}
	}
	clear(replies)
	p.spareReplies = replies[:0]
	p.releaseCooled(now)
}

// settleCovered gives up, when no stream covers the subject, its records
// waiting to be sent again; those in flight are given up as their no
// responders comes (see fail).
func (p *Publisher) settleCovered(r reply) {
	subj := r.q.subject
	if r.ok {
		delete(p.noStreamAt, subj)
		return
	}
	if len(p.noStreamAt) >= 4096 {
		clear(p.noStreamAt)
	}
	p.noStreamAt[subj] = r.askedAt
	uncovered := func(rc *rec) bool {
		if rc.msg.Subject != subj {
			return false
		}
		p.giveUp(rc, ReasonNoStream, errNoStream(subj))
		return true
	}
	j := p.retryHead
	for _, rc := range p.retry[p.retryHead:] {
		if !uncovered(rc) {
			p.retry[j] = rc
			j++
		}
	}
	clear(p.retry[j:])
	p.retry = p.retry[:j]
	for i := range p.cooling {
		p.cooling[i].recs = slices.DeleteFunc(p.cooling[i].recs, uncovered)
	}
}

func (p *Publisher) settleAnswered(r reply, recs []*rec, now time.Time) {
	if !r.ok {
		// JetStream does not answer: every timeout for a while is
		// NATS's, not the record's, and asking again for each would only
		// queue more questions.
		p.jsQuietUntil = now.Add(p.o.ackTimeout)
		for range recs {
			p.countRetry(ReasonTimeout)
		}
		p.pushRetry(recs...)
		p.pause(ReasonTimeout, jetstream.ErrAsyncPublishTimeout)
		return
	}
	for _, rc := range recs {
		p.ownFailure(rc, ReasonTimeout, jetstream.ErrAsyncPublishTimeout)
	}
}

// releaseCooled puts back with the retries the records whose pause is
// over.
func (p *Publisher) releaseCooled(now time.Time) {
	n := 0
	for _, c := range p.cooling {
		if now.Before(c.until) {
			p.cooling[n] = c
			n++
			continue
		}
		p.pushRetry(c.recs...)
	}
	clear(p.cooling[n:])
	p.cooling = p.cooling[:n]
}

// coolDue is how long until the next pause ends (0: none is under way).
func (p *Publisher) coolDue() time.Duration {
	if len(p.cooling) == 0 {
		return 0
	}
	return max(time.Until(p.cooling[0].until), time.Microsecond)
}

// repliesWaiting reports whether the asker has handed back replies.
func (p *Publisher) repliesWaiting() bool {
	p.ask.mu.Lock()
	defer p.ask.mu.Unlock()
	return len(p.ask.replies) > 0
}
