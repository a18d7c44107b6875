package publisher

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// link is one NATS connection, with the publisher's ack inbox on it and a
// JetStream context for its questions to the server (stream lookups, dedup
// checks). A replaced link's inbox is closed with it, so its late answers
// are never read.
type link struct {
	gen     uint64
	nc      *nats.Conn
	js      jetstream.JetStream
	acks    *ackInbox
	status  chan nats.Status // CONNECTED resumes sending; RECONNECTING voids what is in flight; CLOSED starts a redial
	prevErr nats.ErrHandler  // the connection's handler before ours, which ours calls
	owned   bool             // dialled by the publisher, so closed by it
}

// newLink makes the publisher's context on base's connection, honouring its
// domain or API prefix, and listens to the connection's status and errors.
func (p *Publisher) newLink(base jetstream.JetStream, gen uint64, owned bool) (*link, error) {
	l := &link{gen: gen, nc: base.Conn(), owned: owned}
	opts := base.Options()
	jsOpts := []jetstream.JetStreamOpt{jetstream.WithDefaultTimeout(opts.DefaultTimeout)}
	if opts.ClientTrace != nil {
		jsOpts = append(jsOpts, jetstream.WithClientTrace(opts.ClientTrace))
	}
	var err error
	switch {
	case opts.Domain != "":
		l.js, err = jetstream.NewWithDomain(l.nc, opts.Domain, jsOpts...)
	case opts.APIPrefix != "":
		l.js, err = jetstream.NewWithAPIPrefix(l.nc, opts.APIPrefix, jsOpts...)
	default:
		l.js, err = jetstream.New(l.nc, jsOpts...)
	}
	if err != nil {
		return nil, err
	}
	// Room for every send in flight, as many more that timed out and were
	// sent again (their late answers still come), and slack.
	if l.acks, err = newAckInbox(l.nc, 2*p.o.maxInFlight+1024); err != nil {
		return nil, err
	}
	prev := l.nc.ErrorHandler()
	l.prevErr = prev
	l.nc.SetErrorHandler(func(c *nats.Conn, s *nats.Subscription, err error) {
		p.onAsyncError(gen, err)
		if prev != nil {
			prev(c, s, err)
		}
	})
	l.status = l.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.CLOSED)
	return l, nil
}

// detach ends the publisher's use of the connection. Answers still to come
// go to an inbox no one reads; send failures still queued carry the old gen,
// and so are ignored.
func (l *link) detach() {
	l.acks.close()
	l.nc.RemoveStatusListener(l.status)
	l.nc.SetErrorHandler(l.prevErr)
	if l.owned {
		l.nc.Close()
	}
}

// watchLink notices a connection nats.go has closed for good (reconnects ran
// out, or the same authorization error twice) and starts redialling.
func (p *Publisher) watchLink() {
	if !p.link.nc.IsClosed() || p.closing {
		return
	}
	if p.closedSince.Load() == 0 {
		p.closedSince.Store(time.Now().UnixNano())
		p.log.Error("nats connection closed for good; events are kept until a new one is made",
			"redial", p.o.redial != nil, "buffered", p.bufferedN.Load())
	}
	if p.o.redial == nil || p.redialing {
		return
	}
	p.redialing = true
	ctx, cancel := context.WithCancel(p.life)
	p.redialCancel = cancel
	p.bg.Add(1)
	go p.redialLoop(ctx, p.link.gen+1)
}

// redialLoop calls the redial function with backoff until it returns a
// connection, which it hands to the run goroutine.
func (p *Publisher) redialLoop(ctx context.Context, gen uint64) {
	defer p.bg.Done()
	wait := 100 * time.Millisecond
	log := logLimiter{every: 30 * time.Second}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		js, err := p.o.redial(ctx)
		if err == nil {
			var l *link
			if l, err = p.newLink(js, gen, true); err == nil {
				select {
				case p.redialed <- l:
				case <-ctx.Done():
					l.detach()
				}
				return
			}
			js.Conn().Close()
		}
		if ctx.Err() != nil {
			return
		}
		msg := err.Error()
		p.redialErr.Store(&msg)
		if n, ok := log.allow(time.Now()); ok {
			p.log.Warn("nats redial failed; retrying", "err", err, "backoff", wait, "suppressed", n)
		}
		timer.Reset(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// swap puts the redialled link in place of the closed one. The records that
// were in flight on the old one are sent again with the same ids, oldest
// first, before newer ones.
func (p *Publisher) swap(l *link) {
	old := p.link
	old.detach()
	p.link = l
	p.cur.Store(l)
	p.redialing = false
	p.redialCancel()
	p.redialCancel = nil
	p.closedSince.Store(0)
	p.redialErr.Store(nil)
	for n, rc := range p.inflight {
		delete(p.inflight, n)
		p.countRetry(ReasonDisconnected)
		p.pushRetry(rc)
	}
	p.oldestSent = p.sendN + 1
	p.voidUpTo = 0
	p.inFlightN.Store(0)
	p.holdUntil = time.Time{}
	p.backoff = p.o.backoffMin
	p.log.Info("nats connection replaced", "url", l.nc.ConnectedUrlRedacted(), "retrying", len(p.retry)-p.retryHead)
}

// stopRedial ends a redial in progress; run calls it as it returns.
func (p *Publisher) stopRedial() {
	if p.redialCancel != nil {
		p.redialCancel()
		p.redialCancel = nil
	}
	p.bg.Wait()
	select {
	case l := <-p.redialed:
		l.detach()
	default:
	}
}

// Healthy reports whether the publisher can get records to NATS, for a
// liveness probe. It is nil while the connection is open (connected, or
// reconnecting as nats.go does by itself, however long an outage lasts) and
// while a closed one is being redialled for less than WithUnhealthyAfter. It
// is an error once nats.go has closed the connection for good and no new one
// came within that time, or at once without WithRedial: restarting the
// process is then the way out, and the buffer is lost with it.
func (p *Publisher) Healthy() error {
	since := p.closedSince.Load()
	if since == 0 {
		return nil
	}
	d := time.Since(time.Unix(0, since)).Round(time.Millisecond)
	switch {
	case p.o.redial == nil:
		return fmt.Errorf("nats connection closed %s ago, and no redial is configured", d)
	case d < p.o.unhealthyAfter:
		return nil
	}
	if e := p.redialErr.Load(); e != nil {
		return fmt.Errorf("nats connection closed %s ago; redial failing: %s", d, *e)
	}
	return fmt.Errorf("nats connection closed %s ago; redial in progress", d)
}
