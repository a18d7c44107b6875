package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/simulator"
	"github.com/gcnats/gcnats/subjects"
)

// demoOptions are `gcnats demo`'s flags.
type demoOptions struct {
	runFor   time.Duration
	interval time.Duration
	queues   int
	users    int
}

func demoFlags() (*flag.FlagSet, *demoOptions) {
	fs := newFlagSet("demo")
	o := &demoOptions{}
	fs.DurationVar(&o.runFor, "for", 0, "stop after this long (0: until Ctrl-C)")
	fs.DurationVar(&o.interval, "interval", time.Second, "each topic's event interval in the simulated org")
	fs.IntVar(&o.queues, "queues", 5, "queues in the simulated org")
	fs.IntVar(&o.users, "users", 10, "users in the simulated org")
	return fs, o
}

// cmdDemo runs JetStream, a simulated org and the sidecar in one process
// and shows the events arriving in the stream.
func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := demoFlags()
	if _, err := parseFlags(fs, args, 0, stdout); err != nil {
		return err
	}
	if o.runFor > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.runFor)
		defer cancel()
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	sim, err := simulator.New(simulator.Options{
		Queues:        o.queues,
		Users:         o.users,
		EventInterval: o.interval,
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

// latestKept bounds the copy of each subject pattern's latest event: the
// screen shows one line of it.
const latestKept = 1024

// demoView is what the demo has read from the stream, by subject pattern.
type demoView struct {
	mu       sync.Mutex
	counts   map[string]int
	previous map[string]int
	latest   map[string][]byte
}

func newDemoView() *demoView {
	return &demoView{counts: map[string]int{}, previous: map[string]int{}, latest: map[string][]byte{}}
}

func (d *demoView) add(subject string, body []byte) {
	pattern := subjects.Pattern([]byte(subject))
	d.mu.Lock()
	defer d.mu.Unlock()
	d.counts[pattern]++
	kept := d.latest[pattern][:0]
	d.latest[pattern] = append(kept, body[:min(len(body), latestKept)]...)
}

// demoRow is one subject pattern on the screen.
type demoRow struct {
	pattern string
	stored  int
	rate    float64
	latest  string
}

// snapshot takes the rows since the last one, sorted by pattern.
func (d *demoView) snapshot(every time.Duration) (rows []demoRow, total int, rate float64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for p, n := range d.counts {
		r := float64(n-d.previous[p]) / every.Seconds()
		d.previous[p] = n
		rows = append(rows, demoRow{pattern: p, stored: n, rate: r, latest: string(d.latest[p])})
		total += n
		rate += r
	}
	slices.SortFunc(rows, func(a, b demoRow) int { return strings.Compare(a.pattern, b.pattern) })
	return rows, total, rate
}

func showDemo(ctx context.Context, sc *sidecar, w io.Writer, tty bool) {
	view := newDemoView()
	cons, err := sc.js.OrderedConsumer(ctx, sc.settings.Stream, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
	if err != nil {
		sc.log.Error("demo cannot read the stream", "err", err)
		return
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { view.add(m.Subject(), m.Data()) })
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
	for tick := 0; ; tick++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			rows, total, rate := view.snapshot(every)
			if tty {
				renderScreen(w, sc, rows, total, rate, terminalWidth(w))
			} else {
				renderLines(w, rows, total, rate, tick)
			}
		}
	}
}

// renderScreen redraws the terminal: a row per subject pattern with its
// count, its rate and its latest event, cut to the terminal's width.
func renderScreen(w io.Writer, sc *sidecar, rows []demoRow, total int, rate float64, width int) {
	patternWidth := len("total")
	for _, r := range rows {
		patternWidth = max(patternWidth, utf8.RuneCountInString(r.pattern))
	}
	var b strings.Builder
	b.WriteString("\033[H\033[2J")
	fmt.Fprintf(&b, "gcnats demo: a simulated Genesys org → gcnats → JetStream stream %s\n\n", sc.settings.Stream)
	head := fmt.Sprintf("%-*s  %8s  %7s  ", patternWidth, "subject", "stored", "per s")
	fmt.Fprintf(&b, "%slatest event\n", head)
	room := width - utf8.RuneCountInString(head)
	for _, r := range rows {
		fmt.Fprintf(&b, "%-*s  %8d  %7.1f  %s\n", patternWidth, r.pattern, r.stored, r.rate, cut(r.latest, room))
	}
	fmt.Fprintf(&b, "%-*s  %8d  %7.1f\n\n", patternWidth, "total", total, rate)
	io.WriteString(w, b.String())
	demoHelp(w, sc)
}

// renderLines is the demo's output when it is not a terminal (a log, a
// pipe): a line of counts and a sample event every few seconds.
func renderLines(w io.Writer, rows []demoRow, total int, rate float64, tick int) {
	fmt.Fprintf(w, "%s  %d events stored, %.1f/s, over %s\n", time.Now().Format(time.TimeOnly),
		total, rate, plural(len(rows), "subject pattern", "subject patterns"))
	if len(rows) == 0 {
		return
	}
	// Another pattern's sample each time, so a log shows every kind.
	r := rows[tick%len(rows)]
	fmt.Fprintf(w, "  latest on %s: %s\n", r.pattern, cut(r.latest, 160))
}

// cut returns s on one line of at most n runes, with … where it was cut.
func cut(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return ' '
		}
		return r
	}, s)
	if n <= 1 {
		return ""
	}
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	runes := []rune(s)
	return string(runes[:n-1]) + "…"
}

// terminalWidth is w's width in columns: the terminal's, else COLUMNS,
// else 100.
func terminalWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok {
		if cols := ttyColumns(f); cols > 0 {
			return cols
		}
	}
	var cols int
	if _, err := fmt.Sscan(os.Getenv("COLUMNS"), &cols); err == nil && cols > 0 {
		return cols
	}
	return 100
}

// demoHelp shows how to reach the events from outside the demo.
func demoHelp(w io.Writer, sc *sidecar) {
	natsURL := sc.embedded.ClientURL()
	tail := selfCommand() + " tail"
	if natsURL != "nats://127.0.0.1:4222" {
		tail = "NATS_URL=" + natsURL + " " + tail
	}
	fmt.Fprintf(w, "Read:       %s '%s.v2.users.*.presence' --last 5   # built in; -h for more\n", tail, sc.settings.SubjectPrefix)
	fmt.Fprintf(w, "Subscribe:  nats --server %s sub '%s.>'\n", natsURL, sc.settings.SubjectPrefix)
	fmt.Fprintf(w, "Replay:     nats --server %s stream view %s\n", natsURL, sc.settings.Stream)
	if sc.httpAddr != nil {
		fmt.Fprintf(w, "Metrics:    http://%s/metrics   Ready: http://%s/readyz\n", sc.httpAddr, sc.httpAddr)
	}
	fmt.Fprintln(w, "Ctrl-C stops.")
}

// selfCommand is how the user ran this binary, for commands to copy:
// ./gcnats after make demo, gcnats under go run (whose binary is deleted
// when it ends).
func selfCommand() string {
	self := os.Args[0]
	if filepath.Base(self) != "gcnats" || strings.Contains(self, "go-build") {
		return "gcnats"
	}
	return self
}
