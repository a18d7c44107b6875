// Command gcnats is a sidecar that carries Genesys Cloud notification
// events into NATS JetStream: one persistent WebSocket, many topics, a
// zero-copy demultiplex by topic, a routing table with filters, and a
// deterministic dedup id on every message.
package main

import (
	"context"
	"errors"
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

const usage = `gcnats carries Genesys Cloud notification events into NATS JetStream.

Usage:
  gcnats [run]    the sidecar, configured from the environment
  gcnats demo     JetStream, a simulated Genesys org and the sidecar, all embedded
  gcnats sim      the simulated Genesys org alone, on SIM_ADDR (default 127.0.0.1:9080)
  gcnats topics   resolve the configured topics and print the channel plan
  gcnats version  version and build info

Settings are environment variables; see README.md.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = cmdRun(ctx, stderr)
	case "demo":
		err = cmdDemo(ctx, args, stdout, stderr)
	case "sim":
		err = cmdSim(ctx, stdout, stderr)
	case "topics":
		err = cmdTopics(ctx, stdout, stderr)
	case "version", "-version", "--version":
		cmdVersion(stdout)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "gcnats: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintf(stderr, "gcnats: %v\n", err)
		return 1
	}
	return 0
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
