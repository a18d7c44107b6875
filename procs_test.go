package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/gcnats/gcnats/internal/natstest"
	"github.com/gcnats/gcnats/simulator"
)

// TestBinaryAdaptsGOMAXPROCS runs the binary without GOMAXPROCS set: idle,
// it drops to one P; a burst of events brings the runtime's default back.
// With GOMAXPROCS set, it leaves it alone.
func TestBinaryAdaptsGOMAXPROCS(t *testing.T) {
	bin := buildBinary(t)
	sim := simulator.Start(t, simulator.Options{Queues: 1, Users: 20, BodyPadding: 512, Seed: 3, RecordLimit: 1000})
	env := []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(),
		"GENESYSCLOUD_API_URL=" + sim.URL(),
		"GENESYSCLOUD_OAUTHCLIENT_ID=" + sim.ClientID(),
		"GENESYSCLOUD_OAUTHCLIENT_SECRET=" + sim.ClientSecret(),
		// The embedded server: its work counts as the process's load.
		"GCNATS_STORE_DIR=" + t.TempDir(),
		"GCNATS_EMBEDDED_LISTEN=127.0.0.1:0",
		"GCNATS_TOPICS=v2.users.*.presence",
		"GCNATS_LOG_LEVEL=debug",
	}
	// changed matches the log line of a change to a number of Ps that
	// want accepts.
	changed := func(want func(int) bool) func(string) bool {
		return func(line string) bool {
			var l struct {
				Msg string
				To  int
			}
			return json.Unmarshal([]byte(line), &l) == nil && l.Msg == "GOMAXPROCS changed" && want(l.To)
		}
	}

	// adapting waits for the binary to say what it does with GOMAXPROCS,
	// and skips the test where it rightly leaves it alone.
	adapting := func(t *testing.T, p *process) {
		t.Helper()
		var choice struct{ Msg, Because string }
		p.waitLine(t, "what the binary does with GOMAXPROCS", func(line string) bool {
			return json.Unmarshal([]byte(line), &choice) == nil && strings.HasPrefix(choice.Msg, "GOMAXPROCS ")
		})
		if choice.Msg == "GOMAXPROCS stays as it is" {
			// The binary's default is this process's when neither has
			// GOMAXPROCS set: only a default of one P (a CPU limit of one
			// core, say) is a reason to stay.
			if _, set := os.LookupEnv("GOMAXPROCS"); !set && runtime.GOMAXPROCS(0) > 1 {
				t.Fatalf("the binary keeps GOMAXPROCS (%s) where the default is %d", choice.Because, runtime.GOMAXPROCS(0))
			}
			t.Skipf("the binary does not adapt here: %s", choice.Because)
		}
	}
	var topics []string
	for _, u := range sim.Users() {
		topics = append(topics, "v2.users."+u.ID+".presence")
	}

	t.Run("follows the load", func(t *testing.T) {
		addr := freeAddr(t)
		p := startProcess(t, bin, append(env, "GCNATS_HTTP_ADDR="+addr))
		adapting(t, p)
		p.waitLine(t, "one P while idle", changed(func(n int) bool { return n == 1 }))
		if got := gomaxprocsMetric(t, addr); got != "1" {
			t.Fatalf("go_sched_gomaxprocs_threads %q after the change to one P", got)
		}

		var stop atomic.Bool
		done := make(chan struct{})
		go func() {
			defer close(done)
			for !stop.Load() {
				sim.EmitN(200, topics...)
			}
		}()
		p.waitLine(t, "the default back under load", changed(func(n int) bool { return n > 1 }))
		stop.Store(true)
		<-done
		if code := p.terminate(t); code != 0 {
			t.Fatalf("exit code %d:\n%s", code, p.all)
		}
	})

	// Events that queue up in the buffer raise it at once, before any
	// interval's CPU time could: here NATS is away, so they queue while
	// the process does next to nothing.
	t.Run("a backlog raises it at once", func(t *testing.T) {
		opts := &server.Options{
			ServerName: "procs", Host: "127.0.0.1", Port: natstest.FreePort(t), NoSigs: true, NoLog: true,
			JetStream: true, StoreDir: t.TempDir(),
		}
		srv := startNATS(t, opts)
		p := startProcess(t, bin, append(env, "NATS_URL="+srv.ClientURL(), "GCNATS_HTTP_ADDR="+freeAddr(t)))
		adapting(t, p)
		p.waitLine(t, "one P while idle", changed(func(n int) bool { return n == 1 }))
		srv.Shutdown()
		srv.WaitForShutdown()
		sim.EmitN(600, topics...) // about 0.9 KB each: past the publisher's backlog mark
		p.waitLine(t, "the default back for the backlog", func(line string) bool {
			var l struct {
				Msg     string
				To      int
				Backlog bool
			}
			return json.Unmarshal([]byte(line), &l) == nil && l.Msg == "GOMAXPROCS changed" && l.To > 1 && l.Backlog
		})
		startNATS(t, opts) // back, with its store: the buffer is flushed
		if code := p.terminate(t); code != 0 {
			t.Fatalf("exit code %d:\n%s", code, p.all)
		}
	})

	t.Run("set in the environment", func(t *testing.T) {
		p := startProcess(t, bin, append(env, "GOMAXPROCS=2", "GCNATS_HTTP_ADDR=127.0.0.1:0"))
		p.waitLine(t, "GOMAXPROCS left alone", func(line string) bool {
			return strings.Contains(line, `"msg":"GOMAXPROCS stays as it is"`) &&
				strings.Contains(line, `"because":"GOMAXPROCS is set in the environment"`)
		})
		if code := p.terminate(t); code != 0 {
			t.Fatalf("exit code %d:\n%s", code, p.all)
		}
		if strings.Contains(p.all.String(), "GOMAXPROCS changed") {
			t.Fatalf("GOMAXPROCS changed although the environment set it:\n%s", p.all)
		}
	})
}

// gomaxprocsMetric reads go_sched_gomaxprocs_threads from the process's
// /metrics.
func gomaxprocsMetric(t testing.TB, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "go_sched_gomaxprocs_threads "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no go_sched_gomaxprocs_threads in /metrics:\n%s", body)
	return ""
}
