package publisher

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// DefaultEmbeddedListen is where the embedded server listens when
// EmbeddedOptions.Listen is empty (GCNATS_EMBEDDED_LISTEN's default).
const DefaultEmbeddedListen = "127.0.0.1:4222"

// EmbeddedOptions configures [StartEmbedded].
type EmbeddedOptions struct {
	// Listen is host:port for clients; port 0 or -1 picks a free one.
	// Empty means DefaultEmbeddedListen.
	Listen string
	// StoreDir holds JetStream's files. Required: a restart with the same
	// directory keeps the messages and the duplicate window.
	StoreDir string
	// Logger receives the server's log (notices at info, debug off).
	// Nil discards it.
	Logger *slog.Logger
	// Domain is the server's JetStream domain. A leaf node needs one of its
	// own, so that its JetStream API ($JS.<domain>.API) is told apart from
	// the hub's and both can hold streams. Empty: no domain.
	Domain string
	// Leaf, when not nil, joins a hub as a leaf node.
	Leaf *LeafRemote
}

// LeafRemote is the hub an embedded server joins as a leaf node
// (GCNATS_LEAF_*). File fields are paths.
type LeafRemote struct {
	// URLs are the hub's leaf node listeners, e.g. nats-leaf://hub:7422;
	// the server tries them in turn and reconnects for ever.
	URLs      []string
	CredsFile string // user JWT and seed (.creds)
	User      string
	Password  string
	CAFile    string // roots to verify the hub (enables TLS)
	CertFile  string // client certificate (with KeyFile)
	KeyFile   string
	// DenyExports are subjects never sent to the hub. The edge's own
	// subjects belong here: a hub stream listening on them would store
	// every event once from the link and again from sourcing.
	DenyExports []string
	// ReconnectInterval is how often a lost link is redialled; 0 takes
	// nats-server's default (1s).
	ReconnectInterval time.Duration
}

// remoteOpts turns r into nats-server's remote leaf options.
func (r *LeafRemote) remoteOpts() (*server.RemoteLeafOpts, error) {
	if len(r.URLs) == 0 {
		return nil, errors.New("no hub url")
	}
	ro := &server.RemoteLeafOpts{Credentials: r.CredsFile, DenyExports: r.DenyExports}
	for _, s := range r.URLs {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("hub url %s: not a url such as nats-leaf://hub:7422", RedactURLs(s))
		}
		if r.User != "" || r.Password != "" {
			u.User = url.UserPassword(r.User, r.Password)
		}
		ro.URLs = append(ro.URLs, u)
	}
	if r.CAFile != "" || r.CertFile != "" {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if r.CAFile != "" {
			pem, err := os.ReadFile(r.CAFile)
			if err != nil {
				return nil, fmt.Errorf("hub ca: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("hub ca %s: no pem certificate in it", r.CAFile)
			}
		}
		switch {
		case r.CertFile != "" && r.KeyFile != "":
			cert, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("hub client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		case r.CertFile != "" || r.KeyFile != "":
			return nil, errors.New("hub client certificate and key: set both or neither")
		}
		ro.TLS, ro.TLSConfig = true, cfg
	}
	return ro, nil
}

// Embedded is an in-process JetStream server: with NATS_URL empty the sidecar
// runs one for the pod.
type Embedded struct {
	srv  *server.Server
	leaf bool
	addr string // as configured, with the port actually bound
	url  string
}

// StartEmbedded starts the server and waits until it accepts connections.
// It fails with a clear error when the port is taken or JetStream cannot use
// StoreDir.
func StartEmbedded(opts EmbeddedOptions) (*Embedded, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("start embedded nats: store dir is empty")
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultEmbeddedListen
	}
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < -1 || port > 65535 {
		return nil, fmt.Errorf("start embedded nats: listen address %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT // for nats-server, 0 means 4222
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	sopts := &server.Options{
		ServerName: "gcnats-embedded", // stable across restarts: JetStream keys its state by it
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   opts.StoreDir,
		NoSigs:     true,
		// Nothing listens for HTTP monitoring, clustering or leaf nodes:
		// a leaf node dials out to its hub.
		JetStreamDomain: opts.Domain,
	}
	if opts.Domain != "" {
		// Server names must be unique among everything joined to a hub;
		// the domain is, and it stays the same across restarts.
		sopts.ServerName = "gcnats-" + opts.Domain
	}
	if opts.Leaf != nil {
		ro, err := opts.Leaf.remoteOpts()
		if err != nil {
			return nil, fmt.Errorf("start embedded nats: leaf remote: %w", err)
		}
		if opts.Domain == "" {
			return nil, errors.New("start embedded nats: a leaf node needs a jetstream domain of its own")
		}
		sopts.LeafNode.Remotes = []*server.RemoteLeafOpts{ro}
		sopts.LeafNode.ReconnectInterval = opts.Leaf.ReconnectInterval
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("start embedded nats: %w", err)
	}
	sl := &serverLog{log: log.With("component", "nats-server")}
	srv.SetLoggerV2(sl, false, false, false)

	// Start returns once JetStream is up and the listener is open or has
	// failed; a failure is reported through Fatalf, which we keep.
	srv.Start()
	if msg := sl.fatal(); msg != "" {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats on %s: %s", listen, msg)
	}
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats on %s: not ready after 10s", listen)
	}
	addr, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, fmt.Errorf("start embedded nats on %s: no listener", listen)
	}
	e := &Embedded{srv: srv, addr: net.JoinHostPort(host, strconv.Itoa(addr.Port)), leaf: opts.Leaf != nil}
	dial := host
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		dial = "127.0.0.1" // listening on every interface: loopback is one of them
	}
	e.url = "nats://" + net.JoinHostPort(dial, strconv.Itoa(addr.Port))
	log.Debug("embedded nats started", "addr", e.addr, "store_dir", opts.StoreDir)
	return e, nil
}

// Leaf reports whether the server was started as a leaf node.
func (e *Embedded) Leaf() bool { return e.leaf }

// Ready reports whether the server accepts client connections.
func (e *Embedded) Ready() bool { return e.srv.ReadyForConnections(time.Millisecond) }

// LeafConnected reports whether the leaf link to the hub is up; false
// without one.
func (e *Embedded) LeafConnected() bool { return e.srv.NumLeafNodes() > 0 }

// ClientURL is the URL clients connect to, e.g. nats://127.0.0.1:4222.
func (e *Embedded) ClientURL() string { return e.url }

// Addr is the host:port the server listens on; pass it as Listen to start a
// server on the same port again.
func (e *Embedded) Addr() string { return e.addr }

// Shutdown stops the server and waits until it has stopped and flushed its
// store.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLog adapts nats-server's logger to slog and keeps the first fatal
// message, which nats-server only logs.
type serverLog struct {
	log *slog.Logger

	mu       sync.Mutex
	fatalMsg string
}

func (l *serverLog) logf(level slog.Level, format string, v []any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

// Notices (the start-up banner, listening addresses) are debug detail for
// a sidecar; warnings and errors stay visible.
func (l *serverLog) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }
func (l *serverLog) Warnf(format string, v ...any)   { l.logf(slog.LevelWarn, format, v) }
func (l *serverLog) Errorf(format string, v ...any)  { l.logf(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any)  { l.logf(slog.LevelDebug, format, v) }
func (l *serverLog) Tracef(format string, v ...any)  { l.logf(slog.LevelDebug-4, format, v) }

func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	if l.fatalMsg == "" {
		l.fatalMsg = msg
	}
	l.mu.Unlock()
	l.log.Error(msg)
}

func (l *serverLog) fatal() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatalMsg
}
