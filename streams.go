package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
)

// ensureStream sets up one of the sidecar's streams. While the cluster
// cannot do it for now (no meta leader while it recovers, a node it has
// not heard from yet), it keeps trying until ctx ends, and /readyz and
// /startupz say why: a sidecar that exits instead is restarted later and
// later by its kubelet, and reads nothing from Genesys meanwhile. Other
// errors return at once.
func (sc *sidecar) ensureStream(ctx context.Context, cfg publisher.StreamConfig) error {
	wait := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		_, err := publisher.EnsureStream(ctx, sc.js, cfg)
		switch {
		case err == nil:
			if attempt > 0 {
				sc.log.Info("stream set up", "stream", cfg.Name, "attempts", attempt+1)
			}
			return nil
		case ctx.Err() != nil:
			// Shut down while waiting: not a failure of its own.
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case !publisher.Temporary(err):
			return err
		}
		// The probes say why before the log does.
		sc.phase.Store("setting up stream " + cfg.Name + ", retrying: " + err.Error())
		if attempt == 0 {
			sc.log.Warn("cannot set up the stream yet; retrying", "stream", cfg.Name, "replicas", cfg.Replicas, "err", err)
		} else {
			sc.log.Debug("stream set-up failed again", "stream", cfg.Name, "attempt", attempt+1, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// keepHubStream creates the hub's stream, sourcing the local streams, once
// the hub answers: the leaf link may come up long after start, and the
// events wait in the local stream meanwhile.
func (sc *sidecar) keepHubStream(ctx context.Context) {
	defer sc.bg.Done()
	s := sc.settings
	var sources []string
	for _, st := range sc.table.Streams(s.Stream) {
		sources = append(sources, st.Name)
	}
	cfg := publisher.HubStreamConfig{Name: s.HubStream, EdgeDomain: s.JSDomain, Sources: sources, MaxAge: s.StreamMaxAge, Duplicates: s.HubDedupWindow}
	wait := time.Second
	for attempt := 0; ; attempt++ {
		js, err := jetstream.NewWithDomain(sc.pub.Conn(), s.HubDomain)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			var hub jetstream.Stream
			hub, err = publisher.EnsureHubStream(actx, js, cfg)
			cancel()
			if err == nil {
				window := hub.CachedInfo().Config.Duplicates
				sc.log.Info("hub stream sources the local streams", "hub_stream", s.HubStream, "hub_domain", s.HubDomain,
					"sources", sources, "api_prefix", publisher.EdgeAPIPrefix(s.JSDomain), "hub_dedup_window", window)
				sc.checkHubWindow(window)
				return
			}
		}
		if attempt == 0 {
			sc.log.Warn("hub stream not set up yet; retrying while events wait in the local stream", "hub_stream", s.HubStream,
				"hub_domain", s.HubDomain, "leaf_connected", sc.embedded.LeafConnected(), "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
	}
}

// checkHubWindow says, once the hub stream is set up, when its duplicate
// window cannot cover the link outages this edge rides out. A copy of an
// event reaches the hub only while the edge still holds it, at most
// GCNATS_STREAM_MAX_AGE after it was stored, so a window that long covers
// any outage; a shorter one does not, and where several edges feed the hub
// stream, an event stored during a longer outage is stored there once per
// edge.
func (sc *sidecar) checkHubWindow(window time.Duration) {
	s := sc.settings
	if s.StreamMaxAge > 0 && window >= s.StreamMaxAge {
		return
	}
	buffer := "forever"
	if s.StreamMaxAge > 0 {
		buffer = s.StreamMaxAge.String()
	}
	sc.log.Warn("the hub stream's duplicate window is shorter than this edge's buffer: where several edges feed it, "+
		"events stored during a link outage longer than the window, less the hub's catch-up (about 40 s), are stored at the hub once per edge",
		"hub_stream", s.HubStream, "hub_dedup_window", window, "buffer", buffer,
		"remedy", "raise GCNATS_HUB_DEDUP_WINDOW, or the hub stream's max_age that caps it, to GCNATS_STREAM_MAX_AGE")
}
