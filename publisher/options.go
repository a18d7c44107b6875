package publisher

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Option configures a Publisher.
type Option func(*options) error

// RedialFunc makes a new connection after nats.go gave up on the old one. It
// should return only once connected, or when ctx ends (Close). [Connect]
// followed by jetstream.New is the usual body.
type RedialFunc func(ctx context.Context) (jetstream.JetStream, error)

type options struct {
	bufferBytes    int64
	maxInFlight    int
	ackTimeout     time.Duration
	backoffMin     time.Duration
	backoffMax     time.Duration
	maxAttempts    int
	redial         RedialFunc
	unhealthyAfter time.Duration
	dedupWindow    time.Duration // 0: ask the stream
	trimEvery      time.Duration // how often the free list is cut to recent use
	log            *slog.Logger
	obs            Observer
	streams        []StreamConfig // kept: set up again when a subject of theirs finds no stream
}

func defaultOptions() options {
	return options{
		bufferBytes:    64 << 20,
		maxInFlight:    4096,
		ackTimeout:     5 * time.Second,
		backoffMin:     50 * time.Millisecond,
		backoffMax:     2 * time.Second,
		maxAttempts:    10,
		unhealthyAfter: 30 * time.Second,
		trimEvery:      10 * time.Second,
		log:            slog.Default(),
	}
}

// WithBufferBytes limits the memory of records accepted and not yet acked
// (default 64 MiB): their bytes plus what each record costs besides (its
// struct, header map, spare buffer capacity). Publish blocks while the limit
// is reached. A record larger than the limit is still accepted when nothing
// else is buffered.
func WithBufferBytes(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("buffer bytes must be positive, got %d", n)
		}
		o.bufferBytes = n
		return nil
	}
}

// WithMaxInFlight limits publishes awaiting an ack (default 4096).
func WithMaxInFlight(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max in flight must be positive, got %d", n)
		}
		o.maxInFlight = n
		return nil
	}
}

// WithAckTimeout sets how long a publish waits for its ack before it is
// retried (default 5s). It is what guarantees that no publish waits forever,
// whatever became of the message.
func WithAckTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d <= 0 {
			return fmt.Errorf("ack timeout must be positive, got %s", d)
		}
		o.ackTimeout = d
		return nil
	}
}

// WithRetryBackoff sets the pause after a failed round of publishes, doubling
// from min to max while failures continue (default 50ms to 2s). An ack resets
// it to min.
func WithRetryBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) error {
		if minWait <= 0 || maxWait < minWait {
			return fmt.Errorf("retry backoff needs 0 < min <= max, got %s and %s", minWait, maxWait)
		}
		o.backoffMin, o.backoffMax = minWait, maxWait
		return nil
	}
}

// WithMaxAttempts bounds the sends of a record that fails on its own: its ack
// timed out while records sent after it were acked (default 10). It is then
// given up with ReasonUnacked. Failures that hit every record alike
// (disconnects, no acks at all) never count: while NATS is unreachable
// nothing is given up.
func WithMaxAttempts(n int) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("max attempts must be positive, got %d", n)
		}
		o.maxAttempts = n
		return nil
	}
}

// WithRedial lets the publisher replace a connection nats.go has closed for
// good (reconnect attempts ran out, or the same authorization error twice):
// it calls dial, with backoff, until it returns a connection, and re-sends
// the records not yet acked on it. The publisher closes the connections dial
// returns when it is closed. Without it a closed connection makes Healthy
// report an error at once.
func WithRedial(dial RedialFunc) Option {
	return func(o *options) error {
		o.redial = dial
		return nil
	}
}

// WithUnhealthyAfter sets how long the connection may stay closed, with
// redials failing, before Healthy reports an error (default 30s).
func WithUnhealthyAfter(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("unhealthy after must not be negative, got %s", d)
		}
		o.unhealthyAfter = d
		return nil
	}
}

// WithDedupWindow tells the publisher the streams' duplicate window
// (GCNATS_DEDUP_WINDOW), sparing it a stream info request per stream. A
// record first sent longer ago than that is looked up in the stream before
// it is sent again, so a copy stored before an outage is not stored twice.
func WithDedupWindow(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("dedup window must not be negative, got %s", d)
		}
		o.dedupWindow = d
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l != nil {
			o.log = l
		}
		return nil
	}
}

// WithObserver sets the callbacks for metrics.
func WithObserver(obs Observer) Option {
	return func(o *options) error {
		o.obs = obs
		return nil
	}
}

// WithStreams names the streams the publisher keeps. A record that finds
// no stream for its subject is given up, unless one of these would cover
// it: then the stream was deleted under the publisher (by an operator, or
// with a server's store) or edited to leave the subject out, and the
// publisher sets it up again with [EnsureStream] and sends the record
// there, rather than give up every event until a restart.
func WithStreams(cfgs ...StreamConfig) Option {
	return func(o *options) error {
		for _, c := range cfgs {
			if c.Name == "" || len(c.Subjects) == 0 {
				return errors.New("streams to keep need a name and subjects")
			}
		}
		o.streams = slices.Clone(cfgs)
		return nil
	}
}
