package main

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/subjects"
)

// metrics label events by topic pattern (v2.routing.queues.{id}.users),
// never by raw topic, so cardinality stays bounded at any org size.
type metrics struct {
	reg *prometheus.Registry

	received, published, filtered *prometheus.CounterVec
	droppedFrames                 *prometheus.CounterVec
	reconnects                    *prometheus.CounterVec
	retries                       *prometheus.CounterVec
	acked, duplicates, failed     prometheus.Counter
	uncorrelated                  prometheus.Counter
	handoverAudit                 *prometheus.CounterVec
	gaps                          *prometheus.CounterVec
	gapSeconds                    prometheus.Counter
	ackLatency                    prometheus.Histogram
	bufferBytes                   prometheus.Gauge

	mu     sync.RWMutex
	topics map[string]*topicCounters // by raw topic: a cache in front of the vecs
}

type topicCounters struct {
	pattern                       string
	received, published, filtered prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg:    prometheus.NewRegistry(),
		topics: make(map[string]*topicCounters),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_frames_received_total", Help: "Event frames read from Genesys, by topic pattern.",
		}, []string{"pattern"}),
		published: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_messages_published_total", Help: "Events accepted for publishing to JetStream, by topic pattern.",
		}, []string{"pattern"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_frames_filtered_total", Help: "Events a route's filter left out, by topic pattern.",
		}, []string{"pattern"}),
		droppedFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_frames_dropped_total", Help: "Frames skipped without publishing, by reason.",
		}, []string{"reason"}),
		reconnects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_reconnects_total", Help: "Sockets replaced or reconnected, by reason.",
		}, []string{"reason"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_publish_retries_total", Help: "Publishes retried with the same dedup id, by reason.",
		}, []string{"reason"}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gcnats_messages_acked_total", Help: "Publishes JetStream acknowledged.",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gcnats_messages_duplicate_total", Help: "Acks JetStream marked duplicate: the overlap of sockets, replicas or retries collapsed.",
		}),
		failed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gcnats_messages_failed_total", Help: "Publishes that failed for good (no retry can store them).",
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gcnats_publish_ack_seconds", Help: "Time from publish to JetStream's ack, as the publisher takes it: at once while anything waits for room, else within 10 ms.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		uncorrelated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gcnats_frames_uncorrelated_total",
			Help: "Events without metadata.CorrelationId: their dedup id falls back to topic and body, so equal bodies within the duplicate window merge.",
		}),
		handoverAudit: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_handover_correlation_total",
			Help: "Event bodies both sockets of a handover read, by whether they shared a correlation id (match) or not (mismatch: the dedup id's assumption fails).",
		}, []string{"result"}),
		gaps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gcnats_gaps_total", Help: "Intervals in which a channel's topics had no receiving socket (one gap record each), by reason.",
		}, []string{"reason"}),
		gapSeconds: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gcnats_gap_seconds_total", Help: "Seconds channels' topics spent with no receiving socket, summed over gaps.",
		}),
		bufferBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gcnats_buffer_bytes", Help: "Bytes of events accepted and not yet acked.",
		}),
	}
	m.reg.MustRegister(m.received, m.published, m.filtered, m.droppedFrames, m.reconnects, m.retries,
		m.acked, m.duplicates, m.failed, m.uncorrelated, m.handoverAudit, m.gaps, m.gapSeconds, m.ackLatency, m.bufferBytes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// maxCachedTopics bounds the cache: 20 channels of 1,000 topics, twice
// over for topics that come and go as the org changes.
const maxCachedTopics = 40_000

// topic returns the counters of a topic's pattern; after the first frame
// of a topic it neither allocates nor takes a write lock.
func (m *metrics) topic(topic []byte) *topicCounters {
	m.mu.RLock()
	c, ok := m.topics[string(topic)]
	m.mu.RUnlock()
	if ok {
		return c
	}
	pattern := subjects.Pattern(topic)
	c = &topicCounters{
		pattern:   pattern,
		received:  m.received.WithLabelValues(pattern),
		published: m.published.WithLabelValues(pattern),
		filtered:  m.filtered.WithLabelValues(pattern),
	}
	m.mu.Lock()
	if prev, ok := m.topics[string(topic)]; ok {
		c = prev
	} else if len(m.topics) < maxCachedTopics {
		m.topics[string(topic)] = c
	}
	m.mu.Unlock()
	return c
}

// FrameDropped implements connector.Observer; the pipeline counts its own
// skips here too.
func (m *metrics) FrameDropped(reason string) { m.droppedFrames.WithLabelValues(reason).Inc() }

// Reconnect implements connector.Observer.
func (m *metrics) Reconnect(reason string) { m.reconnects.WithLabelValues(reason).Inc() }

// HandoverAudited implements connector.Observer.
func (m *metrics) HandoverAudited(match, mismatch int) {
	m.handoverAudit.WithLabelValues("match").Add(float64(match))
	m.handoverAudit.WithLabelValues("mismatch").Add(float64(mismatch))
}

// watchLeaf exports the leaf link's state in edge mode.
func (m *metrics) watchLeaf(connected func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gcnats_leaf_connected",
		Help: "1 while the embedded server's leaf link to the hub is up (edge mode); events wait in the local stream while it is 0.",
	}, func() float64 {
		if connected() {
			return 1
		}
		return 0
	}))
}

// watchConnector exports the connector's channel state at each scrape.
func (m *metrics) watchConnector(c *connector.Connector) {
	m.reg.MustRegister(&connectorCollector{c: c})
}

type connectorCollector struct{ c *connector.Connector }

var (
	channelsDesc  = prometheus.NewDesc("gcnats_channels_active", "Planned channels with a connected socket.", nil, nil)
	plannedDesc   = prometheus.NewDesc("gcnats_channels_planned", "Channels the topic plan needs.", nil, nil)
	topicsDesc    = prometheus.NewDesc("gcnats_topics_active", "Topics subscribed on connected channels.", nil, nil)
	heartbeatDesc = prometheus.NewDesc("gcnats_heartbeat_age_seconds", "Seconds since the last heartbeat, per planned channel.", []string{"channel"}, nil)
	clientDesc    = prometheus.NewDesc("gcnats_oauthclient_channels", "Channels the OAuth client holds across all its tokens (every replica), at the last count; Genesys allows 20.", nil, nil)
	othersDesc    = prometheus.NewDesc("gcnats_oauthclient_other_channels", "Of those, channels this sidecar does not hold.", nil, nil)
	atRiskDesc    = prometheus.NewDesc("gcnats_channel_budget_at_risk", "1 when GCNATS_MAX_CHANNELS plus the other channels pass 20: a rollover may evict a live channel.", nil, nil)
	rejectedDesc  = prometheus.NewDesc("gcnats_topics_rejected", "Topics Genesys refused at the last subscription; tried again at each topic refresh.", nil, nil)
)

func (cc *connectorCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- channelsDesc
	ch <- plannedDesc
	ch <- topicsDesc
	ch <- heartbeatDesc
	ch <- clientDesc
	ch <- othersDesc
	ch <- atRiskDesc
	ch <- rejectedDesc
}

func (cc *connectorCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Status()
	active, topics, rejected := 0, 0, 0
	for _, c := range st.Channels {
		rejected += c.Rejected
		if c.Connected {
			active++
			topics += c.Topics
			ch <- prometheus.MustNewConstMetric(heartbeatDesc, prometheus.GaugeValue, c.HeartbeatAge.Seconds(), strconv.Itoa(c.Index))
		}
	}
	ch <- prometheus.MustNewConstMetric(channelsDesc, prometheus.GaugeValue, float64(active))
	ch <- prometheus.MustNewConstMetric(plannedDesc, prometheus.GaugeValue, float64(len(st.Channels)))
	ch <- prometheus.MustNewConstMetric(topicsDesc, prometheus.GaugeValue, float64(topics))
	ch <- prometheus.MustNewConstMetric(rejectedDesc, prometheus.GaugeValue, float64(rejected))
	if st.ClientChannels >= 0 {
		ch <- prometheus.MustNewConstMetric(clientDesc, prometheus.GaugeValue, float64(st.ClientChannels))
		ch <- prometheus.MustNewConstMetric(othersDesc, prometheus.GaugeValue, float64(st.OtherChannels))
	}
	atRisk := 0.0
	if st.BudgetAtRisk {
		atRisk = 1
	}
	ch <- prometheus.MustNewConstMetric(atRiskDesc, prometheus.GaugeValue, atRisk)
}

// backlogBytes is how full the publisher's buffer is when events have
// begun to queue: at everyday rates it holds the few events awaiting their
// acks, a few KB; in a burst read on one P it passes this within
// milliseconds.
const backlogBytes = 256 << 10

// publishObserver feeds the publisher's events to the metrics, and calls
// backlog, when not nil, each time the buffer grows past backlogBytes. It
// counts the events stored within dedupWindow (the stream's duplicate
// window) for gcnats_dedup_window_events; call it once per metrics.
func (m *metrics) publishObserver(backlog func(), dedupWindow time.Duration) publisher.Observer {
	var above atomic.Bool
	stored := newWindowCount(dedupWindow)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gcnats_dedup_window_events",
		Help: "Events stored within the last GCNATS_DEDUP_WINDOW: the message ids JetStream keeps to drop duplicates, about 125 bytes of the server's memory each (the sidecar's own with the embedded server).",
	}, func() float64 { return float64(stored.total(time.Now())) }))
	return publisher.Observer{
		Acked: func(latency time.Duration, duplicate bool) {
			m.acked.Inc()
			if duplicate {
				m.duplicates.Inc()
			} else {
				stored.add(time.Now())
			}
			m.ackLatency.Observe(latency.Seconds())
		},
		Retried: func(reason string) { m.retries.WithLabelValues(reason).Inc() },
		Failed:  func(reason string) { m.failed.Inc(); m.FrameDropped("publish_" + reason) },
		BufferedBytes: func(n int64) {
			m.bufferBytes.Set(float64(n))
			// Once as it passes the mark, not for every event above it: an
			// outage of NATS fills the buffer for as long as it lasts.
			if now := n >= backlogBytes; above.Load() != now {
				above.Store(now)
				if now && backlog != nil {
					backlog()
				}
			}
		},
	}
}
