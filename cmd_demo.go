package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/simulator"
	"github.com/gcnats/gcnats/subjects"
)

// cmdDemo runs JetStream, a simulated org and the sidecar in one process
// and shows the events arriving in the stream.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runFor := fs.Duration("for", 0, "stop after this long (0: until interrupted)")
	interval := fs.Duration("interval", time.Second, "each topic's event interval in the simulated org")
	queues := fs.Int("queues", 5, "queues in the simulated org")
	users := fs.Int("users", 10, "users in the simulated org")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *runFor)
		defer cancel()
	}

	logLevel := slog.LevelWarn
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	sim, err := simulator.New(simulator.Options{
		Queues:        *queues,
		Users:         *users,
		EventInterval: *interval,
		Seed:          1,
		RecordLimit:   1000,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	if err := sim.Start(); err != nil {
		return err
	}
	defer sim.Close()

	store, err := os.MkdirTemp("", "gcnats-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(store)
	environ := map[string]string{
		"GENESYSCLOUD_API_URL":            sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID":     sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET": sim.ClientSecret(),
		"GCNATS_TOPICS":                   strings.Join(demoTopics, ","),
		"GCNATS_STORE_DIR":                store,
		"GCNATS_EMBEDDED_LISTEN":          envOr("GCNATS_EMBEDDED_LISTEN", "127.0.0.1:4222"),
		"GCNATS_HTTP_ADDR":                envOr("GCNATS_HTTP_ADDR", "127.0.0.1:8080"),
		"GCNATS_LOG_FORMAT":               "text",
		"GCNATS_LOG_LEVEL":                "warn",
	}
	s, err := loadSettings(environ)
	if err != nil {
		return err
	}
	return runSidecar(ctx, s, log, sidecarHooks{started: func(sc *sidecar) {
		go showDemo(ctx, sc, stdout, isTerminal(stdout))
	}})
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// demoCounts counts the stream's new messages by subject pattern.
type demoCounts struct {
	mu       sync.Mutex
	counts   map[string]int
	previous map[string]int
}

func showDemo(ctx context.Context, sc *sidecar, w io.Writer, tty bool) {
	counts := &demoCounts{counts: map[string]int{}, previous: map[string]int{}}
	cons, err := sc.js.OrderedConsumer(ctx, sc.settings.Stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		sc.log.Error("demo cannot read the stream", "err", err)
		return
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		pattern := subjects.Pattern([]byte(m.Subject()))
		counts.mu.Lock()
		counts.counts[pattern]++
		counts.mu.Unlock()
	})
	if err != nil {
		sc.log.Error("demo cannot read the stream", "err", err)
		return
	}
	defer cc.Stop()

	every := time.Second
	if !tty {
		every = 5 * time.Second
		fmt.Fprintf(w, "gcnats demo: a simulated Genesys org → gcnats → JetStream stream %s\n", sc.settings.Stream)
		demoHelp(w, sc)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			counts.render(w, sc, every, tty)
		}
	}
}

func (d *demoCounts) render(w io.Writer, sc *sidecar, every time.Duration, tty bool) {
	d.mu.Lock()
	patterns := make([]string, 0, len(d.counts))
	total, rate := 0, 0.0
	rates := make(map[string]float64, len(d.counts))
	for p, n := range d.counts {
		patterns = append(patterns, p)
		total += n
		rates[p] = float64(n-d.previous[p]) / every.Seconds()
		rate += rates[p]
		d.previous[p] = n
	}
	counts := maps.Clone(d.counts)
	d.mu.Unlock()
	slices.Sort(patterns)
	if !tty {
		fmt.Fprintf(w, "%s  %d events stored, %.1f/s, over %d subject patterns\n", time.Now().Format(time.TimeOnly), total, rate, len(patterns))
		return
	}
	fmt.Fprint(w, "\033[H\033[2J")
	fmt.Fprintf(w, "gcnats demo: a simulated Genesys org → gcnats → JetStream stream %s\n\n", sc.settings.Stream)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "subject\t  stored\tper second")
	for _, p := range patterns {
		fmt.Fprintf(tw, "%s\t%8d\t%10.1f\n", p, counts[p], rates[p])
	}
	fmt.Fprintf(tw, "total\t%8d\t%10.1f\n", total, rate)
	tw.Flush()
	fmt.Fprintln(w)
	demoHelp(w, sc)
}

// demoHelp shows how to reach the events from outside the demo.
func demoHelp(w io.Writer, sc *sidecar) {
	natsURL := sc.embedded.ClientURL()
	fmt.Fprintf(w, "Subscribe:  nats --server %s sub '%s.>'\n", natsURL, sc.settings.SubjectPrefix)
	fmt.Fprintf(w, "Replay:     nats --server %s stream view %s\n", natsURL, sc.settings.Stream)
	if sc.httpAddr != nil {
		fmt.Fprintf(w, "Metrics:    http://%s/metrics   Ready: http://%s/readyz\n", sc.httpAddr, sc.httpAddr)
	}
	fmt.Fprintln(w, "Ctrl-C stops.")
}
