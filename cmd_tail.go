package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
)

const tailUsage = `Usage: gcnats tail [flags] [SUBJECT]

Prints the events stored in the JetStream stream, one a line (the time it was
stored, its sequence, subject and body), then follows new ones until Ctrl-C.
SUBJECT filters them with NATS wildcards ('*' one token, '>' the rest);
without it, every event of the stream.

It connects to NATS_URL, or else to GCNATS_EMBEDDED_LISTEN (default
127.0.0.1:4222, where gcnats demo and a sidecar without NATS_URL listen),
with the sidecar's NATS_CREDS, NATS_NKEY, NATS_USER and NATS_PASSWORD
(and their _FILE forms), NATS_CA, NATS_CERT and NATS_KEY. The stream is
GCNATS_STREAM (default GENESYS).

Examples:
  gcnats tail                                          the last 10 events, then new ones
  gcnats tail 'genesys.v2.users.*.presence' --last 5
  gcnats tail --since 1h 'genesys.v2.routing.queues.>'
  gcnats tail --all --count 100                        the stream's first 100 events
  gcnats tail --durable audit                          from where the last run of audit stopped
`

// tailOptions are `gcnats tail`'s flags.
type tailOptions struct {
	last    int
	since   string
	all     bool
	durable string
	count   int
	headers bool
	server  string
	stream  string
}

func tailFlags() (*flag.FlagSet, *tailOptions) {
	fs := newFlagSet("tail")
	o := &tailOptions{}
	fs.IntVar(&o.last, "last", 10, "start with the last `N` events stored (0: only new ones)")
	fs.StringVar(&o.since, "since", "", "start at a `time`: a duration back from now (90s, 1h) or RFC 3339 (2026-12-07T09:00:00Z)")
	fs.BoolVar(&o.all, "all", false, "start with the first event the stream holds")
	fs.StringVar(&o.durable, "durable", "", "read through the durable consumer `NAME`, made on first use at the start the other flags give; later runs go on where it stopped")
	fs.IntVar(&o.count, "count", 0, "stop after `N` events (0: follow until Ctrl-C)")
	fs.BoolVar(&o.headers, "headers", false, "print each event's headers (Nats-Msg-Id, Genesys-Topic, …) under it")
	fs.StringVar(&o.server, "server", "", "NATS `URL`s, comma-separated (default NATS_URL, else nats://GCNATS_EMBEDDED_LISTEN)")
	fs.StringVar(&o.stream, "stream", "", "the stream (default GCNATS_STREAM, else GENESYS)")
	return fs, o
}

// tailEnv is what tail reads of the sidecar's settings: where NATS is and
// how to log in.
type tailEnv struct {
	NATSURL        string `env:"NATS_URL"`
	EmbeddedListen string `env:"GCNATS_EMBEDDED_LISTEN" envDefault:"127.0.0.1:4222"`
	Stream         string `env:"GCNATS_STREAM" envDefault:"GENESYS"`
	NATSLogin
}

// tailConnectTimeout bounds the wait for a NATS server that does not
// answer: tail is run by hand, and a wrong address should say so soon.
const tailConnectTimeout = 5 * time.Second

func cmdTail(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := tailFlags()
	positional, err := parseFlags(fs, args, 1, stdout)
	if err != nil {
		return err
	}
	var filter string
	if len(positional) == 1 {
		filter = positional[0]
	}
	starts := 0
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "last" || f.Name == "since" || f.Name == "all" {
			starts++
		}
	})
	if starts > 1 {
		return &usageError{"--last, --since and --all each say where to start: give one"}
	}
	if o.last < 0 || o.count < 0 {
		return &usageError{"--last and --count take a number of events, 0 or more"}
	}
	var te tailEnv
	if err := env.Parse(&te); err != nil {
		return errors.New(strings.Join(settingsProblems(err), "; "))
	}
	for _, f := range []struct {
		value          *string
		fromFile, name string
	}{
		{&te.NATSUser, te.NATSUserFile, "NATS_USER"}, {&te.NATSPassword, te.NATSPasswordFile, "NATS_PASSWORD"},
	} {
		if err := mergeFile(f.value, f.fromFile, f.name); err != nil {
			return err
		}
	}
	servers := o.server
	if servers == "" {
		servers = te.NATSURL
	}
	if servers == "" {
		servers = "nats://" + te.EmbeddedListen
	}
	stream := o.stream
	if stream == "" {
		stream = te.Stream
	}

	connectCtx, cancel := context.WithTimeout(ctx, tailConnectTimeout)
	defer cancel()
	nc, err := publisher.Connect(connectCtx, servers, publisher.ConnectOptions{
		Name:      "gcnats tail",
		CredsFile: te.NATSCreds,
		NKeyFile:  te.NATSNKey,
		User:      te.NATSUser,
		Password:  te.NATSPassword,
		CAFile:    te.NATSCA,
		CertFile:  te.NATSCert,
		KeyFile:   te.NATSKey,
		Logger:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("%w\nIs gcnats running? gcnats demo and a sidecar without NATS_URL listen on 127.0.0.1:4222; elsewhere set NATS_URL or --server", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("jetstream: %w", err)
	}
	st, err := js.Stream(ctx, stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no stream %s at %s (gcnats makes it at start; GCNATS_STREAM or --stream names another)", stream, publisher.RedactURLs(servers))
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	t := &tailer{stream: st, filter: filter, opts: o, out: stdout}
	return t.run(ctx)
}

// tailer reads one stream for `gcnats tail`.
type tailer struct {
	stream jetstream.Stream
	filter string
	opts   *tailOptions
	out    io.Writer
}

func (t *tailer) run(ctx context.Context) error {
	var cons jetstream.Consumer
	var err error
	if t.opts.durable != "" {
		cons, err = t.durable(ctx)
	} else {
		var cfg jetstream.OrderedConsumerConfig
		if t.filter != "" {
			cfg.FilterSubjects = []string{t.filter}
		}
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime, err = t.start(ctx)
		if err == nil {
			cons, err = t.stream.OrderedConsumer(ctx, cfg)
		}
	}
	if err != nil {
		return err
	}
	ack := t.opts.durable != ""
	for n := 0; t.opts.count == 0 || n < t.opts.count; n++ {
		m, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("read stream: %w", err)
		}
		t.print(m)
		if ack {
			if err := m.DoubleAck(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("ack: %w", err)
			}
		}
	}
	return nil
}

// durable returns the named durable consumer, made at the start the flags
// give if it does not exist yet. An existing one keeps its position.
func (t *tailer) durable(ctx context.Context) (jetstream.Consumer, error) {
	name := t.opts.durable
	cons, err := t.stream.Consumer(ctx, name)
	if err == nil {
		if got := cons.CachedInfo().Config.FilterSubject; got != t.filter {
			return nil, fmt.Errorf("the durable consumer %s filters %q, not %q; name another, or delete it (nats consumer rm %s %s)",
				name, got, t.filter, t.stream.CachedInfo().Config.Name, name)
		}
		return cons, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer %s: %w", name, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "gcnats tail",
		FilterSubject: t.filter,
		AckPolicy:     jetstream.AckExplicitPolicy,
	}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime, err = t.start(ctx)
	if err != nil {
		return nil, err
	}
	return t.stream.CreateConsumer(ctx, cfg)
}

// start turns --last, --since and --all into a deliver policy.
func (t *tailer) start(ctx context.Context) (jetstream.DeliverPolicy, uint64, *time.Time, error) {
	switch {
	case t.opts.all:
		return jetstream.DeliverAllPolicy, 0, nil, nil
	case t.opts.since != "":
		at, err := parseSince(t.opts.since, time.Now())
		if err != nil {
			return 0, 0, nil, &usageError{err.Error()}
		}
		return jetstream.DeliverByStartTimePolicy, 0, &at, nil
	case t.opts.last == 0:
		return jetstream.DeliverNewPolicy, 0, nil, nil
	}
	seq, err := t.lastN(ctx, t.opts.last)
	if err != nil {
		return 0, 0, nil, err
	}
	return jetstream.DeliverByStartSequencePolicy, seq, nil, nil
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return at, nil
	}
	return time.Time{}, fmt.Errorf("--since %q: expected a duration back from now (90s, 1h) or an RFC 3339 time (2026-12-07T09:00:00Z)", s)
}

// lastN finds the sequence from which n events match the filter, or the
// stream's first when it holds fewer. JetStream has no "last n" for a
// filter, but a consumer's pending count from a start sequence falls as
// the start moves on: a binary search over probe consumers finds it, each
// made and deleted at once.
func (t *tailer) lastN(ctx context.Context, n int) (uint64, error) {
	info, err := t.stream.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	first, last := info.State.FirstSeq, info.State.LastSeq
	if info.State.Msgs == 0 || first > last {
		return last + 1, nil
	}
	pending := func(seq uint64) (uint64, error) {
		cons, err := t.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
			DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
			OptStartSeq:       seq,
			FilterSubject:     t.filter,
			AckPolicy:         jetstream.AckNonePolicy,
			MemoryStorage:     true,
			InactiveThreshold: time.Minute,
		})
		if err != nil {
			return 0, fmt.Errorf("find the last %d events: %w", n, err)
		}
		defer t.stream.DeleteConsumer(context.WithoutCancel(ctx), cons.CachedInfo().Name)
		return cons.CachedInfo().NumPending, nil
	}
	// The largest start with at least n pending has exactly n.
	lo, hi := first, last+1 // pending(lo) ≥ n is checked first; pending(hi) = 0
	if p, err := pending(lo); err != nil || p <= uint64(n) {
		return lo, err
	}
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		p, err := pending(mid)
		if err != nil {
			return 0, err
		}
		if p >= uint64(n) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// print writes one event: stored time, sequence, subject and body on a
// line, and with --headers its headers under it.
func (t *tailer) print(m jetstream.Msg) {
	var b strings.Builder
	if meta, err := m.Metadata(); err == nil {
		b.WriteString(meta.Timestamp.UTC().Format("2006-01-02T15:04:05.000Z07:00"))
		b.WriteString(" #")
		b.WriteString(strconv.FormatUint(meta.Sequence.Stream, 10))
		b.WriteByte(' ')
	}
	b.WriteString(m.Subject())
	b.WriteByte(' ')
	b.Write(m.Data())
	b.WriteByte('\n')
	if t.opts.headers {
		writeHeaders(&b, m.Headers())
	}
	io.WriteString(t.out, b.String())
}

func writeHeaders(b *strings.Builder, h nats.Header) {
	for _, k := range []string{"Nats-Msg-Id", "Genesys-Topic", "Genesys-Version", "Genesys-Correlation-Id", "Genesys-Received-At"} {
		if v := h.Get(k); v != "" {
			fmt.Fprintf(b, "  %s: %s\n", k, v)
		}
	}
	for k, vs := range h {
		switch k {
		case "Nats-Msg-Id", "Genesys-Topic", "Genesys-Version", "Genesys-Correlation-Id", "Genesys-Received-At":
			continue
		}
		for _, v := range vs {
			fmt.Fprintf(b, "  %s: %s\n", k, v)
		}
	}
}
