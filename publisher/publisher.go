package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers every message carries (the README, "Subjects and messages").
const (
	HeaderMsgID         = jetstream.MsgIDHeader // "Nats-Msg-Id"
	HeaderTopic         = "Genesys-Topic"
	HeaderVersion       = "Genesys-Version"
	HeaderCorrelationID = "Genesys-Correlation-Id"
	HeaderReceivedAt    = "Genesys-Received-At"
	// HeaderGap marks a record of gcnats' own (Record.Gap) saying which
	// topics had no receiving socket and when; its value is "true".
	HeaderGap = "Gcnats-Gap"
)

// Reasons passed to [Observer] callbacks. They are a small fixed set so they
// can be metric labels.
const (
	// Retried: the publish is sent again with the same id.
	ReasonTimeout      = "timeout"       // no ack within the ack timeout
	ReasonDisconnected = "disconnected"  // the connection dropped with the ack outstanding
	ReasonNoResponders = "no_responders" // no stream answered, yet one covers the subject (restart, leader election)
	ReasonServer       = "server"        // the server could not store it now (5xx: storage full, store failure; the account's quota full)
	ReasonInProcess    = "in_process"    // a replicated stream still agrees on an earlier send of the same id (409, 10158)
	ReasonClient       = "client"        // nats.go did not send it (connection closed, reconnect buffer full)

	// Failed: no retry can store the event; it is counted and logged.
	ReasonNoStream = "no_stream" // no stream covers the subject
	ReasonRejected = "rejected"  // the stream refused it (4xx: too large for the stream, sealed, …)
	ReasonTooLarge = "too_large" // larger than the server's max payload
	ReasonInvalid  = "invalid"   // bad subject, or the reply was not a JetStream ack
	ReasonDenied   = "denied"    // the NATS user may not publish to the subject
	ReasonUnacked  = "unacked"   // no ack in WithMaxAttempts sends while JetStream answered (later records acked)
)

var (
	// ErrClosed is returned by Publish after Close.
	ErrClosed = errors.New("publisher closed")
	// ErrInvalidRecord is returned by Publish for a record that can never be
	// published (no subject, a subject NATS forbids, too large). Nothing is
	// accepted.
	ErrInvalidRecord = errors.New("invalid record")
	// ErrNotStored is returned (wrapped) by Flush when records it waited for
	// ended without being stored, for a reason no retry can fix.
	ErrNotStored = errors.New("events not stored")
)

// Stats are counters since New, and the current state.
type Stats struct {
	Accepted   uint64 // records taken by Publish
	Acked      uint64 // records stored (JetStream acknowledged them)
	Duplicates uint64 // of Acked, those JetStream already had (PubAck.Duplicate)
	Retried    uint64 // publish attempts that failed and were scheduled again
	Failed     uint64 // accepted records ended without being stored (see Reason* "Failed")
	Rejected   uint64 // records Publish refused with ErrInvalidRecord

	InFlight      int   // publishes awaiting an ack
	Buffered      int   // records accepted and not yet acked or failed
	BufferedBytes int64 // the memory they take, the measure WithBufferBytes limits
}

// Observer receives events for metrics. Any field may be nil. Callbacks run on
// the publisher's goroutines, some with an internal lock held: they must be
// quick and must not call Publish, Flush or Close (Stats is fine).
type Observer struct {
	// Acked reports a stored record with the time from Publish to its ack,
	// retries included; duplicate is PubAck.Duplicate.
	Acked func(latency time.Duration, duplicate bool)
	// Retried reports a failed attempt that will be retried.
	Retried func(reason string)
	// Failed reports a record that will never be stored: refused by Publish
	// or given up later.
	Failed func(reason string)
	// BufferedBytes reports the buffered bytes after every change.
	BufferedBytes func(n int64)
}

// Publisher publishes records to JetStream asynchronously and retries each
// until it is acked. It is safe for concurrent use.
//
// Records are sent in the order Publish accepted them, from one goroutine, at
// most WithMaxInFlight awaiting acks. After a failure, sending pauses (backoff)
// and resumes with the failed records, oldest first, before newer ones; while
// the connection is down it waits for the reconnect rather than filling
// nats.go's reconnect buffer. So the stream holds records in acceptance order
// except around a failure, where a retried record can land after newer ones
// that had been stored already. A record that fails on its own (denied, or
// never acked while others are) neither pauses the others nor stays for
// ever.
//
// A stream that loses its leader costs its records the election, not the ack
// timeout: sends answered "no responders" wait a short pause, alone, and
// are sent again, and the sends still unanswered to the same subject
// (which went to the lost leader) with them; a send still unanswered when a
// later send to its subject is acked is sent again at once. What a failure
// needs to ask JetStream (is a stream there, does it answer, which records
// an outage's retries find stored) is asked on goroutines of their own:
// the run goroutine never waits for JetStream.
type Publisher struct {
	o   options // set by New, read only after
	log *slog.Logger

	cur atomic.Pointer[link] // loop.link, for Publish, Healthy and Conn

	buffer  // what Publish accepted: guarded by its mu
	results // outcomes handed to run by other goroutines: guarded by resMu

	// sendMu guards loop. The run goroutine holds it while it works and
	// Publish takes it, never waiting, to send a record itself while run
	// sleeps (see sendInline).
	sendMu sync.Mutex
	loop   // see loop.go

	freeList // finished records kept for reuse, see record.go: guarded by freeMu

	// ask is shared with the asker goroutine, which asks JetStream what
	// some failures need to know, off the run goroutine (lookups.go).
	ask asker

	health // atomics, for Healthy; redialed hands over a new link

	lifecycle
	counters // atomics, for Stats
}

// buffer is what Publish accepted and has not been released; mu guards it.
type buffer struct {
	mu        sync.Mutex
	queue     fifo // accepted, never sent
	bufBytes  int64
	peakBytes int64 // highest bufBytes since the last trim of the free list
	buffered  int
	nextSeq   uint64
	space     chan struct{} // closed when bytes are released; made by the first waiter
	closed    bool
	flushes   []*flushWaiter
	// notStored counts records failed for good that no Flush has reported.
	notStored int
}

// results are outcomes other goroutines hand to run; resMu guards the
// slices. wake and waiting are safe to use without it.
type results struct {
	resMu    sync.Mutex
	sendErrs []sendError // inline sends nats.go refused
	denials  []denial    // permission violations the connection reported
	wake     chan struct{}
	// waiting counts Flush, Close and Publish calls waiting for the buffer
	// to drain: while any waits, every ack wakes the run goroutine.
	waiting atomic.Int32
}

// freeList holds finished records for reuse; freeMu guards it.
type freeList struct {
	freeMu    sync.Mutex
	free      []*rec
	freeBytes int64
	retain    int64
}

// health is the connection's state as Healthy sees it, and the redial's
// hand-over to run.
type health struct {
	redialed    chan *link
	bg          sync.WaitGroup // redial goroutines
	closedSince atomic.Int64   // unix nanos the connection was found closed; 0: it is not
	redialErr   atomic.Pointer[string]
}

// lifecycle: life ends when Close stops the run goroutine, cutting short
// its requests to the server (lookups, scans, redials); quit stops run,
// which closes done as it returns.
type lifecycle struct {
	life context.Context
	stop context.CancelFunc
	quit chan struct{}
	done chan struct{}
}

// counters are the Stats, kept as atomics so Stats takes no lock.
type counters struct {
	accepted, acked, dups, retried, failed, rejected atomic.Uint64
	inFlightN, bufferedN, bufBytesN                  atomic.Int64
}

type flushWaiter struct {
	target    uint64 // records up to this sequence
	remaining int
	done      chan struct{}
}

// New starts a Publisher on the connection of js, honouring its domain or API
// prefix. It uses an async-publish context of its own, so its limits and
// handlers do not touch other users of js.
//
// The connection should refuse publishes while it reconnects, as those
// [Connect] makes do (nats.ReconnectBufSize(-1)). nats.go otherwise keeps
// them and writes them out when it is back, after the publisher has given
// them up for lost: a record first stored longer ago than the stream's
// duplicate window is then stored twice. New logs a warning for a
// connection that keeps them.
func New(js jetstream.JetStream, opts ...Option) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("new publisher: nil JetStream")
	}
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("new publisher: %w", err)
		}
	}
	p := &Publisher{
		o:         o,
		log:       o.log,
		results:   results{wake: make(chan struct{}, 1)},
		freeList:  freeList{retain: o.bufferBytes},
		ask:       asker{wake: make(chan struct{}, 1), done: make(chan struct{})},
		health:    health{redialed: make(chan *link, 1)},
		lifecycle: lifecycle{quit: make(chan struct{}), done: make(chan struct{})},
	}
	p.life, p.stop = context.WithCancel(context.Background())
	p.loop.init(o)
	p.lazy = time.NewTimer(time.Hour)
	p.lazy.Stop()
	l, err := p.newLink(js, 1, false)
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	p.link = l
	p.cur.Store(l)
	if n := l.nc.Opts.ReconnectBufSize; n >= 0 {
		p.log.Warn("the nats connection keeps publishes made while it reconnects; an event can then be stored twice after an outage (set nats.ReconnectBufSize(-1), as publisher.Connect does)",
			"reconnect_buf_size", n)
	}
	go p.run()
	go p.runAsker()
	return p, nil
}

// Publish accepts r for publishing: it copies r and returns; the record is
// then sent and retried until JetStream acks it.
//
// It blocks while the buffer is full (backpressure) and then returns ctx.Err()
// if ctx ends first; nothing is accepted in that case. A record is never
// dropped once accepted, except for reasons no retry can fix, which are
// counted (Stats.Failed, Observer.Failed) and logged: no stream covers the
// subject (asked of the server, so a restart is not mistaken for it), the
// stream refuses the message with a 4xx error (too large for it, sealed), the
// NATS user may not publish to the subject, the reply is not a JetStream ack,
// or it went unacked in WithMaxAttempts sends while records sent after it
// were acked. Every other error (timeouts, disconnects, no responders, 5xx
// such as storage full) is retried for as long as it takes.
//
// A record that can never be published (no subject, a subject with spaces,
// empty tokens or wildcards, larger than the server's max payload) is refused
// at once with an error wrapping ErrInvalidRecord.
func (p *Publisher) Publish(ctx context.Context, r *Record) error {
	if reason, err := p.validate(r); err != nil {
		p.rejected.Add(1)
		p.obsFailed(reason)
		return err
	}
	rc := p.get()
	rc.fill(r)

	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			p.put(rc)
			return ErrClosed
		}
		if p.bufBytes == 0 || p.bufBytes+rc.size <= p.o.bufferBytes {
			break
		}
		if p.space == nil {
			p.space = make(chan struct{})
		}
		space := p.space
		p.mu.Unlock()
		p.waiting.Add(1)
		p.signal() // acks already in may free the room
		select {
		case <-space:
		case <-ctx.Done():
			p.waiting.Add(-1)
			p.put(rc)
			return ctx.Err()
		}
		p.waiting.Add(-1)
		p.mu.Lock()
	}
	p.nextSeq++
	rc.seq = p.nextSeq
	rc.accepted = time.Now()
	// Sent here or queued for run: never past records queued before it.
	inline := p.queue.empty() && p.sendMu.TryLock()
	if inline && !p.canSendInline() {
		p.sendMu.Unlock()
		inline = false
	}
	if !inline {
		p.queue.push(rc)
	}
	p.buffered++
	p.bufBytes += rc.size
	p.peakBytes = max(p.peakBytes, p.bufBytes)
	p.bufferedN.Store(int64(p.buffered))
	p.bufBytesN.Store(p.bufBytes)
	p.obsBuffered(p.bufBytes)
	p.mu.Unlock()

	p.accepted.Add(1)
	if inline {
		p.sendInline(rc)
		return nil
	}
	p.signal()
	return nil
}

// Flush returns when every record accepted before the call is acked or has
// failed for good, or when ctx ends. Records that failed for good since the
// previous Flush returned make it return an error wrapping ErrNotStored.
func (p *Publisher) Flush(ctx context.Context) error {
	p.mu.Lock()
	if p.buffered == 0 {
		err := p.reportNotStored()
		p.mu.Unlock()
		return err
	}
	w := &flushWaiter{target: p.nextSeq, remaining: p.buffered, done: make(chan struct{})}
	p.flushes = append(p.flushes, w)
	p.mu.Unlock()
	p.waiting.Add(1)
	defer p.waiting.Add(-1)
	p.signal() // acks already in, that did not wake run, may finish it

	select {
	case <-w.done:
	case <-ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		select {
		case <-w.done: // finished as ctx ended: report the flush, not ctx
			return p.reportNotStored()
		default:
			p.flushes = slices.DeleteFunc(p.flushes, func(x *flushWaiter) bool { return x == w })
			return fmt.Errorf("flush: %w", ctx.Err())
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reportNotStored()
}

// reportNotStored is called with mu held.
func (p *Publisher) reportNotStored() error {
	if n := p.notStored; n > 0 {
		p.notStored = 0
		return fmt.Errorf("flush: %d %w", n, ErrNotStored)
	}
	return nil
}

// Close stops accepting (blocked and later Publish calls return ErrClosed),
// flushes within ctx and stops the publisher's goroutines, redials included.
// It closes the connections the publisher dialled itself (WithRedial), not
// the one given to New. It returns how many accepted records were not acked;
// those are logged and lost.
func (p *Publisher) Close(ctx context.Context) (unflushed int, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return 0, ErrClosed
	}
	p.closed = true
	if p.space != nil {
		close(p.space)
		p.space = nil
	}
	p.mu.Unlock()

	ferr := p.Flush(ctx)

	close(p.quit)
	p.stop()
	<-p.done
	<-p.ask.done
	// Acks that came in as ctx ended still count. The run goroutine is
	// gone, and Publish sends nothing more (closed), once a send it began
	// before Close has let go of the lock.
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.closing = true
	p.processResults(nil)
	p.release()
	p.link.detach()

	p.mu.Lock()
	unflushed = p.buffered
	p.mu.Unlock()
	if unflushed > 0 {
		p.log.Error("publisher closed with events not acknowledged; they are lost",
			"count", unflushed, "err", ferr)
		return unflushed, fmt.Errorf("close publisher: %d events not acknowledged: %w", unflushed, ferr)
	}
	return 0, nil
}

// Stats returns the counters; it takes no lock.
func (p *Publisher) Stats() Stats {
	return Stats{
		Accepted:      p.accepted.Load(),
		Acked:         p.acked.Load(),
		Duplicates:    p.dups.Load(),
		Retried:       p.retried.Load(),
		Failed:        p.failed.Load(),
		Rejected:      p.rejected.Load(),
		InFlight:      int(p.inFlightN.Load()),
		Buffered:      int(p.bufferedN.Load()),
		BufferedBytes: p.bufBytesN.Load(),
	}
}

// Conn is the connection the publisher uses now; after a redial it is not the
// one given to New.
func (p *Publisher) Conn() *nats.Conn { return p.cur.Load().nc }

// JetStream is a JetStream context on Conn (for AccountInfo and the like).
func (p *Publisher) JetStream() jetstream.JetStream { return p.cur.Load().js }
