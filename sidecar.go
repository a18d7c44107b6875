package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gcnats/gcnats/connector"
	"github.com/gcnats/gcnats/internal/adaptprocs"
	"github.com/gcnats/gcnats/publisher"
	"github.com/gcnats/gcnats/subjects"
)

func cmdRun(ctx context.Context, stderr io.Writer) error {
	s, err := loadSettings(nil)
	if err != nil {
		return err
	}
	log := newLogger(s, stderr)
	backlog, stopProcs := adaptProcs(ctx, log)
	defer stopProcs()
	return runSidecar(ctx, s, log, sidecarHooks{backlog: backlog})
}

// adaptProcs runs the process on one P while it is nearly idle (see
// package adaptprocs) until ctx ends or the returned stop is called; stop
// waits until the default is back. backlog raises it at once; it does not
// block. The sidecar's command does this, not runSidecar: tests and
// benchmarks run sidecars inside their own process.
func adaptProcs(ctx context.Context, log *slog.Logger) (backlog func(), stop func()) {
	if why := adaptprocs.Fixed(); why != "" {
		log.Debug("GOMAXPROCS stays as it is", "gomaxprocs", runtime.GOMAXPROCS(0), "because", why)
		return nil, func() {}
	}
	log.Debug("GOMAXPROCS follows the load", "default", runtime.GOMAXPROCS(0))
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	signal := make(chan struct{}, 1)
	go func() {
		defer close(done)
		adaptprocs.Run(ctx, adaptprocs.WithBacklog(signal), adaptprocs.WithOnChange(func(c adaptprocs.Change) {
			log.Debug("GOMAXPROCS changed", "from", c.From, "to", c.To, "cores_used", c.Used, "backlog", c.Backlog)
		}))
	}()
	backlog = func() {
		select {
		case signal <- struct{}{}:
		default:
		}
	}
	return backlog, func() { cancel(); <-done }
}

// sidecar is one running gcnats: its NATS side, its Genesys side and the
// HTTP endpoints.
type sidecar struct {
	// unflushed is how many events shutdown could not store (logged).
	unflushed atomic.Int64
	settings  Settings
	log       *slog.Logger
	metrics   *metrics
	gaps      *gapReporter // the connector's Observer; publishes gap records
	table     *subjects.Table
	embedded  *publisher.Embedded
	nc        *nats.Conn
	js        jetstream.JetStream
	pub       *publisher.Publisher
	conn      *connector.Connector
	http      *http.Server
	httpAddr  net.Addr

	// up is set once conn and js exist; until then phase says what
	// start-up waits for (NATS may be slow to come up, Genesys too).
	up    atomic.Bool
	phase atomic.Value // string
	// natsUp is set once apps can use NATS: the sidecar's connection is
	// up (so an embedded server accepts clients) and the streams exist.
	natsUp atomic.Bool

	// bg runs work beside the sidecar (the hub stream's set-up) until
	// shutdown cancels it.
	bg       sync.WaitGroup
	bgCancel context.CancelFunc

	// stop ends GCNATS_SHUTDOWN_TIMEOUT after shutdown begins (the signal,
	// or the connector failing): flushing gives up then.
	stop       context.Context
	cancelStop context.CancelFunc
	stopOnce   sync.Once
	stopTimer  *time.Timer
}

// sidecarHooks are what a sidecar's runner hears from it; each may be nil.
type sidecarHooks struct {
	// started is called once everything is up.
	started func(*sidecar)
	// backlog is called, without blocking, when events begin to queue in
	// the publisher's buffer.
	backlog func()
}

// runSidecar runs gcnats until ctx ends, then shuts down within the
// shutdown timeout.
func runSidecar(ctx context.Context, s Settings, log *slog.Logger, hooks sidecarHooks) error {
	sc, err := startSidecar(ctx, s, log, hooks.backlog)
	if err != nil {
		return err
	}
	if hooks.started != nil {
		hooks.started(sc)
	}
	runErr := sc.conn.Run(ctx)
	if runErr != nil {
		log.Error("genesys connector stopped", "err", runErr)
	}
	sc.shutdown()
	return runErr
}

func startSidecar(ctx context.Context, s Settings, log *slog.Logger, backlog func()) (_ *sidecar, err error) {
	sc := &sidecar{settings: s, log: log, metrics: newMetrics()}
	sc.stop, sc.cancelStop = context.WithCancel(context.WithoutCancel(ctx))
	context.AfterFunc(ctx, sc.beginShutdown)
	sc.phase.Store("loading the routes")
	defer func() {
		if err != nil {
			sc.shutdown()
		}
	}()
	// The endpoints come first: while NATS or Genesys is slow to answer,
	// the process is live and says why it is not ready.
	if s.HTTPAddr != "" {
		if err := sc.serveHTTP(s.HTTPAddr); err != nil {
			return nil, err
		}
	}

	if err := servePprof(s.PprofAddr, log); err != nil {
		return nil, err
	}

	if s.RoutesFile != "" {
		sc.table, err = subjects.Load(s.RoutesFile, s.SubjectPrefix)
	} else {
		sc.table, err = subjects.New(s.SubjectPrefix)
	}
	if err != nil {
		return nil, fmt.Errorf("GCNATS_ROUTES_FILE: %w", err)
	}

	url := s.NATSURL
	sc.phase.Store("connecting to NATS")
	if url == "" {
		eopts := publisher.EmbeddedOptions{Listen: s.EmbeddedListen, StoreDir: s.StoreDir, Logger: log, Domain: s.JSDomain}
		if leaf := s.leafURLs(); len(leaf) > 0 {
			eopts.Leaf = &publisher.LeafRemote{
				URLs:      leaf,
				CredsFile: s.LeafCreds,
				User:      s.LeafUser,
				Password:  s.LeafPassword,
				CAFile:    s.LeafCA,
				CertFile:  s.LeafCert,
				KeyFile:   s.LeafKey,
				// The hub gets the events by sourcing the local stream;
				// sent over the link too, a hub stream on these subjects
				// would store each event twice.
				DenyExports: streamSubjects(sc.table.Streams(s.Stream)),
			}
		}
		sc.embedded, err = publisher.StartEmbedded(eopts)
		if err != nil {
			return nil, fmt.Errorf("start embedded JetStream (GCNATS_EMBEDDED_LISTEN=%s, GCNATS_STORE_DIR=%s): %w", s.EmbeddedListen, s.StoreDir, err)
		}
		url = sc.embedded.ClientURL()
	}
	sc.logMode(url)
	connOpts := publisher.ConnectOptions{
		Name:      "gcnats",
		CredsFile: s.NATSCreds,
		NKeyFile:  s.NATSNKey,
		User:      s.NATSUser,
		Password:  s.NATSPassword,
		CAFile:    s.NATSCA,
		CertFile:  s.NATSCert,
		KeyFile:   s.NATSKey,
		Logger:    log,
	}
	if sc.embedded != nil {
		// In process, not over loopback TCP: no system calls on the
		// way to the server and back (see Embedded.InProcessConn).
		connOpts.Options = append(connOpts.Options, nats.InProcessServer(sc.embedded))
	}
	sc.nc, err = publisher.Connect(ctx, url, connOpts)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	sc.js, err = jetstream.New(sc.nc)
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	sc.phase.Store("setting up the stream")
	var streams []publisher.StreamConfig
	for _, st := range sc.table.Streams(s.Stream) {
		cfg := publisher.StreamConfig{
			Name:       st.Name,
			Subjects:   st.Subjects,
			Replicas:   s.StreamReplicas,
			MaxAge:     s.StreamMaxAge,
			Duplicates: s.DedupWindow,
		}
		if err := sc.ensureStream(ctx, cfg); err != nil {
			return nil, fmt.Errorf("set up stream %s: %w", st.Name, err)
		}
		streams = append(streams, cfg)
	}
	sc.natsUp.Store(true)
	sc.pub, err = publisher.New(sc.js,
		publisher.WithBufferBytes(int64(s.BufferBytes)),
		publisher.WithLogger(log),
		publisher.WithObserver(sc.metrics.publishObserver(backlog, s.DedupWindow)),
		// nats.go gives a connection up for good after the same auth
		// error twice (credentials rotated during a rolling restart) or
		// when its reconnects run out: dial a new one, keeping the buffer.
		publisher.WithRedial(publisher.Redial(url, connOpts)),
		publisher.WithDedupWindow(s.DedupWindow),
		// A stream deleted under a running sidecar is created again rather
		// than every event given up until a restart.
		publisher.WithStreams(streams...),
	)
	if err != nil {
		return nil, fmt.Errorf("publisher: %w", err)
	}

	sc.gaps = newGapReporter(sc.stop, sc.metrics, sc.pub, s.SubjectPrefix, log)
	pipe := newPipeline(sc.table, sc.pub, s.Payload == "frame", sc.metrics, log)
	sc.conn, err = connector.New(connector.Options{
		APIURL:           s.APIURL,
		LoginURL:         s.LoginURL,
		ClientID:         s.ClientID,
		ClientSecret:     s.ClientSecret,
		Topics:           s.Topics,
		MaxChannels:      s.MaxChannels,
		RESTRate:         s.RESTRate,
		HeartbeatTimeout: s.HeartbeatTimeout,
		TopicRefresh:     s.TopicRefresh,
		DrainTimeout:     s.ShutdownTimeout,
		HandoverGrace:    s.HandoverGrace,
		Logger:           log,
		Observer:         sc.gaps,
	}, pipe)
	if err != nil {
		return nil, err
	}
	sc.metrics.watchConnector(sc.conn)
	if sc.embedded != nil && sc.embedded.Leaf() {
		sc.metrics.watchLeaf(sc.embedded.LeafConnected)
	}
	if s.HubStream != "" {
		var bg context.Context
		bg, sc.bgCancel = context.WithCancel(context.WithoutCancel(ctx))
		sc.bg.Add(1)
		go sc.keepHubStream(bg)
	}
	sc.up.Store(true)
	return sc, nil
}

func streamSubjects(streams []subjects.Stream) []string {
	var out []string
	for _, st := range streams {
		out = append(out, st.Subjects...)
	}
	return out
}

// logMode says in one line where events go: the embedded server, the
// embedded server as a hub's leaf node, or an external NATS. The embedded
// modes keep the message "embedded JetStream server started", which
// scripts read the server's URL from.
func (sc *sidecar) logMode(url string) {
	s := sc.settings
	switch {
	case sc.embedded != nil && sc.embedded.Leaf():
		sc.log.Info("embedded JetStream server started as a leaf node of a hub", "mode", "leaf", "url", url, "store", s.StoreDir,
			"domain", s.JSDomain, "hub", publisher.RedactURLs(s.LeafRemote), "hub_stream", s.HubStream, "hub_domain", s.HubDomain, "hub_dedup_window", s.HubDedupWindow)
	case sc.embedded != nil:
		sc.log.Info("embedded JetStream server started", "mode", "embedded", "url", url, "store", s.StoreDir, "domain", s.JSDomain)
	default:
		sc.log.Info("publishing to an external NATS", "mode", "external", "servers", publisher.RedactURLs(url), "replicas", s.StreamReplicas)
	}
}

// beginShutdown starts the shutdown timeout, once: from the signal, not
// from when reading has stopped, since a reader may be blocked on a full
// buffer until the very same deadline.
func (sc *sidecar) beginShutdown() {
	sc.stopOnce.Do(func() {
		sc.stopTimer = time.AfterFunc(sc.settings.ShutdownTimeout, sc.cancelStop)
	})
}

// shutdown flushes what was read, by the shutdown deadline, and closes
// everything. The connector has stopped reading by now.
func (sc *sidecar) shutdown() {
	sc.beginShutdown()
	if sc.bgCancel != nil {
		sc.bgCancel()
		sc.bg.Wait()
	}
	if sc.gaps != nil {
		sc.gaps.close()
	}
	if sc.pub != nil {
		unflushed, err := sc.pub.Close(sc.stop)
		sc.unflushed.Store(int64(unflushed))
		if unflushed > 0 || err != nil {
			sc.log.Error("shutdown could not flush every event", "unflushed", unflushed, "timeout", sc.settings.ShutdownTimeout, "err", err)
		} else {
			sc.log.Info("flushed every event")
		}
	}
	if sc.nc != nil {
		sc.nc.Close()
	}
	if sc.embedded != nil {
		sc.embedded.Shutdown()
	}
	if sc.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = sc.http.Shutdown(ctx)
		cancel()
	}
	sc.stopTimer.Stop()
	sc.cancelStop()
}

func (sc *sidecar) serveHTTP(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("GCNATS_HTTP_ADDR: listen on %s: %w", addr, err)
	}
	sc.httpAddr = l.Addr()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", sc.healthz)
	mux.HandleFunc("GET /readyz", sc.readyz)
	mux.HandleFunc("GET /startupz", sc.startupz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(sc.metrics.reg, promhttp.HandlerOpts{}))
	sc.http = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := sc.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			sc.log.Error("http server stopped", "err", err)
		}
	}()
	return nil
}

// healthz is live until shutdown has given up flushing. A NATS or Genesys
// outage is not a reason to restart: the sidecar rides those out itself,
// and a restart would only lose what it holds in memory. A NATS
// connection nats.go closed for good and that cannot be dialled again is.
func (sc *sidecar) healthz(w http.ResponseWriter, _ *http.Request) {
	if sc.stop.Err() != nil {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	if sc.up.Load() {
		if err := sc.pub.Healthy(); err != nil {
			http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	fmt.Fprintln(w, "ok")
}

// startupz answers 200 once apps in the pod can use NATS: the sidecar is
// connected (in embedded mode, so the embedded server accepts clients) and
// the streams exist. The native sidecar's startupProbe uses it, so the app
// containers start only then; /healthz answers long before.
func (sc *sidecar) startupz(w http.ResponseWriter, _ *http.Request) {
	if !sc.natsUp.Load() {
		http.Error(w, "not started: "+sc.phase.Load().(string), http.StatusServiceUnavailable)
		return
	}
	if sc.embedded != nil && !sc.embedded.Ready() {
		http.Error(w, "not started: the embedded NATS server does not accept clients", http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "started: NATS accepts clients and the streams exist")
}

// leafState is what /readyz says of the leaf link in edge mode. A link
// that is down does not make the pod unready: the local stream holds the
// events until the hub is back, and apps in the pod read it meanwhile.
func (sc *sidecar) leafState() string {
	if sc.embedded == nil || !sc.embedded.Leaf() {
		return ""
	}
	if sc.embedded.LeafConnected() {
		return ", leaf link to the hub up"
	}
	return ", leaf link to the hub down (events are kept in the local stream until it is back)"
}

// readyz is ready only when every planned channel is connected and
// subscribed and JetStream answers.
func (sc *sidecar) readyz(w http.ResponseWriter, r *http.Request) {
	if !sc.up.Load() {
		http.Error(w, "not ready: starting: "+sc.phase.Load().(string), http.StatusServiceUnavailable)
		return
	}
	ready, why := sc.conn.Status().Ready()
	if !ready {
		http.Error(w, "not ready: "+why+sc.leafState(), http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	// The publisher's connection, not the first one: it may have redialled.
	if _, err := sc.pub.JetStream().AccountInfo(ctx); err != nil {
		http.Error(w, "not ready: jetstream: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready: "+why+", jetstream answers"+sc.leafState())
}
