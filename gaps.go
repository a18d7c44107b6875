package main

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/subjects"
)

// headerGap marks gap records (docs/gaps.md).
const headerGap = publisher.HeaderGap

// gapSubjectSuffix follows GCNATS_SUBJECT_PREFIX: gap records go to the
// main stream, so a consumer replaying it reads them in order with the
// events around them.
const gapSubjectSuffix = ".gcnats.gap"

// maxListedTopics: a gap of a channel with more topics lists them by
// pattern only, so a record of a 1,000-topic channel stays small.
const maxListedTopics = 20

// gapBody is a gap record's JSON.
type gapBody struct {
	Topics   []string       `json:"topics,omitempty"` // when at most maxListedTopics
	Patterns []topicPattern `json:"patterns"`
	From     time.Time      `json:"from"`
	To       time.Time      `json:"to"`
	Reason   string         `json:"reason"`
	Sidecar  string         `json:"sidecar"`
	Channel  int            `json:"channel"`
}

type topicPattern struct {
	Pattern string `json:"pattern"`
	Count   int    `json:"count"`
}

// gapReporter is the connector's Observer: metrics for everything, and a
// gap record published for each gap.
type gapReporter struct {
	*metrics
	pub     *publisher.Publisher
	subject []byte
	sidecar string
	ctx     context.Context // ends at the shutdown deadline
	log     *slog.Logger

	// queue hands gaps to the goroutine that publishes them: Publish
	// waits while the buffer is full (a NATS outage), and the channel's
	// goroutine that reports a gap must not wait with it.
	queue     chan connector.Gap
	done      chan struct{}
	closeOnce sync.Once
}

// gapQueue: more gaps than this waiting for NATS are logged (and counted
// in gcnats_gaps_total), not published.
const gapQueue = 256

func newGapReporter(ctx context.Context, m *metrics, pub *publisher.Publisher, prefix string, log *slog.Logger) *gapReporter {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "unknown"
	}
	g := &gapReporter{metrics: m, pub: pub, subject: []byte(prefix + gapSubjectSuffix), sidecar: host, ctx: ctx, log: log,
		queue: make(chan connector.Gap, gapQueue), done: make(chan struct{})}
	go g.run()
	return g
}

// Gap implements connector.Observer: it counts the gap and queues its
// record.
func (g *gapReporter) Gap(gap connector.Gap) {
	g.gaps.WithLabelValues(gap.Reason).Inc()
	g.gapSeconds.Add(gap.To.Sub(gap.From).Seconds())
	g.log.Warn("topics had no receiving socket; writing a gap record", "channel", gap.Channel, "reason", gap.Reason,
		"from", gap.From, "to", gap.To, "gap", gap.To.Sub(gap.From).Round(time.Millisecond), "topics", len(gap.Topics))
	select {
	case g.queue <- gap:
	default:
		g.log.Error("too many gap records waiting for NATS; this one is not written", "channel", gap.Channel, "reason", gap.Reason, "from", gap.From, "to", gap.To)
	}
}

func (g *gapReporter) run() {
	defer close(g.done)
	for gap := range g.queue {
		g.publish(gap)
	}
}

// close publishes the gaps queued, by the shutdown deadline; the connector
// has stopped, so no more come.
func (g *gapReporter) close() {
	g.closeOnce.Do(func() { close(g.queue) })
	<-g.done
}

func (g *gapReporter) publish(gap connector.Gap) {
	body := newGapBody(gap, g.sidecar)
	data, err := json.Marshal(body)
	if err != nil {
		g.log.Error("cannot encode a gap record", "err", err)
		return
	}
	rec := publisher.Record{
		Subject:    g.subject,
		ID:         gapID(gap),
		ReceivedAt: gap.To,
		Data:       data,
		Gap:        true,
	}
	if err := g.pub.Publish(g.ctx, &rec); err != nil {
		g.log.Error("cannot publish a gap record", "channel", gap.Channel, "from", gap.From, "to", gap.To, "err", err)
	}
}

func newGapBody(gap connector.Gap, sidecar string) gapBody {
	b := gapBody{From: gap.From.UTC(), To: gap.To.UTC(), Reason: gap.Reason, Sidecar: sidecar, Channel: gap.Channel}
	if len(gap.Topics) <= maxListedTopics {
		b.Topics = gap.Topics
	}
	counts := map[string]int{}
	for _, t := range gap.Topics {
		counts[subjects.Pattern([]byte(t))]++
	}
	for p, n := range counts {
		b.Patterns = append(b.Patterns, topicPattern{Pattern: p, Count: n})
	}
	slices.SortFunc(b.Patterns, func(a, b topicPattern) int { return cmp.Compare(a.Pattern, b.Pattern) })
	return b
}

// gapID is the record's dedup id, drawn from what it says (its topics,
// interval and reason) and not from the sidecar that saw it: a record
// published again (a retry) is stored once. Two replicas see the same
// outage at their own times, so their records differ and both are kept.
func gapID(gap connector.Gap) []byte {
	h := sha256.New()
	for _, t := range gap.Topics {
		h.Write([]byte(t))
		h.Write([]byte{0})
	}
	h.Write(gap.From.UTC().AppendFormat(nil, time.RFC3339Nano))
	h.Write([]byte{0})
	h.Write(gap.To.UTC().AppendFormat(nil, time.RFC3339Nano))
	h.Write([]byte{0})
	h.Write([]byte(gap.Reason))
	return []byte("gap-" + hex.EncodeToString(h.Sum(nil)[:16]))
}
