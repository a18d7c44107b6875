package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/internal/natstest"
)

// TestCommandsAnswerHelp: every subcommand prints its usage on standard
// output for -h, --help and `gcnats help CMD`, and exits 0; before, `gcnats
// demo -h` exited 1 with "flag: help requested" and the others ignored it.
func TestCommandsAnswerHelp(t *testing.T) {
	for _, c := range commands {
		for _, args := range [][]string{{c.name, "-h"}, {c.name, "--help"}, {"help", c.name}} {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Errorf("gcnats %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
			}
			if !strings.Contains(stdout.String(), "Usage: gcnats ") || stderr.Len() > 0 {
				t.Errorf("gcnats %s: stdout %q, stderr %q", strings.Join(args, " "), stdout.String(), stderr.String())
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "gcnats tail") {
		t.Errorf("gcnats -h: exit %d, %q", code, stdout.String())
	}
	for _, args := range [][]string{{"demo", "-nope"}, {"sim", "extra"}, {"tail", "a", "b"}, {"tail", "--last", "3", "--all"}} {
		stdout.Reset()
		stderr.Reset()
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "Usage: gcnats ") {
			t.Errorf("gcnats %s: exit %d, stderr %q; want 2 and the usage", strings.Join(args, " "), code, stderr.String())
		}
	}
}

// TestNoSettingsPointsToDemo: with no setting at all, the sidecar names
// what is missing and the two commands that need none.
func TestNoSettingsPointsToDemo(t *testing.T) {
	_, err := loadSettings(map[string]string{})
	if err == nil {
		t.Fatal("no error without settings")
	}
	for _, want := range []string{"GENESYSCLOUD_REGION", "GENESYSCLOUD_OAUTHCLIENT_ID", "GCNATS_TOPICS", "gcnats demo", "gcnats sim"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	_, err = loadSettings(map[string]string{"GENESYSCLOUD_REGION": "eu-west-1"})
	if err == nil || strings.Contains(err.Error(), "gcnats demo") {
		t.Errorf("with some settings, the hint should not show: %v", err)
	}
}

func TestPlural(t *testing.T) {
	for n, want := range map[int]string{0: "0 channels", 1: "1 channel", 2: "2 channels"} {
		if got := plural(n, "channel", "channels"); got != want {
			t.Errorf("plural(%d) = %q", n, got)
		}
	}
}

// TestTailReadsTheStream runs gcnats tail against a JetStream server
// holding known events: --last, --since, --all, a subject filter, and a
// durable consumer that goes on where its last run stopped.
func TestTailReadsTheStream(t *testing.T) {
	srv := startNATS(t, &server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir()})
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "GENESYS", Subjects: []string{"genesys.>"}}); err != nil {
		t.Fatal(err)
	}
	// 30 events: presence on even sequences, routing status on odd ones.
	for i := 1; i <= 30; i++ {
		subject := "genesys.v2.users.u1.routingStatus"
		if i%2 == 0 {
			subject = "genesys.v2.users.u1.presence"
		}
		if _, err := js.Publish(ctx, subject, fmt.Appendf(nil, `{"n":%d}`, i)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("NATS_URL", srv.ClientURL())
	tail := func(args ...string) []int {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if code := run(ctx, append([]string{"tail"}, args...), &stdout, &stderr); code != 0 {
			t.Fatalf("gcnats tail %s: exit %d\n%s", strings.Join(args, " "), code, stderr.String())
		}
		var ns []int
		line := regexp.MustCompile(`^\S+ #(\d+) (\S+) \{"n":(\d+)\}$`)
		for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
			m := line.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("gcnats tail %s printed %q", strings.Join(args, " "), l)
			}
			n, _ := strconv.Atoi(m[3])
			ns = append(ns, n)
		}
		return ns
	}
	check := func(what string, got []int, want ...int) {
		t.Helper()
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: events %v, want %v", what, got, want)
		}
	}
	check("--last 3", tail("--last", "3", "--count", "3"), 28, 29, 30)
	check("presence --last 3", tail("genesys.v2.users.*.presence", "--last", "3", "--count", "3"), 26, 28, 30)
	check("--last 100 of a filter holding 15", tail("--count", "2", "genesys.v2.users.*.presence", "--last", "100"), 2, 4)
	check("--all", tail("--all", "--count", "2"), 1, 2)
	check("--since 1h", tail("--since", "1h", "--count", "1"), 1)
	check("durable, first run", tail("--durable", "audit", "--all", "--count", "4", "genesys.v2.users.*.presence"), 2, 4, 6, 8)
	check("durable, second run", tail("--durable", "audit", "--count", "2", "genesys.v2.users.*.presence"), 10, 12)

	// Following: an event stored after tail started is printed.
	done := make(chan []int, 1)
	go func() { done <- tail("--last", "0", "--count", "1") }()
	deadline := time.After(testTimeout)
	for published := 0; ; published++ {
		if _, err := js.Publish(ctx, "genesys.v2.users.u1.presence", []byte(`{"n":99}`)); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-done:
			check("following", got, 99)
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("tail printed nothing new")
		}
	}
}

// TestTailWithoutNATS names what to start.
func TestTailWithoutNATS(t *testing.T) {
	t.Setenv("NATS_URL", fmt.Sprintf("nats://127.0.0.1:%d", natstest.FreePort(t)))
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"tail"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "gcnats demo") {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestBinaryTailReadsTheDemo runs `gcnats demo` and the tail command its
// banner prints, as a user copies it.
func TestBinaryTailReadsTheDemo(t *testing.T) {
	bin := buildBinary(t)
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	demo := startProcess(t, bin, append(base, "GCNATS_EMBEDDED_LISTEN=127.0.0.1:0", "GCNATS_HTTP_ADDR=127.0.0.1:0"),
		"demo", "-interval", "50ms")
	read := demo.waitLine(t, "the tail command", func(line string) bool { return strings.HasPrefix(line, "Read:") })
	demo.waitLine(t, "a latest event", func(line string) bool { return strings.HasPrefix(line, "  latest on genesys.") })
	command, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(read, "Read:")), "  #")
	// NATS_URL=nats://127.0.0.1:PORT /path/gcnats tail 'genesys.v2.users.*.presence' --last 5
	fields := strings.Fields(command)
	if len(fields) < 4 || !strings.HasPrefix(fields[0], "NATS_URL=") || fields[1] != bin || fields[2] != "tail" {
		t.Fatalf("banner's tail command %q", command)
	}
	args := append(fields[3:], "--count", "5", "--headers")
	args[0] = strings.Trim(args[0], "'")
	cmd := exec.Command(bin, append([]string{"tail"}, args...)...)
	cmd.Env = append(append([]string{}, base...), fields[0])
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", command, err, out)
	}
	if n := strings.Count(string(out), " genesys.v2.users."); n != 5 || strings.Count(string(out), ".presence {") != 5 || strings.Count(string(out), "Nats-Msg-Id: ") != 5 {
		t.Fatalf("%s printed:\n%s", command, out)
	}
	if code := demo.interrupt(t); code != 0 {
		t.Fatalf("demo exit code %d after SIGINT:\n%s", code, demo.all)
	}
}
