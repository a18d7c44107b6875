package publisher

import (
	"time"
	"unsafe"

	"github.com/nats-io/nats.go"
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
	Gap           bool      // a gap record: header Gcnats-Gap: true
}

// rec is one accepted record: a single buffer holds all its bytes, and the
// nats.Msg and header strings point into it.
type rec struct {
	msg  nats.Msg
	vals [5]string
	// hdrs says which header entries msg.Header holds now (hdr* bits).
	// Each entry is a slice over vals, so refilling vals updates the
	// header without touching the map: assigning five map entries was
	// the largest part of fill in the end-to-end CPU profile.
	hdrs uint8
	buf  []byte
	size int64 // what it costs in memory: counted against the buffer limit
	seq  uint64

	accepted  time.Time
	firstSent time.Time // zero: never sent, so never stored and needs no dedup check
	sentAt    time.Time // of the latest send
	sendN     uint64    // the publisher's send counter at the latest send
	attempts  int       // sends that failed on their own (see fail)

	failed bool   // given up: counts as not stored
	reply  []byte // msg.Reply's bytes: the ack inbox's subject for sendN
}

// recOverhead is what a record costs besides its buffer: the struct, the
// header map with its five entries (a map group of 8 slots of string keys
// and []string values, plus the map header) and the reply subject's bytes
// ("_INBOX.", a 22-character nuid, ".", up to 13 base-36 digits: 48 with
// room). Counting it is what makes WithBufferBytes bound memory when
// records are small.
const recOverhead = int64(unsafe.Sizeof(rec{})) + 8*(16+24) + 8 + 48 + 64 + replyBytes

const replyBytes = 48

// maxPooledBuf keeps one rare huge event from pinning its buffer.
const maxPooledBuf = 256 << 10

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
	rc.size = int64(cap(b)) + recOverhead
	rc.msg.Subject = bstr(b[:subj])
	rc.msg.Data = b[recv:len(b):len(b)]
	rc.vals[0] = bstr(b[subj:id])
	rc.vals[1] = bstr(b[id:topic])
	rc.vals[2] = bstr(b[topic:version])
	rc.vals[3] = bstr(b[version:corr])
	rc.vals[4] = bstr(b[corr:recv])
	want := uint8(hdrBase)
	if version > topic {
		want |= hdrVersion
	}
	if corr > version {
		want |= hdrCorrelation
	}
	if r.Gap {
		want |= hdrGap
	}
	if want != rc.hdrs {
		rc.setHeaders(want)
	}
}

// Which of msg.Header's entries a record holds, see rec.hdrs.
const (
	hdrBase        = 1 << iota // Nats-Msg-Id, Genesys-Topic, Genesys-Received-At
	hdrVersion                 // Genesys-Version
	hdrCorrelation             // Genesys-Correlation-Id
	hdrGap                     // Gcnats-Gap
)

// gapTrue is the Gcnats-Gap header's value, shared by every gap record.
var gapTrue = []string{"true"}

// setHeaders points msg.Header's entries at vals, the ones want names.
func (rc *rec) setHeaders(want uint8) {
	h := rc.msg.Header
	h[HeaderMsgID] = rc.vals[0:1:1]
	h[HeaderTopic] = rc.vals[1:2:2]
	h[HeaderReceivedAt] = rc.vals[4:5:5]
	if want&hdrVersion != 0 {
		h[HeaderVersion] = rc.vals[2:3:3]
	} else {
		delete(h, HeaderVersion)
	}
	if want&hdrCorrelation != 0 {
		h[HeaderCorrelationID] = rc.vals[3:4:4]
	} else {
		delete(h, HeaderCorrelationID)
	}
	if want&hdrGap != 0 {
		h[HeaderGap] = gapTrue[:1:1]
	} else {
		delete(h, HeaderGap)
	}
	rc.hdrs = want
}

func (rc *rec) id() string { return rc.vals[0] }

func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// The free list keeps finished records for reuse, so a running publisher
// allocates nothing per record. Not a sync.Pool: that is emptied at every GC,
// and a busy sidecar (or an embedded server in the same process) collects
// often enough that most records would allocate afresh. It holds at most what
// the buffer held at its peak in the last trim period (see trimFree), so after
// an outage the memory it took is given back.

func (p *Publisher) get() *rec {
	p.freeMu.Lock()
	if n := len(p.free); n > 0 {
		rc := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.freeBytes -= rc.size
		p.freeMu.Unlock()
		return rc
	}
	p.freeMu.Unlock()
	rc := &rec{}
	rc.msg.Header = make(nats.Header, len(rc.vals))
	return rc
}

// put keeps rc for reuse once it is finished. nats.go keeps nothing of a
// message once PublishMsg returns, and an answer to an earlier send of rc
// finds no record in flight under that send's number.
func (p *Publisher) put(rc *rec) {
	rc.msg.Subject, rc.msg.Reply, rc.msg.Data = "", "", nil
	rc.vals = [5]string{}
	rc.failed = false
	rc.firstSent, rc.sentAt, rc.sendN, rc.attempts = time.Time{}, time.Time{}, 0, 0
	if cap(rc.buf) > maxPooledBuf {
		rc.buf = nil
	}
	rc.size = int64(cap(rc.buf)) + recOverhead
	p.freeMu.Lock()
	if p.freeBytes+rc.size <= p.retain {
		p.free = append(p.free, rc)
		p.freeBytes += rc.size
	}
	p.freeMu.Unlock()
}

// trimFree lets go of free records beyond what the buffer needed at its peak
// since the previous trim: after an outage filled the buffer, the next quiet
// period hands that memory back instead of pinning it for good.
func (p *Publisher) trimFree(peak int64) {
	keep := max(peak, 1<<20)
	p.freeMu.Lock()
	defer p.freeMu.Unlock()
	if p.freeBytes <= keep {
		return
	}
	n := len(p.free)
	for n > 0 && p.freeBytes > keep {
		n--
		p.freeBytes -= p.free[n].size
		p.free[n] = nil
	}
	// A fresh slice: the old backing array is as large as the peak.
	p.free = append(make([]*rec, 0, n), p.free[:n]...)
}

func (p *Publisher) freeBytesNow() int64 {
	p.freeMu.Lock()
	defer p.freeMu.Unlock()
	return p.freeBytes
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

func (q *fifo) empty() bool { return q.head == len(q.items) }

func (q *fifo) pop() *rec {
	if q.head == len(q.items) {
		return nil
	}
	r := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	return r
}

// shrink drops a backing array much larger than what the queue holds, once
// an outage's backlog has drained.
func (q *fifo) shrink() {
	if n := len(q.items) - q.head; cap(q.items) > 4096 && cap(q.items) > 4*n {
		q.items, q.head = append(make([]*rec, 0, 2*n), q.items[q.head:]...), 0
	}
}
