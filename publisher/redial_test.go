package publisher

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// redialer dials the server with the password the client has, counting
// dials, as the sidecar's redial function does with its settings.
func redialer(url, password string, dials *atomic.Int64) RedialFunc {
	dial := Redial(url, ConnectOptions{
		User: "gcnats", Password: password, Logger: testLogger(),
		Options: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	})
	return func(ctx context.Context) (jetstream.JetStream, error) {
		dials.Add(1)
		return dial(ctx)
	}
}

// redialRun publishes continuously while lose makes nats.go give up the
// connection for good and, later, lets a new one be made; every record must
// then be stored exactly once.
func redialRun(t *testing.T, lose func(t *testing.T, p *Publisher, pr *producer)) {
	dir := t.TempDir()
	srv := startAuthServer(t, authServerOpts(dir, server.RANDOM_PORT, "pw"))
	nc := connectAuth(t, srv.ClientURL(), "pw")
	js := mustJS(t, nc)
	mustStream(t, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	var dials atomic.Int64
	p := newPublisher(t, js, WithRedial(redialer(srv.ClientURL(), "pw", &dials)), WithUnhealthyAfter(0))
	pr := startProducer(p, false)

	waitFor(t, 10*time.Second, "first acks", func() bool { return p.Stats().Acked >= 100 })
	lose(t, p, pr)
	ids := redialedExactlyOnce(t, p, pr, nc)
	t.Logf("%d records, %d dials, stats %+v", len(ids), dials.Load(), p.Stats())
}

// The connection is closed from outside, as nats.go closes it when its
// reconnects run out.
func TestRedialAfterConnectionClosed(t *testing.T) {
	redialRun(t, func(t *testing.T, p *Publisher, pr *producer) {
		p.Conn().Close()
	})
}

// A credentials rotation during a rolling restart: the server comes back
// with a password the client does not have yet, nats.go sees the same
// authorization error twice and closes the connection for good. Healthy
// reports it while no new connection can be made; once the server takes the
// client's password again, a new connection carries every record.
func TestRedialAfterAuthorizationFailures(t *testing.T) {
	dir := t.TempDir()
	srv := startAuthServer(t, authServerOpts(dir, server.RANDOM_PORT, "pw"))
	port := srv.Addr().(*net.TCPAddr).Port
	url := srv.ClientURL()
	nc := connectAuth(t, url, "pw")
	js := mustJS(t, nc)
	mustStream(t, js, StreamConfig{Name: "TEST", Subjects: []string{"t.>"}})
	var dials atomic.Int64
	p := newPublisher(t, js, WithRedial(redialer(url, "pw", &dials)), WithUnhealthyAfter(0))
	pr := startProducer(p, false)
	waitFor(t, 10*time.Second, "first acks", func() bool { return p.Stats().Acked >= 100 })

	restart := func(password string) {
		srv.Shutdown()
		srv.WaitForShutdown()
		srv = startAuthServer(t, authServerOpts(dir, port, password))
	}
	restart("rotated")
	waitFor(t, 20*time.Second, "nats.go to close the connection", nc.IsClosed)
	waitFor(t, 10*time.Second, "Healthy to report the failing redial", func() bool {
		err := p.Healthy()
		return err != nil && strings.Contains(err.Error(), "Authorization Violation")
	})
	t.Logf("while rotated: %v", p.Healthy())
	before := pr.count()
	waitFor(t, 10*time.Second, "records to arrive while no connection can be made", func() bool { return pr.count() >= before+100 })

	restart("pw")
	redialedExactlyOnce(t, p, pr, nc)
}

// redialedExactlyOnce waits for a connection other than nc, lets the
// producer run on, and checks every record it sent stored exactly once
// and the publisher healthy.
func redialedExactlyOnce(t *testing.T, p *Publisher, pr *producer, nc *nats.Conn) map[string]bool {
	t.Helper()
	waitFor(t, 20*time.Second, "a new connection", func() bool { return p.Conn() != nc && p.Healthy() == nil })
	pr.waitMore(t, 200)
	ids := pr.finish(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := p.Flush(ctx); err != nil {
		t.Fatalf("flush: %v; stats %+v", err, p.Stats())
	}
	assertExactlyOnce(t, p.JetStream(), "TEST", ids)
	if st := p.Stats(); st.Acked != uint64(len(ids)) || st.Failed != 0 {
		t.Fatalf("stats %+v for %d records", st, len(ids))
	}
	if err := p.Healthy(); err != nil {
		t.Fatalf("healthy after the redial: %v", err)
	}
	return ids
}
