package publisher

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers every message carries (DESIGN.md, "Subjects and messages").
const (
	HeaderMsgID         = jetstream.MsgIDHeader // "Nats-Msg-Id"
	HeaderTopic         = "Genesys-Topic"
	HeaderVersion       = "Genesys-Version"
	HeaderCorrelationID = "Genesys-Correlation-Id"
	HeaderReceivedAt    = "Genesys-Received-At"
)

// Reasons passed to [Observer] callbacks. They are a small fixed set so they
// can be metric labels.
const (
	// Retried: the publish is sent again with the same id.
	ReasonTimeout      = "timeout"       // no ack within the ack timeout
	ReasonDisconnected = "disconnected"  // the connection dropped with the ack outstanding
	ReasonNoResponders = "no_responders" // no stream answered, yet one covers the subject (restart, leader election)
	ReasonServer       = "server"        // the server could not store it now (5xx: storage full, store failure)
	ReasonClient       = "client"        // nats.go did not send it (connection closed, reconnect buffer full)

	// Failed: no retry can store the event; it is counted and logged.
	ReasonNoStream = "no_stream" // no stream covers the subject
	ReasonRejected = "rejected"  // the stream refused it (4xx: too large for the stream, sealed, …)
	ReasonTooLarge = "too_large" // larger than the server's max payload
	ReasonInvalid  = "invalid"   // bad subject, or the reply was not a JetStream ack
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

// Record is one event to publish. Publish copies what it keeps: the caller
// may reuse every buffer as soon as Publish returns.
type Record struct {
	Subject       []byte
	ID            []byte    // Nats-Msg-Id; empty: MsgID(Topic, CorrelationID, Data)
	Topic         []byte    // Genesys-Topic
	Version       []byte    // Genesys-Version; header omitted when empty
	CorrelationID []byte    // Genesys-Correlation-Id; header omitted when empty
	ReceivedAt    time.Time // Genesys-Received-At, RFC 3339 with nanoseconds, UTC; zero: now
	Data          []byte    // payload
}

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
	BufferedBytes int64 // their bytes, the measure WithBufferBytes limits
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

// Option configures a Publisher.
type Option func(*options) error

type options struct {
	bufferBytes int64
	maxInFlight int
	ackTimeout  time.Duration
	backoffMin  time.Duration
	backoffMax  time.Duration
	log         *slog.Logger
	obs         Observer
}

// WithBufferBytes limits the bytes of records accepted and not yet acked
// (default 64 MiB). Publish blocks while the limit is reached. A record larger
// than the limit is still accepted when nothing else is buffered.
func WithBufferBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("buffer bytes must be positive, got %d", n)
		}
		o.bufferBytes = n
		return nil
	}
}

// WithMaxInFlight limits publishes awaiting an ack (default 4096).
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max in flight must be positive, got %d", n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithAckTimeout sets how long a publish waits for its ack before it is
// retried (default 5s). It is what guarantees that no publish waits forever,
// whatever became of the message.
func WithAckTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("ack timeout must be positive, got %s", d)
		}
		o.ackTimeout = d
		return nil
	}
}

// WithRetryBackoff sets the pause after a failed round of publishes, doubling
// from min to max while failures continue (default 50ms to 2s). An ack resets
// it to min.
func WithRetryBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) error {
		if minWait <= 0 || maxWait < minWait {
			return fmt.Errorf("retry backoff needs 0 < min <= max, got %s and %s", minWait, maxWait)
		}
		o.backoffMin, o.backoffMax = minWait, maxWait
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithObserver sets the callbacks for metrics.
func WithObserver(obs Observer) Option {
	return func(o *options) error {
		o.obs = obs
		return nil
	}
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
// that had been stored already.
type Publisher struct {
	js  jetstream.JetStream // our own context: its acks, handlers and limits are ours alone
	nc  *nats.Conn
	o   options
	log *slog.Logger
	// pubOpts turns off nats.go's own no-responders retry. That retry can
	// report a second outcome for one publish when it races an ack timeout,
	// and records are matched to outcomes by their *nats.Msg, so exactly one
	// outcome per send is what keeps a pooled record from being acked for
	// another. Our retry covers no responders anyway.
	pubOpts []jetstream.PublishOpt

	mu       sync.Mutex
	queue    fifo // accepted, never sent
	bufBytes int64
	buffered int
	nextSeq  uint64
	space    chan struct{} // closed when bytes are released; made by the first waiter
	closed   bool
	flushes  []*flushWaiter
	// notStored counts records failed for good that no Flush has reported.
	notStored int

	resMu   sync.Mutex
	results []result // outcomes from nats.go, in arrival order
	wake    chan struct{}

	// Owned by the run goroutine.
	inflight  map[*nats.Msg]*rec
	retry     []*rec // failed, to be sent again in acceptance order
	retryHead int
	retrySort bool
	holdUntil time.Time
	backoff   time.Duration
	finished  []*rec
	batch     []*rec
	spare     []result
	noStream  map[string]bool
	closing   bool // Close is draining the last outcomes: ask the server nothing
	failLog   logLimiter
	retryLog  logLimiter

	// Finished records are kept for reuse, up to retain (= the buffer limit)
	// bytes of buffers, so memory stays near the peak buffered. Not
	// a sync.Pool: that is emptied at every GC, and a busy sidecar (or an
	// embedded server in the same process) collects often enough that most
	// records would allocate their buffer afresh.
	freeMu    sync.Mutex
	free      []*rec
	freeBytes int64
	retain    int64

	connected chan nats.Status
	quit      chan struct{}
	done      chan struct{}

	accepted, acked, dups, retried, failed, rejected atomic.Uint64
	inFlightN, bufferedN, bufBytesN                  atomic.Int64
}

type result struct {
	msg *nats.Msg
	ack *jetstream.PubAck
	err error
}

type flushWaiter struct {
	target    uint64 // records up to this sequence
	remaining int
	done      chan struct{}
}

// rec is one accepted record: a single buffer holds all its bytes, and the
// nats.Msg and header strings point into it.
type rec struct {
	msg      nats.Msg
	vals     [5]string
	buf      []byte
	size     int64
	seq      uint64
	accepted time.Time
	failed   bool
}

// maxPooledBuf keeps one rare huge event from pinning its buffer.
const maxPooledBuf = 256 << 10

// New starts a Publisher on the connection of js, honouring its domain or API
// prefix. It uses an async-publish context of its own, so its limits and
// handlers do not touch other users of js.
func New(js jetstream.JetStream, opts ...Option) (*Publisher, error) {
	if js == nil {
		return nil, errors.New("new publisher: nil JetStream")
	}
	o := options{
		bufferBytes: 64 << 20,
		maxInFlight: 4096,
		ackTimeout:  5 * time.Second,
		backoffMin:  50 * time.Millisecond,
		backoffMax:  2 * time.Second,
		log:         slog.Default(),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("new publisher: %w", err)
		}
	}
	p := &Publisher{
		nc:       js.Conn(),
		o:        o,
		log:      o.log,
		pubOpts:  []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)},
		wake:     make(chan struct{}, 1),
		inflight: make(map[*nats.Msg]*rec, o.maxInFlight),
		backoff:  o.backoffMin,
		noStream: make(map[string]bool),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	p.failLog.every = time.Second
	p.retryLog.every = 5 * time.Second
	p.retain = o.bufferBytes

	base := js.Options()
	jsOpts := []jetstream.JetStreamOpt{
		// One more than we ever have in flight: nats.go must never stall us.
		jetstream.WithPublishAsyncMaxPending(o.maxInFlight + 1),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr),
		jetstream.WithDefaultTimeout(base.DefaultTimeout),
	}
	if base.ClientTrace != nil {
		jsOpts = append(jsOpts, jetstream.WithClientTrace(base.ClientTrace))
	}
	var err error
	switch {
	case base.Domain != "":
		p.js, err = jetstream.NewWithDomain(p.nc, base.Domain, jsOpts...)
	case base.APIPrefix != "":
		p.js, err = jetstream.NewWithAPIPrefix(p.nc, base.APIPrefix, jsOpts...)
	default:
		p.js, err = jetstream.New(p.nc, jsOpts...)
	}
	if err != nil {
		return nil, fmt.Errorf("new publisher: %w", err)
	}
	// Sending pauses while disconnected (so nats.go's reconnect buffer does
	// not fill with messages we would retry anyway); this wakes it.
	p.connected = p.nc.StatusChanged(nats.CONNECTED)
	go p.run()
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
// stream refuses the message with a 4xx error (too large for it, sealed), or
// the reply is not a JetStream ack. Every other error (timeouts, disconnects,
// no responders, 5xx such as storage full) is retried.
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
		select {
		case <-space:
		case <-ctx.Done():
			p.put(rc)
			return ctx.Err()
		}
		p.mu.Lock()
	}
	p.nextSeq++
	rc.seq = p.nextSeq
	rc.accepted = time.Now()
	p.queue.push(rc)
	p.buffered++
	p.bufBytes += rc.size
	p.bufferedN.Store(int64(p.buffered))
	p.bufBytesN.Store(p.bufBytes)
	p.obsBuffered(p.bufBytes)
	p.mu.Unlock()

	p.accepted.Add(1)
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
// flushes within ctx and stops the publisher's goroutines. It returns how many
// accepted records were not acked; those are logged and lost.
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
	<-p.done
	// Acks that came in as ctx ended still count: the run goroutine is gone,
	// so this goroutine owns its state now.
	p.closing = true
	p.processResults()
	p.release()
	// Ends nats.go's reply subscription and its status goroutine; any
	// outcome it still reports lands in results nobody reads.
	p.js.CleanupPublisher()
	p.nc.RemoveStatusListener(p.connected)

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

func (p *Publisher) validate(r *Record) (reason string, err error) {
	if r == nil {
		return ReasonInvalid, fmt.Errorf("%w: nil", ErrInvalidRecord)
	}
	if err := checkSubject(r.Subject); err != nil {
		return ReasonInvalid, fmt.Errorf("%w: subject %q: %v", ErrInvalidRecord, r.Subject, err)
	}
	// The header block as nats.go writes it: "NATS/1.0\r\n", "K: V\r\n"…, "\r\n".
	size := 12 + len(HeaderMsgID) + max(len(r.ID), MsgIDLen) + len(HeaderTopic) + len(r.Topic) +
		len(HeaderReceivedAt) + len(time.RFC3339Nano) + 3*4 + len(r.Data)
	if len(r.Version) > 0 {
		size += len(HeaderVersion) + len(r.Version) + 4
	}
	if len(r.CorrelationID) > 0 {
		size += len(HeaderCorrelationID) + len(r.CorrelationID) + 4
	}
	if limit := p.nc.MaxPayload(); limit > 0 && int64(size) > limit {
		return ReasonTooLarge, fmt.Errorf("%w: %d bytes exceed the server's max payload of %d", ErrInvalidRecord, size, limit)
	}
	return "", nil
}

// checkSubject refuses what NATS would refuse or misread as a publish subject.
func checkSubject(s []byte) error {
	if len(s) == 0 {
		return errors.New("empty")
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) {
			switch c := s[i]; {
			case c <= ' ' || c == 0x7f:
				return errors.New("contains whitespace or a control character")
			case c != '.':
				continue
			}
		}
		tok := s[start:i]
		switch {
		case len(tok) == 0:
			return errors.New("empty token")
		case len(tok) == 1 && (tok[0] == '*' || tok[0] == '>'):
			return errors.New("wildcard token")
		}
		start = i + 1
	}
	return nil
}

// fill copies r into rc's single buffer and points msg and headers into it.
func (rc *rec) fill(r *Record) {
	idLen := len(r.ID)
	if idLen == 0 {
		idLen = MsgIDLen
	}
	n := len(r.Subject) + idLen + len(r.Topic) + len(r.Version) + len(r.CorrelationID) +
		len(time.RFC3339Nano) + 6 + len(r.Data) // a zone offset can be 5 bytes longer than "Z"
	b := rc.buf[:0]
	if cap(b) < n {
		// Some slack, so the next record of about this size (ids and
		// times vary by a few bytes) can reuse the buffer.
		b = make([]byte, 0, n+n/16+64)
	}

	b = append(b, r.Subject...)
	subj := len(b)
	if len(r.ID) > 0 {
		b = append(b, r.ID...)
	} else {
		b = MsgID(b, r.Topic, r.CorrelationID, r.Data)
	}
	id := len(b)
	b = append(b, r.Topic...)
	topic := len(b)
	b = append(b, r.Version...)
	version := len(b)
	b = append(b, r.CorrelationID...)
	corr := len(b)
	// A header value cannot hold CR or LF: a frame's escaped \r or \n,
	// decoded by the peek, would end the header block early.
	for i := id; i < corr; i++ {
		if b[i] == '\r' || b[i] == '\n' {
			b[i] = ' '
		}
	}
	at := r.ReceivedAt
	if at.IsZero() {
		at = time.Now()
	}
	b = at.UTC().AppendFormat(b, time.RFC3339Nano)
	recv := len(b)
	b = append(b, r.Data...)

	// Strings over the buffer rather than copies: the buffer is not written
	// again until the record is acked (or failed) and nats.go is done with
	// the message, see put.
	rc.buf = b
	rc.size = int64(len(b))
	h := rc.msg.Header
	rc.msg.Subject = bstr(b[:subj])
	rc.msg.Data = b[recv:len(b):len(b)]
	rc.vals[0] = bstr(b[subj:id])
	rc.vals[1] = bstr(b[id:topic])
	rc.vals[2] = bstr(b[topic:version])
	rc.vals[3] = bstr(b[version:corr])
	rc.vals[4] = bstr(b[corr:recv])
	h[HeaderMsgID] = rc.vals[0:1:1]
	h[HeaderTopic] = rc.vals[1:2:2]
	if version > topic {
		h[HeaderVersion] = rc.vals[2:3:3]
	} else {
		delete(h, HeaderVersion)
	}
	if corr > version {
		h[HeaderCorrelationID] = rc.vals[3:4:4]
	} else {
		delete(h, HeaderCorrelationID)
	}
	h[HeaderReceivedAt] = rc.vals[4:5:5]
}

func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

func (p *Publisher) get() *rec {
	p.freeMu.Lock()
	if n := len(p.free); n > 0 {
		rc := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.freeBytes -= int64(cap(rc.buf))
		p.freeMu.Unlock()
		return rc
	}
	p.freeMu.Unlock()
	rc := &rec{}
	rc.msg.Header = make(nats.Header, len(rc.vals))
	return rc
}

// put keeps rc for reuse. Only for records nats.go holds no more: never sent,
// or after the one outcome of their last send.
func (p *Publisher) put(rc *rec) {
	rc.msg.Subject, rc.msg.Data = "", nil
	rc.vals = [5]string{}
	rc.failed = false
	if cap(rc.buf) > maxPooledBuf {
		rc.buf = nil
	}
	p.freeMu.Lock()
	if p.freeBytes+int64(cap(rc.buf)) <= p.retain {
		p.free = append(p.free, rc)
		p.freeBytes += int64(cap(rc.buf))
	}
	p.freeMu.Unlock()
}

// onAck and onErr run on nats.go's goroutines, onErr sometimes with nats.go's
// publisher lock held: they only queue the outcome.
func (p *Publisher) onAck(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	p.addResult(result{msg: m, ack: ack})
}

func (p *Publisher) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	p.addResult(result{msg: m, err: err})
}

func (p *Publisher) addResult(r result) {
	p.resMu.Lock()
	p.results = append(p.results, r)
	p.resMu.Unlock()
	p.signal()
}

func (p *Publisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *Publisher) run() {
	defer close(p.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	connected := p.connected
	for {
		p.processResults()
		var timerC <-chan time.Time
		if wait := p.send(); wait > 0 {
			timer.Reset(wait)
			timerC = timer.C
		}
		p.release()
		select {
		case <-p.wake:
		case _, ok := <-connected:
			if !ok {
				connected = nil // never spin on a closed listener
			}
		case <-timerC:
		case <-p.quit:
			return
		}
	}
}

func (p *Publisher) processResults() {
	p.resMu.Lock()
	res := p.results
	p.results = p.spare[:0]
	p.resMu.Unlock()
	if len(res) == 0 {
		p.spare = res
		return
	}
	clear(p.noStream)
	for _, r := range res {
		rc, ok := p.inflight[r.msg]
		if !ok {
			continue
		}
		delete(p.inflight, r.msg)
		if r.err != nil {
			p.fail(rc, r.err)
			continue
		}
		p.acked.Add(1)
		if r.ack.Duplicate {
			p.dups.Add(1)
		}
		if p.o.obs.Acked != nil {
			p.o.obs.Acked(time.Since(rc.accepted), r.ack.Duplicate)
		}
		p.backoff = p.o.backoffMin
		p.finished = append(p.finished, rc)
	}
	p.inFlightN.Store(int64(len(p.inflight)))
	clear(res)
	p.spare = res[:0]
}

// send publishes retries first, then new records, in acceptance order, while
// connected and not pausing after a failure. It returns how long the pause
// still lasts.
func (p *Publisher) send() time.Duration {
	defer func() { p.inFlightN.Store(int64(len(p.inflight))) }()
	for {
		if wait := time.Until(p.holdUntil); wait > 0 {
			return wait
		}
		if !p.nc.IsConnected() {
			return 0 // the CONNECTED status wakes run
		}
		room := p.o.maxInFlight - len(p.inflight)
		if room <= 0 {
			return 0
		}
		batch := p.next(room)
		if len(batch) == 0 {
			return 0
		}
		hold := p.holdUntil
		for i, rc := range batch {
			if !p.holdUntil.Equal(hold) {
				// A failure started a pause: the rest waits with the retries,
				// still in order, without counting as retried.
				p.pushRetry(batch[i:]...)
				break
			}
			p.inflight[&rc.msg] = rc
			if _, err := p.js.PublishMsgAsync(&rc.msg, p.pubOpts...); err != nil {
				delete(p.inflight, &rc.msg)
				p.fail(rc, err)
			}
		}
		clear(batch)
	}
}

// next takes up to n records to send: the oldest retries first.
func (p *Publisher) next(n int) []*rec {
	p.batch = p.batch[:0]
	if p.retryHead < len(p.retry) {
		if p.retrySort {
			n := copy(p.retry, p.retry[p.retryHead:])
			clear(p.retry[n:])
			p.retry, p.retryHead = p.retry[:n], 0
			slices.SortFunc(p.retry, func(a, b *rec) int { return cmp.Compare(a.seq, b.seq) })
			p.retrySort = false
		}
		k := min(n, len(p.retry)-p.retryHead)
		p.batch = append(p.batch, p.retry[p.retryHead:p.retryHead+k]...)
		clear(p.retry[p.retryHead : p.retryHead+k])
		p.retryHead += k
		if p.retryHead == len(p.retry) {
			p.retry, p.retryHead = p.retry[:0], 0
		}
		return p.batch
	}
	p.mu.Lock()
	for range n {
		rc := p.queue.pop()
		if rc == nil {
			break
		}
		p.batch = append(p.batch, rc)
	}
	p.mu.Unlock()
	return p.batch
}

func (p *Publisher) pushRetry(rcs ...*rec) {
	p.retry = append(p.retry, rcs...)
	p.retrySort = true
}

// fail handles a failed send of rc: retry it, or give it up if no retry can
// help.
func (p *Publisher) fail(rc *rec, err error) {
	reason, permanent := classify(err)
	if reason == ReasonNoResponders && p.uncovered(rc.msg.Subject) {
		reason, permanent = ReasonNoStream, true
		err = fmt.Errorf("no stream covers subject %s", rc.msg.Subject) // formatted: a copy
	}
	if permanent {
		p.failed.Add(1)
		p.obsFailed(reason)
		if n, ok := p.failLog.allow(time.Now()); ok {
			// Clones: the strings point into a buffer that will be reused,
			// and a handler may keep them.
			p.log.Error("event not stored: no retry can store it", "reason", reason, "err", err,
				"subject", strings.Clone(rc.msg.Subject), "topic", strings.Clone(rc.vals[1]),
				"id", strings.Clone(rc.vals[0]), "suppressed", n)
		}
		rc.failed = true
		p.finished = append(p.finished, rc)
		return
	}
	p.retried.Add(1)
	if p.o.obs.Retried != nil {
		p.o.obs.Retried(reason)
	}
	p.pushRetry(rc)

	// One pause per round of failures: a disconnect fails everything in
	// flight at once, and that is one failure, not thousands.
	now := time.Now()
	if now.Before(p.holdUntil) {
		return
	}
	p.holdUntil = now.Add(p.backoff)
	if n, ok := p.retryLog.allow(now); ok {
		p.log.Warn("publish failed; retrying", "reason", reason, "err", err, "backoff", p.backoff,
			"inflight", len(p.inflight), "retrying", len(p.retry)-p.retryHead, "suppressed", n)
	}
	p.backoff = min(2*p.backoff, p.o.backoffMax)
}

// uncovered asks the server whether any stream covers subj; no responders
// also happens while a server restarts or a stream elects a leader, and those
// are worth waiting for. Answers are kept for one round of results.
func (p *Publisher) uncovered(subj string) bool {
	if p.closing {
		return false
	}
	if v, ok := p.noStream[subj]; ok {
		return v
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.o.ackTimeout)
	_, err := p.js.StreamNameBySubject(ctx, subj)
	cancel()
	v := errors.Is(err, jetstream.ErrStreamNotFound)
	p.noStream[strings.Clone(subj)] = v // subj points into a reused buffer
	return v
}

func classify(err error) (reason string, permanent bool) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return ReasonTimeout, false
	case errors.Is(err, nats.ErrDisconnected):
		return ReasonDisconnected, false
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return ReasonNoResponders, false
	case errors.Is(err, nats.ErrMaxPayload):
		return ReasonTooLarge, true
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, jetstream.ErrInvalidJSAck):
		return ReasonInvalid, true
	case errors.As(err, &apiErr):
		if apiErr.Code >= 500 {
			return ReasonServer, false
		}
		return ReasonRejected, true
	default:
		return ReasonClient, false
	}
}

// release returns the bytes of finished records, wakes blocked publishers and
// finished flushes, and recycles the records.
func (p *Publisher) release() {
	if len(p.finished) == 0 {
		return
	}
	p.mu.Lock()
	for _, rc := range p.finished {
		p.buffered--
		p.bufBytes -= rc.size
		if rc.failed {
			p.notStored++
		}
		for _, w := range p.flushes {
			if rc.seq <= w.target {
				w.remaining--
			}
		}
	}
	if len(p.flushes) > 0 {
		p.flushes = slices.DeleteFunc(p.flushes, func(w *flushWaiter) bool {
			if w.remaining > 0 {
				return false
			}
			close(w.done)
			return true
		})
	}
	if p.space != nil {
		close(p.space)
		p.space = nil
	}
	p.bufferedN.Store(int64(p.buffered))
	p.bufBytesN.Store(p.bufBytes)
	p.obsBuffered(p.bufBytes)
	p.mu.Unlock()

	for _, rc := range p.finished {
		p.put(rc)
	}
	clear(p.finished)
	p.finished = p.finished[:0]
}

func (p *Publisher) obsFailed(reason string) {
	if p.o.obs.Failed != nil {
		p.o.obs.Failed(reason)
	}
}

func (p *Publisher) obsBuffered(n int64) {
	if p.o.obs.BufferedBytes != nil {
		p.o.obs.BufferedBytes(n)
	}
}

// fifo is a queue over a slice that reuses its storage once drained.
type fifo struct {
	items []*rec
	head  int
}

func (q *fifo) push(r *rec) {
	if q.head > 0 && q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head >= 1024 && q.head >= len(q.items)/2 {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	q.items = append(q.items, r)
}

func (q *fifo) pop() *rec {
	if q.head == len(q.items) {
		return nil
	}
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	return r
}

// logLimiter lets one line through per period and counts the rest.
type logLimiter struct {
	every      time.Duration
	last       time.Time
	suppressed int
}

func (l *logLimiter) allow(now time.Time) (suppressed int, ok bool) {
	if now.Sub(l.last) < l.every {
		l.suppressed++
		return 0, false
	}
	l.last = now
	n := l.suppressed
	l.suppressed = 0
	return n, true
}
