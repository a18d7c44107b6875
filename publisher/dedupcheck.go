package publisher

import (
	"context"
	"errors"
	"fmt"
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

// dedupState is what the check keeps between rounds.
type dedupState struct {
	streams  map[string]string        // subject → the stream that covers it
	windows  map[string]time.Duration // stream → its duplicate window
	failures int                      // lookups failed in a row
	log      logLimiter
}

func (d *dedupState) init() {
	d.streams = make(map[string]string)
	d.windows = make(map[string]time.Duration)
	d.log.every = 5 * time.Second
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

// checkStored looks up, in one scan per stream, the retries whose first send
// is older than three quarters of their stream's window. When JetStream
// cannot say (it is starting, or busy), sending pauses as after a failed
// publish, a few times; after that the records are sent anyway, since a
// lookup that keeps failing (a user who may not make consumers) must not
// hold them for ever.
func (p *Publisher) checkStored() {
	p.checkDue = false
	if p.closing {
		return
	}
	now := time.Now()
	var byStream map[string][]*rec
	var failure error
	for _, rc := range p.retry[p.retryHead:] {
		// The server allows no window under 100ms: younger records are safe
		// without asking anything.
		if rc.firstSent.IsZero() || now.Sub(rc.firstSent) < 75*time.Millisecond {
			continue
		}
		stream, window, err := p.windowFor(rc.msg.Subject)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // nothing stores it, so nothing can store it twice
		}
		if err != nil {
			failure = err
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
	var stored map[*rec]bool
	for stream, recs := range byStream {
		found, scanned, err := p.scanStream(stream, recs)
		for _, rc := range found {
			if stored == nil {
				stored = make(map[*rec]bool)
			}
			stored[rc] = true
		}
		if err != nil {
			failure = fmt.Errorf("scan stream %s after %d messages: %w", stream, scanned, err)
			continue
		}
		// The scan covered every copy sent until now.
		for _, rc := range recs {
			rc.firstSent = now
		}
	}
	p.finishStored(stored)
	if failure == nil {
		p.dedup.failures = 0
		return
	}
	p.dedup.failures++
	hold := p.dedup.failures <= dedupMaxFailures
	if n, ok := p.dedup.log.allow(time.Now()); ok {
		p.log.Warn("could not look up events sent before an outage", "err", failure,
			"failures", p.dedup.failures, "sending_anyway", !hold, "suppressed", n)
	}
	if !hold {
		p.dedup.failures = 0
		return
	}
	p.checkDue = true
	p.holdUntil = now.Add(p.backoff)
	p.backoff = min(2*p.backoff, p.o.backoffMax)
}

// finishStored ends the retries found in the stream as acked duplicates.
func (p *Publisher) finishStored(stored map[*rec]bool) {
	if len(stored) == 0 {
		return
	}
	j := p.retryHead
	for _, rc := range p.retry[p.retryHead:] {
		if stored[rc] {
			p.finishAcked(rc, true, time.Now())
			continue
		}
		p.retry[j] = rc
		j++
	}
	clear(p.retry[j:])
	p.retry = p.retry[:j]
	p.log.Info("events sent before an outage were found stored; not sending them again", "count", len(stored))
}

// windowFor returns the stream covering subj and its duplicate window.
func (p *Publisher) windowFor(subj string) (stream string, window time.Duration, err error) {
	d := &p.dedup
	stream, ok := d.streams[subj]
	if !ok {
		ctx, cancel := context.WithTimeout(p.life, p.o.ackTimeout)
		name, err := p.link.js.StreamNameBySubject(ctx, subj)
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
	s, err := p.link.js.Stream(ctx, stream)
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
func (p *Publisher) scanStream(stream string, recs []*rec) (found []*rec, scanned int, err error) {
	ctx, cancel := context.WithTimeout(p.life, dedupScanTimeout)
	defer cancel()
	s, err := p.link.js.Stream(ctx, stream)
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
