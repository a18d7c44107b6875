// Command gcnats is a sidecar that carries Genesys Cloud notification
// events into NATS JetStream: one persistent WebSocket, many topics, a
// zero-copy demultiplex by topic, a routing table with filters, and a
// deterministic dedup id on every message.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

// command is one subcommand: its name, a line for the overview, and what
// `gcnats CMD -h` prints above its flags.
type command struct {
	name     string
	synopsis string
	usage    string
	run      func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands in the order the overview lists them (set in init: the
// commands' own code reads the list for their usage).
var commands []command

func init() {
	commands = []command{
		{"run", "the sidecar, configured from the environment (the default)",
			"Usage: gcnats [run]\n\nRuns the sidecar: Genesys Cloud notifications into JetStream. Every setting is an\nenvironment variable; see docs/settings.md.\n",
			cmdRunArgs},
		{"demo", "JetStream, a simulated Genesys org and the sidecar, all embedded; needs no settings",
			"Usage: gcnats demo [flags]\n\nRuns JetStream, a simulated Genesys Cloud org and the sidecar in one process and\nshows the events arriving in the stream. Ctrl-C stops it.\n",
			cmdDemo},
		{"sim", "the simulated Genesys org alone, on SIM_ADDR (default 127.0.0.1:9080)",
			"Usage: gcnats sim\n\nRuns the simulated Genesys Cloud org alone and prints the settings that point a\nsidecar at it. Its settings: SIM_ADDR (127.0.0.1:9080), SIM_QUEUES (20),\nSIM_USERS (50), SIM_EVENT_INTERVAL (1s), SIM_HEARTBEAT_INTERVAL (30s),\nSIM_TOKEN_LIFETIME and SIM_CHANNEL_LIFETIME (24h), SIM_SEED (1),\nSIM_CLIENT_ID and SIM_CLIENT_SECRET (random).\n",
			cmdSim},
		{"topics", "check the configured topics against Genesys' list, expand them and print the channel plan",
			"Usage: gcnats topics\n\nChecks each topic of GCNATS_TOPICS against the topics Genesys offers, expands\nevery '*' over the org's queues or users, and prints the topics with the\nchannel plan. It opens no socket and does not touch NATS.\n",
			cmdTopics},
		{"tail", "print the events stored in the stream, as they arrive; needs no nats CLI",
			tailUsage,
			cmdTail},
		{"version", "version and build info",
			"Usage: gcnats version\n\nPrints gcnats' version, the Go version, the commit it was built from and the\nversions of nats.go and the Genesys SDK in it.\n",
			func(_ context.Context, args []string, stdout, _ io.Writer) error {
				if err := noArgs("version", args, stdout); err != nil {
					return err
				}
				cmdVersion(stdout)
				return nil
			}},
	}
}

func overview() string {
	var b strings.Builder
	b.WriteString("gcnats carries Genesys Cloud notification events into NATS JetStream.\n\nUsage:\n")
	for _, c := range commands {
		name := c.name
		if name == "run" {
			name = "[run]"
		}
		fmt.Fprintf(&b, "  gcnats %-8s %s\n", name, c.synopsis)
	}
	b.WriteString("\n`gcnats COMMAND -h` shows a command's flags. Settings are environment variables;\nsee README.md and docs/settings.md.\n")
	return b.String()
}

// errHelpShown: -h printed the usage; the command did nothing else.
var errHelpShown = errors.New("help shown")

// usageError is a command line that does not parse: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	switch name {
	case "-version", "--version":
		name = "version"
	case "help", "-h", "-help", "--help":
		if len(args) > 0 {
			// gcnats help CMD is gcnats CMD -h.
			name, args = args[0], []string{"-h"}
			break
		}
		fmt.Fprint(stdout, overview())
		return 0
	}
	var cmd *command
	for i := range commands {
		if commands[i].name == name {
			cmd = &commands[i]
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "gcnats: unknown command %q\n\n%s", name, overview())
		return 2
	}
	err := cmd.run(ctx, args, stdout, stderr)
	var usageErr *usageError
	switch {
	case err == nil, errors.Is(err, errHelpShown), errors.Is(err, context.Canceled):
		return 0
	case errors.As(err, &usageErr):
		fmt.Fprintf(stderr, "gcnats %s: %v\n\n%s", cmd.name, err, usageText(cmd))
		return 2
	}
	fmt.Fprintf(stderr, "gcnats: %v\n", err)
	return 1
}

// newFlagSet is a subcommand's flag set: it prints nothing itself, so
// that -h goes to standard output with exit code 0 and a bad flag to
// standard error with exit code 2 (see parseFlags).
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses a subcommand's command line. Flags and arguments may
// come in any order (gcnats tail SUBJECT --last 5); at most maxArgs
// arguments are accepted. -h prints the usage and returns errHelpShown.
func parseFlags(fs *flag.FlagSet, args []string, maxArgs int, stdout io.Writer) ([]string, error) {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usageText(findCommand(fs.Name())))
			return nil, errHelpShown
		}
		if err != nil {
			return nil, &usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) > maxArgs {
		return nil, &usageError{fmt.Sprintf("unexpected argument %q", positional[maxArgs])}
	}
	return positional, nil
}

func findCommand(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return &command{name: name}
}

// usageText is a command's usage followed by its flags, if it has any.
func usageText(cmd *command) string {
	var b strings.Builder
	b.WriteString(cmd.usage)
	fs := flagsOf(cmd.name)
	hasFlags := false
	fs.VisitAll(func(*flag.Flag) { hasFlags = true })
	if hasFlags {
		b.WriteString("\nFlags:\n")
		fs.SetOutput(&b)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return b.String()
}

// flagsOf returns a fresh flag set of a command with flags, for its usage.
func flagsOf(name string) *flag.FlagSet {
	switch name {
	case "demo":
		fs, _ := demoFlags()
		return fs
	case "tail":
		fs, _ := tailFlags()
		return fs
	}
	return newFlagSet(name)
}

// noArgs parses the command line of a command that takes no flags or
// arguments, only -h.
func noArgs(name string, args []string, stdout io.Writer) error {
	_, err := parseFlags(newFlagSet(name), args, 0, stdout)
	return err
}

// plural is "1 channel", "2 channels".
func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}

func cmdVersion(w io.Writer) {
	fmt.Fprintf(w, "gcnats %s\n", version)
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	fmt.Fprintln(w, info.GoVersion)
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time", "vcs.modified", "GOOS", "GOARCH", "CGO_ENABLED":
			fmt.Fprintf(w, "%s %s\n", s.Key, s.Value)
		}
	}
	for _, d := range info.Deps {
		// NATS on one side, the Genesys SDK on the other.
		if strings.HasPrefix(d.Path, "github.com/nats-io/nats") || strings.HasPrefix(d.Path, "github.com/mypurecloud/") {
			fmt.Fprintf(w, "%s %s\n", d.Path, d.Version)
		}
	}
}
