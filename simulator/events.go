package simulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// Event is the record of one generated notification.
type Event struct {
	// Seq numbers events from 1 in the order they were written to sockets.
	Seq   uint64
	Topic string
	// CorrelationID is the frame's metadata.CorrelationId, unique per event
	// (the sidecar's Genesys-Correlation-Id header).
	CorrelationID string
	// Body is the exact eventBody bytes; Frame is the exact socket frame,
	// of which Body is a part. Shared: do not modify.
	Body  []byte
	Frame []byte
	// Delivered counts the sockets the frame was written to. Zero means no
	// socket of a subscribed channel was connected (or all were stalled), so
	// no client could have received the event.
	Delivered int
	At        time.Time
}

// record is the event log, optionally bounded to the newest events.
type record struct {
	limit  int
	seq    uint64
	events []Event // events[i].Seq == events[0].Seq+i
	byCorr map[string]uint64
}

func (r *record) add(ev Event) {
	r.events = append(r.events, ev)
	r.byCorr[ev.CorrelationID] = ev.Seq
	// Trim in batches so that a bounded record costs amortized O(1).
	if r.limit > 0 && len(r.events) >= 2*r.limit {
		drop := len(r.events) - r.limit
		for _, e := range r.events[:drop] {
			delete(r.byCorr, e.CorrelationID)
		}
		r.events = slices.Clone(r.events[drop:])
	}
}

func (r *record) bySeq(seq uint64) (Event, bool) {
	if len(r.events) == 0 || seq < r.events[0].Seq {
		return Event{}, false
	}
	i := seq - r.events[0].Seq
	if i >= uint64(len(r.events)) {
		return Event{}, false
	}
	return r.events[i], true
}

// Events returns the record of every generated event, oldest first (with a
// RecordLimit, at least the newest RecordLimit events).
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.rec.events)
}

// EventsSince returns the recorded events with Seq > seq.
func (s *Server) EventsSince(seq uint64) []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	ev := s.rec.events
	if len(ev) == 0 {
		return nil
	}
	first := ev[0].Seq
	if seq+1 > first {
		skip := seq + 1 - first
		if skip >= uint64(len(ev)) {
			return nil
		}
		ev = ev[skip:]
	}
	return slices.Clone(ev)
}

// EventBySeq finds a recorded event by its Seq.
func (s *Server) EventBySeq(seq uint64) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec.bySeq(seq)
}

// EventByCorrelationID maps a frame's metadata.CorrelationId (what a sidecar
// stores as Genesys-Correlation-Id) back to its record.
func (s *Server) EventByCorrelationID(id string) (Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seq, ok := s.rec.byCorr[id]
	if !ok {
		return Event{}, false
	}
	return s.rec.bySeq(seq)
}

// Emit generates one event per topic now, in order (every currently
// subscribed topic when none is given), delivers each to every connected
// socket whose channel subscribes to its topic, and returns the records. A
// topic nobody subscribes to still produces a record, with Delivered 0.
func (s *Server) Emit(topics ...string) []Event {
	if len(topics) == 0 {
		topics = s.subscribedTopics()
	}
	return s.emit(topics)
}

// EmitBody delivers one event on topic with exactly body as its eventBody,
// as Emit does: for the inputs that matter to a consumer, such as the same
// body twice (Genesys repeats bodies that carry no timestamp) or an event
// larger than NATS' default max_payload. body must be a JSON value.
func (s *Server) EmitBody(topic string, body []byte) (Event, error) {
	if !json.Valid(body) {
		return Event{}, fmt.Errorf("emit body on %s: not a JSON value", topic)
	}
	out, ok := s.deliver(nil, frameEvents([]string{topic}, [][]byte{bytes.Clone(body)}))
	if !ok {
		return Event{}, errors.New("emit body: simulator closed")
	}
	return out[0], nil
}

// BodyOfSize builds the body of one event on topic, its SDK model padded
// to size bytes (Genesys documents no maximum; conversation objects with
// many participants run large). Emit it with EmitBody.
func (s *Server) BodyOfSize(topic string, size int) ([]byte, error) {
	b, err := s.gen.paddedBody(topic, size)
	if err != nil {
		return nil, fmt.Errorf("body of size %d for %s: %w", size, topic, err)
	}
	return b, nil
}

// EmitN generates n events cycling over topics (every currently subscribed
// topic when none is given), as Emit does.
func (s *Server) EmitN(n int, topics ...string) []Event {
	if len(topics) == 0 {
		topics = s.subscribedTopics()
	}
	if n <= 0 || len(topics) == 0 {
		return nil
	}
	list := make([]string, n)
	for i := range list {
		list[i] = topics[i%len(topics)]
	}
	return s.emit(list)
}

// emitChunk bounds how many events are delivered per lock hold, so REST
// calls and pings interleave with a large EmitN.
const emitChunk = 256

func (s *Server) emit(list []string) []Event {
	out := make([]Event, 0, len(list))
	for start := 0; start < len(list); start += emitChunk {
		chunk := list[start:min(start+emitChunk, len(list))]
		var ok bool
		if out, ok = s.deliver(out, frameEvents(chunk, s.buildBodies(chunk))); !ok {
			break
		}
	}
	return out
}

// deliver delivers one chunk under the lock, appending the records to out.
func (s *Server) deliver(out []Event, events []framed) ([]Event, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return out, false
	}
	start := len(out)
	s.round = &round{held: map[*socket][]int{}}
	for i, ev := range events {
		out = append(out, s.deliverLocked(ev, i))
	}
	s.endRoundLocked(out[start:])
	for _, ev := range out[start:] {
		s.rec.add(ev)
	}
	s.changedLocked()
	return out, true
}

// framed is an event in its envelope, ready to write: built outside the
// lock (and for a Batch before the clock starts), since the envelope and
// the correlation id are per event and the same for every socket.
type framed struct {
	topic string
	frame []byte
	off   int // where the body starts in frame
	n     int // the body's length
	corr  string
	// change is what the event announces about the org's state, applied
	// when it is delivered.
	change *stateChange
}

func frameEvents(topics []string, bodies [][]byte) []framed {
	out := make([]framed, len(topics))
	for i, t := range topics {
		corr := newUUID()
		frame, off := buildFrame(t, bodies[i], corr)
		out[i] = framed{topic: t, frame: frame, off: off, n: len(bodies[i]), corr: corr, change: parseStateChange(t, bodies[i])}
	}
	return out
}

// Batch is a set of events generated ahead of delivery, so a benchmark can
// measure a consumer rather than the cost of marshalling SDK models.
type Batch struct {
	mu     sync.Mutex
	events []framed
}

// Len is the number of events the batch holds (0 once emitted).
func (b *Batch) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.events)
}

// Prepare generates the bodies of n events cycling over topics (every
// currently subscribed topic when none is given) without delivering them.
func (s *Server) Prepare(n int, topics ...string) *Batch {
	if len(topics) == 0 {
		topics = s.subscribedTopics()
	}
	b := &Batch{}
	if n <= 0 || len(topics) == 0 {
		return b
	}
	list := make([]string, n)
	for i := range list {
		list[i] = topics[i%len(topics)]
	}
	b.events = frameEvents(list, s.buildBodies(list))
	return b
}

// EmitBatch delivers a prepared batch as Emit would (Seq, At and Delivered
// are assigned now; the frames, correlation ids included, were built by
// Prepare) and returns the records. A batch is emitted
// once; emitting it again returns nil, since its bodies would repeat.
func (s *Server) EmitBatch(b *Batch) []Event {
	b.mu.Lock()
	events := b.events
	b.events = nil
	b.mu.Unlock()
	if len(events) == 0 {
		return nil
	}
	out := make([]Event, 0, len(events))
	for start := 0; start < len(events); start += emitChunk {
		end := min(start+emitChunk, len(events))
		var ok bool
		if out, ok = s.deliver(out, events[start:end]); !ok {
			break
		}
	}
	return out
}

// buildBodies marshals event bodies outside the lock, in parallel for a
// large batch: the SDK's MarshalJSON is the expensive part of an event.
func (s *Server) buildBodies(topics []string) [][]byte {
	bodies := make([][]byte, len(topics))
	workers := min(runtime.GOMAXPROCS(0), len(topics)/32)
	if workers <= 1 {
		for i, t := range topics {
			bodies[i] = s.body(t)
		}
		return bodies
	}
	var wg sync.WaitGroup
	per := (len(topics) + workers - 1) / workers
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, len(topics))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				bodies[i] = s.body(topics[i])
			}
		})
	}
	wg.Wait()
	return bodies
}

func (s *Server) body(topic string) []byte {
	b, err := s.gen.body(topic)
	if err != nil {
		// Not expected: the models are plain data. Keep the event, with a
		// body that still identifies it, and say so.
		s.log.Warn("event body marshal failed; sending a minimal body", "topic", topic, "err", err)
		b, _ = json.Marshal(map[string]string{"id": newUUID()})
	}
	return b
}

// deliverLocked assigns the next Seq, writes the frame to every connected
// socket of every channel subscribed to topic, and records the event.
func (s *Server) deliverLocked(fe framed, i int) Event {
	s.rec.seq++
	topic, frame, body := fe.topic, fe.frame, fe.frame[fe.off:fe.off+fe.n:fe.off+fe.n]
	ev := Event{
		Seq:           s.rec.seq,
		Topic:         topic,
		CorrelationID: fe.corr,
		Body:          body,
		Frame:         frame,
		At:            time.Now(),
	}
	for ch := range s.byTopic[topic] {
		f := frame
		if s.opts.CorrelationIDPerChannel && ev.Delivered > 0 {
			f, _ = buildFrame(topic, body, newUUID())
		}
		if sk := ch.socket; sk != nil && sk.writable() {
			s.holdLocked(sk, i)
			if s.writeLocked(sk, f) {
				ev.Delivered++
			}
		}
	}
	s.state.apply(fe.change)
	s.stats.Events++
	s.stats.Deliveries += ev.Delivered
	return ev
}

// buildFrame wraps body in Genesys' event envelope and returns the frame and
// the offset of body within it.
func buildFrame(topic string, body []byte, correlationID string) ([]byte, int) {
	qt, _ := json.Marshal(topic)
	frame := make([]byte, 0, len(body)+len(qt)+100)
	frame = append(frame, `{"topicName":`...)
	frame = append(frame, qt...)
	frame = append(frame, `,"version":"2","eventBody":`...)
	off := len(frame)
	frame = append(frame, body...)
	frame = append(frame, `,"metadata":{"CorrelationId":"`...)
	frame = append(frame, correlationID...)
	frame = append(frame, `"}}`...)
	return frame, off
}
