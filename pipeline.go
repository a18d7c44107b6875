package main

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/subjects"
)

// pipeline is the hot path of one frame after the connector's peek: route,
// filter, hash, publish. It copies nothing itself: the publisher makes the
// one copy that must outlive the socket's read buffer until JetStream acks.
type pipeline struct {
	table   *subjects.Table
	pub     *publisher.Publisher
	frame   bool // publish the whole frame, not just eventBody
	metrics *metrics
	log     *slog.Logger
	skips   logLimiter

	scratch sync.Pool // *scratch
}

type scratch struct {
	subject []byte
	id      []byte
	rec     publisher.Record
}

func newPipeline(table *subjects.Table, pub *publisher.Publisher, frame bool, m *metrics, log *slog.Logger) *pipeline {
	p := &pipeline{table: table, pub: pub, frame: frame, metrics: m, log: log}
	p.scratch.New = func() any {
		return &scratch{subject: make([]byte, 0, 256), id: make([]byte, 0, publisher.MsgIDLen)}
	}
	return p
}

// HandleEvent implements connector.Handler. It returns an error only when
// ctx ends or the publisher is closed, that is when shutting down: an event
// that can never be stored is counted and skipped, so it costs no other
// event and never the socket.
func (p *pipeline) HandleEvent(ctx context.Context, f *connector.Frame, receivedAt time.Time) error {
	counters := p.metrics.topic(f.Topic)
	counters.received.Inc()
	if f.Body == nil {
		p.metrics.FrameDropped(connector.ReasonNoBody)
		p.skipped("skipped an event frame without eventBody", "pattern", counters.pattern, "bytes", len(f.Raw))
		return nil
	}
	s := p.scratch.Get().(*scratch)
	defer p.scratch.Put(s)

	subject, pass := p.table.Route(s.subject[:0], f.Topic, f.Body)
	s.subject = subject
	if !pass {
		counters.filtered.Inc()
		return nil
	}
	if len(f.CorrelationID) == 0 {
		p.metrics.uncorrelated.Inc()
	}
	s.id = publisher.MsgID(s.id[:0], f.Topic, f.CorrelationID, f.Body)
	s.rec = publisher.Record{
		Subject:       subject,
		ID:            s.id,
		Topic:         f.Topic,
		Version:       f.Version,
		CorrelationID: f.CorrelationID,
		ReceivedAt:    receivedAt,
		Data:          f.Body,
	}
	if p.frame {
		s.rec.Data = f.Raw
	}
	err := p.pub.Publish(ctx, &s.rec)
	switch {
	case err == nil:
		counters.published.Inc()
		return nil
	case errors.Is(err, publisher.ErrInvalidRecord):
		// Counted by the publisher's observer (publish_too_large, …).
		p.skipped("skipped an event no retry can store", "pattern", counters.pattern, "bytes", len(s.rec.Data), "err", err)
		return nil
	default:
		return err
	}
}

// skipped logs a skipped event at most once a second, whichever socket
// reads it; the body never reaches the log.
func (p *pipeline) skipped(msg string, args ...any) {
	if n, ok := p.skips.allow(time.Now()); ok {
		p.log.Warn(msg, append(args, "more_skipped_since_last_log", n)...)
	}
}

// logLimiter lets one line through a second, from any goroutine, and
// counts the rest.
type logLimiter struct {
	last       atomic.Int64
	suppressed atomic.Int64
}

func (l *logLimiter) allow(now time.Time) (suppressed int64, ok bool) {
	last := l.last.Load()
	if now.UnixNano()-last < int64(time.Second) || !l.last.CompareAndSwap(last, now.UnixNano()) {
		l.suppressed.Add(1)
		return 0, false
	}
	return l.suppressed.Swap(0), true
}
