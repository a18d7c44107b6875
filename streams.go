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
	cfg := publisher.HubStreamConfig{Name: s.HubStream, EdgeDomain: s.JSDomain, Sources: sources, MaxAge: s.StreamMaxAge, Duplicates: s.DedupWindow}
	wait := time.Second
	for attempt := 0; ; attempt++ {
		js, err := jetstream.NewWithDomain(sc.pub.Conn(), s.HubDomain)
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = publisher.EnsureHubStream(actx, js, cfg)
			cancel()
		}
		if err == nil {
			sc.log.Info("hub stream sources the local streams", "hub_stream", s.HubStream, "hub_domain", s.HubDomain,
				"sources", sources, "api_prefix", publisher.EdgeAPIPrefix(s.JSDomain))
			return
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
