package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A record sent before an outage may have been stored with its ack lost. Sent
// again within the stream's duplicate window, JetStream drops the copy; sent
// after the window (an outage of minutes, which the buffer rides out), it
// would store it twice. So before a record is sent again, if its first send
// is about a window old, the stream is searched for its id, and a record
// found there is finished as an acked duplicate. Records never sent are not
// at risk and are never looked up.

// dedupState is what the check keeps between checks. The asker goroutine
// alone uses the caches; the run goroutine alone the failure count.
type dedupState struct {
	streams  map[string]string        // subject → the stream that covers it
	windows  map[string]time.Duration // stream → its duplicate window
	gen      uint64                   // the link the caches were learnt on
	failures int                      // checks failed in a row
	log      logLimiter
}

func (d *dedupState) init() {
	d.streams = make(map[string]string)
	d.windows = make(map[string]time.Duration)
	d.log.every = 5 * time.Second
}

// storedCheck is a check handed to the asker: the records, taken from the
// retries and parked meanwhile, and what it found.
type storedCheck struct {
	recs    []*rec
	stored  map[*rec]bool
	failure error
}

// Bounds of one scan: past them the records are sent again, and a duplicate
// is possible, which is better than losing them.
const (
	dedupScanMax     = 1 << 20 // messages
	dedupScanTimeout = 30 * time.Second
	// dedupMaxFailures is how many failed lookups in a row hold the records
	// back before they are sent without one.
	dedupMaxFailures = 3
	// dedupClockSlack widens the scan for clock skew between us and the
	// server, whose clock stamps the stored messages.
	dedupClockSlack = 2 * time.Second
)

// checkStored hands the asker the retries sent before (the others were
// never stored, so cannot be stored twice), to be looked up in one scan
// per stream if their first send is older than three quarters of their
// stream's window. They wait, parked, while the others are sent: a scan
// can take many seconds. One check is under way at a time; retries added
// meanwhile are checked after it.
func (p *Publisher) checkStored() {
	p.checkDue = false
	if p.closing {
		return
	}
	now := time.Now()
	j := p.retryHead
	for _, rc := range p.retry[p.retryHead:] {
		// The server allows no window under 100ms: younger records are safe
		// without asking anything.
		if !rc.firstSent.IsZero() && now.Sub(rc.firstSent) >= 75*time.Millisecond {
			p.toCheck = append(p.toCheck, rc)
			continue
		}
		p.retry[j] = rc
		j++
	}
	clear(p.retry[j:])
	p.retry = p.retry[:j]
	p.startCheck()
}

// startCheck hands the records waiting for a check to the asker, unless a
// check is under way: they wait for the next, parked.
func (p *Publisher) startCheck() {
	if _, asked := p.parked[storedQuestion]; asked || len(p.toCheck) == 0 {
		return
	}
	recs := slices.Clone(p.toCheck)
	clear(p.toCheck)
	p.toCheck = p.toCheck[:0]
	p.ask.mu.Lock()
	p.ask.check = storedCheck{recs: recs}
	p.ask.mu.Unlock()
	p.askOnce(storedQuestion)
	p.parked[storedQuestion] = recs
}

// storedQuestion parks the records of the dedup check under way.
var storedQuestion = question{kind: askStored}

// lookUpStored runs the check on the asker goroutine: the records are
// parked, so the run goroutine does not touch them meanwhile.
func (p *Publisher) lookUpStored(c *storedCheck) {
	l := p.cur.Load()
	d := &p.dedup
	if d.gen != l.gen {
		// A new connection: what it says is learnt again.
		clear(d.streams)
		clear(d.windows)
		d.gen = l.gen
	}
	now := time.Now()
	var byStream map[string][]*rec
	for _, rc := range c.recs {
		stream, window, err := p.windowFor(l, rc.msg.Subject)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // nothing stores it, so nothing can store it twice
		}
		if err != nil {
			c.failure = err
			continue
		}
		if now.Sub(rc.firstSent) < window-window/4 {
			continue
		}
		if byStream == nil {
			byStream = make(map[string][]*rec)
		}
		byStream[stream] = append(byStream[stream], rc)
	}
	for stream, recs := range byStream {
		found, scanned, err := p.scanStream(l, stream, recs)
		for _, rc := range found {
			if c.stored == nil {
				c.stored = make(map[*rec]bool)
			}
			c.stored[rc] = true
		}
		if err != nil {
			c.failure = fmt.Errorf("scan stream %s after %d messages: %w", stream, scanned, err)
			continue
		}
		// The scan covered every copy sent until now.
		for _, rc := range recs {
			rc.firstSent = now
		}
	}
}

// settleStored ends the records the check found in the stream as acked
// duplicates and puts the others back with the retries. When JetStream
// could not say (it is starting, or busy), sending pauses as after a
// failed publish and they are checked again, a few times; after that they
// are sent anyway, since a lookup that keeps failing (a user who may not
// make consumers) must not hold them for ever.
func (p *Publisher) settleStored(c storedCheck, recs []*rec) {
	n := 0
	for _, rc := range recs {
		if c.stored[rc] {
			p.finishAcked(rc, true, time.Now())
			n++
			continue
		}
		p.retry = append(p.retry, rc)
		p.retrySort = true
	}
	if n > 0 {
		p.log.Info("events sent before an outage were found stored; not sending them again", "count", n)
	}
	defer p.startCheck()
	if c.failure == nil {
		p.dedup.failures = 0
		return
	}
	p.dedup.failures++
	hold := p.dedup.failures <= dedupMaxFailures
	if n, ok := p.dedup.log.allow(time.Now()); ok {
		p.log.Warn("could not look up events sent before an outage", "err", c.failure,
			"failures", p.dedup.failures, "sending_anyway", !hold, "suppressed", n)
	}
	if !hold {
		p.dedup.failures = 0
		return
	}
	p.checkDue = true
	p.holdUntil = time.Now().Add(p.backoff)
	p.backoff = min(2*p.backoff, p.o.backoffMax)
}

// windowFor returns the stream covering subj and its duplicate window.
func (p *Publisher) windowFor(l *link, subj string) (stream string, window time.Duration, err error) {
	d := &p.dedup
	stream, ok := d.streams[subj]
	if !ok {
		ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
		name, err := l.js.StreamNameBySubject(ctx, subj)
		cancel()
		if err != nil {
			return "", 0, fmt.Errorf("stream for %s: %w", subj, err)
		}
		if len(d.streams) >= 4096 {
			clear(d.streams)
		}
		stream = name
		d.streams[strings.Clone(subj)] = stream // subj points into a reused buffer
	}
	if p.o.dedupWindow > 0 {
		return stream, p.o.dedupWindow, nil
	}
	if window, ok = d.windows[stream]; ok {
		return stream, window, nil
	}
	ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
	s, err := l.js.Stream(ctx, stream)
	cancel()
	if err != nil {
		return "", 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	window = s.CachedInfo().Config.Duplicates
	if window <= 0 {
		window = 2 * time.Minute // the server's default
	}
	d.windows[stream] = window
	return stream, window, nil
}

// scanStream reads the headers of stream's messages stored since the
// earliest first send of recs, and returns the recs whose ids it holds.
func (p *Publisher) scanStream(l *link, stream string, recs []*rec) (found []*rec, scanned int, err error) {
	ctx, cancel := context.WithTimeout(p.life, dedupScanTimeout)
	defer cancel()
	s, err := l.js.Stream(ctx, stream)
	if err != nil {
		return nil, 0, err
	}
	from := recs[0].firstSent
	want := make(map[string]*rec, len(recs))
	var subjects []string
	seen := make(map[string]bool)
	for _, rc := range recs {
		if rc.firstSent.Before(from) {
			from = rc.firstSent
		}
		want[rc.id()] = rc
		if !seen[rc.msg.Subject] {
			seen[rc.msg.Subject] = true
			subjects = append(subjects, rc.msg.Subject)
		}
	}
	from = from.Add(-dedupClockSlack)
	cfg := jetstream.ConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &from,
		AckPolicy:         jetstream.AckNonePolicy,
		HeadersOnly:       true,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
	}
	if len(subjects) <= 32 { // else read everything: long filter lists cost the server more
		cfg.FilterSubjects = subjects
	}
	c, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, 0, err
	}
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), p.o.ackTimeout)
		_ = s.DeleteConsumer(dctx, c.CachedInfo().Name) // else the server drops it when inactive
		dcancel()
	}()
	pending := c.CachedInfo().NumPending
	for pending > 0 && len(want) > 0 {
		if scanned >= dedupScanMax {
			return found, scanned, errors.New("scan limit reached")
		}
		if err := ctx.Err(); err != nil {
			return found, scanned, err
		}
		batch, err := c.Fetch(int(min(pending, 256)), jetstream.FetchMaxWait(p.o.ackTimeout))
		if err != nil {
			return found, scanned, err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			id := m.Headers().Get(HeaderMsgID)
			if rc, ok := want[id]; ok {
				found = append(found, rc)
				delete(want, id)
			}
			if md, err := m.Metadata(); err == nil {
				pending = md.NumPending
			}
		}
		scanned += n
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return found, scanned, err
		}
		if n == 0 {
			break
		}
	}
	return found, scanned, nil
}
