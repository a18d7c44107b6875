package main

import (
	"context"
	"log/slog"
	"sync"
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
	// stop ends a Publish blocked on a full buffer when shutdown gives up;
	// the connector's own context ends earlier, when reading stops.
	stop context.Context

	scratch sync.Pool // *scratch
}

type scratch struct {
	subject []byte
	id      []byte
	rec     publisher.Record
}

func newPipeline(stop context.Context, table *subjects.Table, pub *publisher.Publisher, frame bool, m *metrics, log *slog.Logger) *pipeline {
	p := &pipeline{table: table, pub: pub, frame: frame, metrics: m, log: log, stop: stop}
	p.scratch.New = func() any {
		return &scratch{subject: make([]byte, 0, 256), id: make([]byte, 0, publisher.MsgIDLen)}
	}
	return p
}

// HandleEvent implements connector.Handler.
func (p *pipeline) HandleEvent(_ context.Context, f *connector.Frame, receivedAt time.Time) error {
	counters := p.metrics.topic(f.Topic)
	counters.received.Inc()
	if f.Body == nil {
		p.metrics.FrameDropped(connector.ReasonNoBody)
		p.log.Warn("skipped an event frame without eventBody", "pattern", counters.pattern)
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
	s.id = publisher.MsgID(s.id[:0], f.Topic, f.Body)
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
	if err := p.pub.Publish(p.stop, &s.rec); err != nil {
		return err
	}
	counters.published.Inc()
	return nil
}
