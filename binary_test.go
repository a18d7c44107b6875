package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gcnats/gcnats/publisher"
)

var (
	binaryOnce sync.Once
	binaryDir  string
	binaryPath string
	binaryErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binaryDir != "" {
		os.RemoveAll(binaryDir)
	}
	os.Exit(code)
}

// buildBinary builds the gcnats command once per test run. With the race
// detector on it reuses the packages this test binary was built from: the
// Genesys SDK takes minutes to compile afresh.
func buildBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	binaryOnce.Do(func() {
		if binaryDir, binaryErr = os.MkdirTemp("", "gcnats-bin-"); binaryErr != nil {
			return
		}
		binaryPath = filepath.Join(binaryDir, "gcnats")
		args := []string{"build", "-o", binaryPath}
		if raceEnabled {
			args = append(args, "-race")
		}
		out, err := exec.Command("go", append(args, ".")...).CombinedOutput()
		if err != nil {
			binaryErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binaryErr != nil {
		t.Fatal(binaryErr)
	}
	return binaryPath
}

// process is a started gcnats with its output read line by line.
type process struct {
	cmd   *exec.Cmd
	lines chan string
	all   *syncBuffer
	exit  chan error
}

func startProcess(t testing.TB, bin string, env []string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, lines: make(chan string, 1024), all: &syncBuffer{}, exit: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			p.all.Write([]byte(sc.Text() + "\n"))
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
	})
	return p
}

// waitLine returns the first line for which match returns true.
func (p *process) waitLine(t *testing.T, what string, match func(string) bool) string {
	t.Helper()
	timeout := time.After(testTimeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("process ended before %s:\n%s", what, p.all)
			}
			if match(line) {
				return line
			}
		case <-timeout:
			t.Fatalf("no %s in %s:\n%s", what, testTimeout, p.all)
		}
	}
}

// terminate sends SIGTERM and returns the exit code.
func (p *process) terminate(t *testing.T) int {
	t.Helper()
	return p.signal(t, syscall.SIGTERM)
}

// interrupt sends SIGINT, as Ctrl-C does, and returns the exit code.
func (p *process) interrupt(t *testing.T) int {
	t.Helper()
	return p.signal(t, os.Interrupt)
}

// signal sends sig and returns the exit code.
func (p *process) signal(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	go func() {
		for range p.lines {
		}
	}()
	select {
	case err := <-p.exit:
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return exitErr.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(testTimeout):
		t.Fatalf("no exit %s after %v:\n%s", testTimeout, sig, p.all)
		return -1
	}
}

// TestBinaryAgainstSimProcess runs gcnats as a user would: the binary,
// configured only by environment variables, against `gcnats sim` in
// another process, with its embedded JetStream server; then it reads the
// stream as an app in the pod would.
func TestBinaryAgainstSimProcess(t *testing.T) {
	bin := buildBinary(t)
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}

	sim := startProcess(t, bin, append(base,
		"SIM_ADDR=127.0.0.1:0", "SIM_QUEUES=2", "SIM_USERS=2",
		"SIM_EVENT_INTERVAL=20ms", "SIM_HEARTBEAT_INTERVAL=100ms"), "sim")
	var simEnv []string
	sim.waitLine(t, "the sim's settings", func(line string) bool {
		if v, ok := strings.CutPrefix(line, "export "); ok {
			simEnv = append(simEnv, v)
		}
		return strings.HasPrefix(line, "export GCNATS_TOPICS=")
	})

	// gcnats topics: the plan, without sockets or NATS.
	topics := exec.Command(bin, "topics")
	topics.Env = append(append([]string{}, base...), simEnv...)
	out, err := topics.CombinedOutput()
	if err != nil {
		t.Fatalf("gcnats topics: %v\n%s", err, out)
	}
	// 2 queues × 3 queue topics + 2 users × 2 user topics.
	if !strings.Contains(string(out), "# 10 topics on 1 channel (") || strings.Count(string(out), "\nv2.") != 10 {
		t.Fatalf("gcnats topics printed:\n%s", out)
	}

	sidecar := startProcess(t, bin, append(append(base, simEnv...),
		"GCNATS_STORE_DIR="+t.TempDir(),
		"GCNATS_EMBEDDED_LISTEN=127.0.0.1:0",
		"GCNATS_HTTP_ADDR=127.0.0.1:0",
		"GCNATS_LOG_FORMAT=json"))
	var started struct{ URL string }
	line := sidecar.waitLine(t, "the embedded server's address", func(line string) bool {
		return strings.Contains(line, "embedded JetStream server started")
	})
	if err := json.Unmarshal([]byte(line), &started); err != nil || started.URL == "" {
		t.Fatalf("log line %q: %v", line, err)
	}
	sidecar.waitLine(t, "the stream set up and subscribing", func(line string) bool {
		return strings.Contains(line, `"msg":"subscribing"`)
	})

	nc, err := nats.Connect(started.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "GENESYS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("consumer: %v\n%s", err, sidecar.all)
	}
	const want = 200
	ids := map[string]bool{}
	correlations := map[string]bool{}
	for len(ids) < want {
		m, err := cons.Next(jetstream.FetchMaxWait(testTimeout))
		if err != nil {
			t.Fatalf("after %d messages: %v\n%s", len(ids), err, sidecar.all)
		}
		topic := m.Headers().Get("Genesys-Topic")
		if m.Subject() != "genesys."+topic {
			t.Fatalf("subject %q for topic %q", m.Subject(), topic)
		}
		id := m.Headers().Get("Nats-Msg-Id")
		corr := m.Headers().Get("Genesys-Correlation-Id")
		if id != string(publisher.MsgID(nil, []byte(topic), []byte(corr), m.Data())) {
			t.Fatalf("Nats-Msg-Id %q is not the hash of topic, correlation id and payload", id)
		}
		if !json.Valid(m.Data()) {
			t.Fatalf("payload is not JSON: %q", m.Data())
		}
		if corr == "" || correlations[corr] || ids[id] {
			t.Fatalf("message %d repeats an event (correlation %q, id %q)", len(ids), corr, id)
		}
		correlations[corr], ids[id] = true, true
	}

	if code := sidecar.terminate(t); code != 0 {
		t.Fatalf("sidecar exit code %d after SIGTERM:\n%s", code, sidecar.all)
	}
	if !strings.Contains(sidecar.all.String(), "flushed every event") {
		t.Fatalf("shutdown did not report a full flush:\n%s", sidecar.all)
	}
	if code := sim.terminate(t); code != 0 {
		t.Fatalf("sim exit code %d:\n%s", code, sim.all)
	}
	t.Logf("binary: %d distinct events read back from the stream", len(ids))
}

// TestBinaryRefusesBadSettings checks that a bad setting stops start-up
// with one line naming the variable.
func TestBinaryRefusesBadSettings(t *testing.T) {
	bin := buildBinary(t)
	cmd := exec.Command(bin, "run")
	cmd.Env = []string{
		"GENESYSCLOUD_REGION=eu-west-1",
		"GENESYSCLOUD_OAUTHCLIENT_ID=id",
		"GENESYSCLOUD_OAUTHCLIENT_SECRET=s3cr3t-value",
		"GCNATS_TOPICS=v2.users.*.presence",
		"GCNATS_MAX_CHANNELS=lots",
	}
	out, err := cmd.CombinedOutput()
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) || exitErr.ExitCode() != 1 {
		t.Fatalf("exit: %v, want code 1\n%s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if strings.Count(got, "\n") != 0 || !strings.Contains(got, "GCNATS_MAX_CHANNELS") || !strings.Contains(got, "whole number") {
		t.Fatalf("want one line naming GCNATS_MAX_CHANNELS, got:\n%s", got)
	}
	if strings.Contains(got, "s3cr3t-value") {
		t.Fatalf("the secret reached the output: %s", got)
	}
}

// TestBinaryDemoAndVersion runs `gcnats demo` as `make demo` does (on free
// ports) until it has shown events stored, and `gcnats version`.
func TestBinaryDemoAndVersion(t *testing.T) {
	bin := buildBinary(t)
	base := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "TMPDIR=" + t.TempDir()}
	demo := startProcess(t, bin, append(base, "GCNATS_EMBEDDED_LISTEN=127.0.0.1:0", "GCNATS_HTTP_ADDR=127.0.0.1:0"),
		"demo", "-interval", "50ms")
	demo.waitLine(t, "the subscribe command", func(line string) bool {
		return strings.HasPrefix(line, "Subscribe:  nats --server nats://127.0.0.1:") && !strings.Contains(line, ":0 ")
	})
	demo.waitLine(t, "events stored", func(line string) bool {
		var n int
		_, err := fmt.Sscanf(line[strings.Index(line, " ")+1:], " %d events stored", &n)
		return err == nil && n > 0
	})
	if code := demo.terminate(t); code != 0 {
		t.Fatalf("demo exit code %d:\n%s", code, demo.all)
	}

	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gcnats ") || !strings.Contains(string(out), "github.com/nats-io/nats.go") {
		t.Fatalf("gcnats version: %v\n%s", err, out)
	}
}
