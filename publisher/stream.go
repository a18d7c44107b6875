package publisher

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig is the part of a JetStream stream that gcnats owns.
type StreamConfig struct {
	Name     string
	Subjects []string
	// Replicas defaults to 1.
	Replicas int
	// MaxAge is the retention; 0 keeps messages forever.
	MaxAge time.Duration
	// Duplicates is the dedup window; 0 takes the server default (2m).
	// It bounds how far apart two copies of an event may arrive and still
	// be stored once.
	Duplicates time.Duration
}

// EnsureStream creates the stream with file storage, or, when it exists,
// updates the settings in cfg so a changed setting applies on the next start.
// Settings that cfg does not name (limits, placement, storage, …) are kept as
// they are on the server, so an operator's tuning survives a restart.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" {
		return nil, errors.New("ensure stream: name is empty")
	}
	if len(cfg.Subjects) == 0 {
		return nil, fmt.Errorf("ensure stream %s: no subjects", cfg.Name)
	}
	if cfg.Replicas == 0 {
		cfg.Replicas = 1
	}
	ctx, stop := failOnAPIDenial(ctx, js.Conn())
	defer stop()
	s, err := ensureStream(ctx, js, cfg)
	if cause := context.Cause(ctx); err != nil && errors.Is(cause, nats.ErrPermissionViolation) {
		return nil, fmt.Errorf("ensure stream %s: %w", cfg.Name, cause)
	}
	return s, err
}

func ensureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	// Two replicas starting together may both find no stream: the loser of
	// the create race goes round once more and updates instead.
	for attempt := 0; ; attempt++ {
		s, err := js.Stream(ctx, cfg.Name)
		switch {
		case errors.Is(err, jetstream.ErrStreamNotFound):
			s, err = js.CreateStream(ctx, jetstream.StreamConfig{
				Name:       cfg.Name,
				Subjects:   cfg.Subjects,
				Replicas:   cfg.Replicas,
				MaxAge:     cfg.MaxAge,
				Duplicates: cfg.Duplicates,
				Storage:    jetstream.FileStorage,
			})
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt == 0 {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("create stream %s: %w", cfg.Name, err)
			}
			return s, nil
		case err != nil:
			return nil, fmt.Errorf("look up stream %s: %w", cfg.Name, err)
		}

		cur := s.CachedInfo().Config
		want := cur
		want.Subjects = cfg.Subjects
		want.Replicas = cfg.Replicas
		want.MaxAge = cfg.MaxAge
		if cfg.Duplicates > 0 {
			want.Duplicates = cfg.Duplicates
		}
		if slices.Equal(cur.Subjects, want.Subjects) && cur.Replicas == want.Replicas &&
			cur.MaxAge == want.MaxAge && cur.Duplicates == want.Duplicates {
			return s, nil
		}
		s, err = js.UpdateStream(ctx, want)
		if err != nil {
			return nil, fmt.Errorf("update stream %s: %w", cfg.Name, err)
		}
		return s, nil
	}
}

// failOnAPIDenial returns a context that ends, with the server's error as
// its cause, when the server refuses this connection a publish to the
// JetStream API. The server reports that on the connection, not to the
// request, which would only time out, and look like a cluster not ready.
// It chains to the connection's error handler until stop; nothing else may
// set that handler meanwhile: EnsureStream runs before a Publisher attaches
// its own, or on the Publisher's asker, one at a time (see recreate), on
// the connection in use, whose handler the Publisher sets only when it
// lets go of it for a redialled one.
func failOnAPIDenial(ctx context.Context, nc *nats.Conn) (context.Context, func()) {
	if nc == nil {
		return ctx, func() {}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	prev := nc.ErrorHandler()
	nc.SetErrorHandler(func(c *nats.Conn, sub *nats.Subscription, err error) {
		if prev != nil {
			prev(c, sub, err)
		}
		if subj, ok := deniedSubject(err); ok && strings.HasPrefix(subj, "$JS.") {
			cancel(err)
		}
	})
	return ctx, func() {
		nc.SetErrorHandler(prev)
		cancel(nil)
	}
}

// Temporary reports whether err, from [EnsureStream] or
// [EnsureHubStream], reflects the cluster's state of the moment rather
// than a refusal, so the same call may succeed later: a cluster without a
// meta leader (requests time out, or the server answers that JetStream is
// unavailable), a leader change, a peer the meta leader has not heard from
// yet or that is down while a replica must go on it, a connection between
// servers. Placement that cannot succeed (more replicas than servers, tags
// no server has) and refusals (permissions, bad configuration) are not.
func Temporary(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrReconnectBufExceeded): // a request while the connection is down
		return true
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case errCodeClusterNotAvailable, errCodeClusterNotLeader:
			return true
		case errCodeClusterNoPeers:
			return strings.Contains(apiErr.Description, "peer offline")
		}
	}
	return false
}

// nats-server's error codes that nats.go does not name.
const (
	errCodeAccountResourcesExceeded jetstream.ErrorCode = 10002 // resource limits exceeded for account
	errCodeClusterNoPeers           jetstream.ErrorCode = 10005 // no suitable peers for placement, …
	errCodeClusterNotAvailable      jetstream.ErrorCode = 10008 // JetStream system temporarily unavailable
	errCodeClusterNotLeader         jetstream.ErrorCode = 10009 // JetStream cluster can not handle request
	errCodeDuplicateInProcess       jetstream.ErrorCode = 10158 // duplicate message id is in process
)

// HubStreamConfig is a stream on a hub that holds what an edge's streams
// hold: it has no subjects of its own and sources each edge stream
// through the edge's JetStream domain, across the leaf link.
type HubStreamConfig struct {
	Name string
	// EdgeDomain is the edge's JetStream domain; the sources reach its
	// streams through $JS.<EdgeDomain>.API.
	EdgeDomain string
	// Sources are the edge's stream names.
	Sources []string
	// MaxAge applies when the stream is created; an existing stream keeps
	// its own.
	MaxAge time.Duration
	// Duplicates is the window within which the hub stores each event
	// once however many edges source it: two edges' copies of an event
	// reach the hub as far apart as one edge's link outage plus the
	// hub's retry of its source. It applies when the stream is created
	// and raises a shorter window on an existing stream, never lowers
	// one (so the edge that needs the longest wins, and edges with
	// different settings do not undo each other), up to the stream's max
	// age, the most JetStream allows.
	Duplicates time.Duration
}

// EdgeAPIPrefix is the API prefix through which a hub reaches the streams
// of the edge in domain.
func EdgeAPIPrefix(domain string) string { return "$JS." + domain + ".API" }

// EnsureHubStream creates the hub stream, or adds to an existing one the
// sources it lacks and raises its duplicate window to cfg.Duplicates; it
// never removes a source, so several edges can feed one hub stream. js
// must talk to the hub's domain.
func EnsureHubStream(ctx context.Context, js jetstream.JetStream, cfg HubStreamConfig) (jetstream.Stream, error) {
	if cfg.Name == "" || cfg.EdgeDomain == "" || len(cfg.Sources) == 0 {
		return nil, errors.New("ensure hub stream: name, edge domain and sources are required")
	}
	prefix := EdgeAPIPrefix(cfg.EdgeDomain)
	var sources []*jetstream.StreamSource
	for _, name := range cfg.Sources {
		sources = append(sources, &jetstream.StreamSource{Name: name, External: &jetstream.ExternalStream{APIPrefix: prefix}})
	}
	s, err := js.Stream(ctx, cfg.Name)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       cfg.Name,
			Sources:    sources,
			MaxAge:     cfg.MaxAge,
			Duplicates: cfg.Duplicates,
			Storage:    jetstream.FileStorage,
		})
		if err != nil {
			return nil, fmt.Errorf("create hub stream %s: %w", cfg.Name, err)
		}
		return s, nil
	case err != nil:
		return nil, fmt.Errorf("look up hub stream %s: %w", cfg.Name, err)
	}
	want := s.CachedInfo().Config
	changed := false
	for _, src := range sources {
		if !slices.ContainsFunc(want.Sources, func(have *jetstream.StreamSource) bool {
			return have.Name == src.Name && have.External != nil && have.External.APIPrefix == prefix
		}) {
			want.Sources = append(want.Sources, src)
			changed = true
		}
	}
	if w := hubWindow(cfg.Duplicates, want.MaxAge); w > want.Duplicates {
		want.Duplicates = w
		changed = true
	}
	if !changed {
		return s, nil
	}
	s, err = js.UpdateStream(ctx, want)
	if err != nil {
		return nil, fmt.Errorf("update hub stream %s: %w", cfg.Name, err)
	}
	return s, nil
}

// hubWindow is the duplicate window an existing hub stream with maxAge is
// raised to: want, or the max age when that is shorter (JetStream refuses
// a window longer than the max age).
func hubWindow(want, maxAge time.Duration) time.Duration {
	if maxAge > 0 && want > maxAge {
		return maxAge
	}
	return want
}
