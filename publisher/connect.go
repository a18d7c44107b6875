package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/rawio"
)

// ConnectOptions carries auth and TLS for [Connect]. File fields are paths.
type ConnectOptions struct {
	Name      string // client name shown by the server
	CredsFile string // NATS_CREDS: user JWT and seed (.creds)
	NKeyFile  string // NATS_NKEY: file holding an nkey user seed
	User      string // NATS_USER
	Password  string // NATS_PASSWORD
	CAFile    string // NATS_CA: roots to verify the server (enables TLS)
	CertFile  string // NATS_CERT: client certificate (with KeyFile)
	KeyFile   string // NATS_KEY
	Logger    *slog.Logger
	// Options are applied last, for what the fields above do not cover.
	Options []nats.Option
}

// Connect dials NATS and returns a connection that reconnects forever. Until
// the first connection succeeds it keeps trying while no server is reachable
// (a sidecar may start before NATS does), and gives up when ctx ends; an
// auth or TLS failure returns at once. Disconnects and reconnects are logged
// once each, without credentials. A publish while it reconnects fails at
// once (nats.ReconnectBufSize(-1)), as the Publisher needs.
func Connect(ctx context.Context, servers string, opts ConnectOptions) (*nats.Conn, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	nopts, err := opts.natsOptions(log)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	safe := redactURLs(servers)

	wait := 250 * time.Millisecond
	for attempt := 0; ; attempt++ {
		nc, err := nats.Connect(servers, nopts...)
		if err == nil {
			log.Info("nats connected", "url", nc.ConnectedUrlRedacted(), "server", nc.ConnectedServerName())
			return nc, nil
		}
		if !unreachable(err) {
			return nil, fmt.Errorf("connect nats %s: %w", safe, err)
		}
		if attempt == 0 {
			log.Warn("nats not reachable; retrying", "url", safe, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connect nats %s: %w (last error: %v)", safe, ctx.Err(), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (o ConnectOptions) natsOptions(log *slog.Logger) ([]nats.Option, error) {
	nopts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		// A publish while the connection is down fails at once instead of
		// waiting in a buffer that is written out when it is back, however
		// long after: by then the publisher has given that send up for
		// lost, and a record first stored longer ago than the stream's
		// duplicate window would be stored again (see New).
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close, which ClosedHandler reports
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			log.Info("nats connection closed")
		}),
		nats.ErrorHandler(asyncErrorLogger(log)),
		// Reads and writes outside the runtime's system call bookkeeping:
		// at everyday rates that bookkeeping's wake-ups cost more CPU than
		// the rest of the publish (see package rawio).
		nats.SetCustomDialer(&rawio.Dialer{Dialer: net.Dialer{Timeout: nats.DefaultTimeout}}),
	}
	if o.Name != "" {
		nopts = append(nopts, nats.Name(o.Name))
	}
	if o.CredsFile != "" {
		nopts = append(nopts, nats.UserCredentials(o.CredsFile))
	}
	if o.NKeyFile != "" {
		opt, err := nats.NkeyOptionFromSeed(o.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey %s: %w", o.NKeyFile, err)
		}
		nopts = append(nopts, opt)
	}
	if o.User != "" || o.Password != "" {
		nopts = append(nopts, nats.UserInfo(o.User, o.Password))
	}
	if o.CAFile != "" {
		nopts = append(nopts, nats.RootCAs(o.CAFile))
	}
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		nopts = append(nopts, nats.ClientCert(o.CertFile, o.KeyFile))
	case o.CertFile != "":
		return nil, errors.New("client certificate given without its key")
	case o.KeyFile != "":
		return nil, errors.New("client key given without its certificate")
	}
	return append(nopts, o.Options...), nil
}

// asyncErrorLogger logs the connection's async errors at most once a second:
// a subject the user may not publish to reports one per event.
func asyncErrorLogger(log *slog.Logger) nats.ErrHandler {
	var mu sync.Mutex
	limit := logLimiter{every: time.Second}
	return func(_ *nats.Conn, sub *nats.Subscription, err error) {
		mu.Lock()
		n, ok := limit.allow(time.Now())
		mu.Unlock()
		if !ok {
			return
		}
		if sub != nil {
			log.Warn("nats async error", "err", err, "subject", sub.Subject, "suppressed", n)
			return
		}
		log.Warn("nats async error", "err", err, "suppressed", n)
	}
}

// Redial returns a RedialFunc for WithRedial that dials as Connect does and
// makes a JetStream context with jsOpts on the new connection.
func Redial(servers string, opts ConnectOptions, jsOpts ...jetstream.JetStreamOpt) RedialFunc {
	return func(ctx context.Context) (jetstream.JetStream, error) {
		nc, err := Connect(ctx, servers, opts)
		if err != nil {
			return nil, err
		}
		js, err := jetstream.New(nc, jsOpts...)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("redial: %w", err)
		}
		return js, nil
	}
}

// unreachable tells "no server answered" (worth waiting for) from a server
// that answered and refused us (auth, TLS), which waiting will not fix.
func unreachable(err error) bool {
	if errors.Is(err, nats.ErrNoServers) || errors.Is(err, nats.ErrTimeout) {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr)
}

// RedactURLs hides passwords and tokens in a comma-separated server list,
// for logs.
func RedactURLs(servers string) string { return redactURLs(servers) }

// redactURLs hides passwords and tokens in a comma-separated server list.
func redactURLs(servers string) string {
	parts := strings.Split(servers, ",")
	for i, s := range parts {
		s = strings.TrimSpace(s)
		if !strings.Contains(s, "://") {
			s = "nats://" + s // as nats.go reads it
		}
		u, err := url.Parse(s)
		switch {
		case err != nil:
			parts[i] = "<unparsable url>"
		case u.User != nil: // user:password, or a token alone
			u.User = url.User("redacted")
			parts[i] = u.String()
		default:
			parts[i] = s
		}
	}
	return strings.Join(parts, ",")
}
