package publisher

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/gcnats/gcnats/internal/natstest"
)

// waitLeaf waits for the edge's leaf link to come up, or for the edge's
// log to show want, whichever the case expects.
func waitLeaf(t *testing.T, e *Embedded, logs *syncBuffer, connected bool, want string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if connected && e.LeafConnected() {
			return
		}
		if !connected && strings.Contains(strings.ToLower(logs.String()), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("leaf connected %v after 15s, want %v (log wanted %q):\n%s", e.LeafConnected(), connected, want, logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEmbeddedLeaf joins the embedded server to a hub as a leaf node with
// each kind of credentials GCNATS_LEAF_* offers, and with wrong ones.
func TestEmbeddedLeaf(t *testing.T) {
	const password = "leaf-pa55word"
	pki := newTestPKI(t, t.TempDir())

	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	ojwt, _ := jwt.NewOperatorClaims(opub).Encode(okp)
	oc, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, _ := jwt.NewAccountClaims(apub).Encode(okp)
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	ujwt, _ := jwt.NewUserClaims(upub).Encode(akp)
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "leaf.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name      string
		hub       func(o *server.Options)
		scheme    string
		remote    LeafRemote
		connected bool
		log       string // with connected false: what the edge logs
	}{
		{name: "user and password", scheme: "nats-leaf",
			hub:       func(o *server.Options) { o.LeafNode.Username, o.LeafNode.Password = "edge", password },
			remote:    LeafRemote{User: "edge", Password: password},
			connected: true},
		{name: "wrong password", scheme: "nats-leaf",
			hub:    func(o *server.Options) { o.LeafNode.Username, o.LeafNode.Password = "edge", password },
			remote: LeafRemote{User: "edge", Password: password + "-wrong"},
			log:    "authorization violation"},
		{name: "creds", scheme: "nats-leaf",
			hub: func(o *server.Options) {
				resolver := &server.MemAccResolver{}
				if err := resolver.Store(apub, ajwt); err != nil {
					t.Fatal(err)
				}
				o.TrustedOperators, o.AccountResolver = []*jwt.OperatorClaims{oc}, resolver
			},
			remote:    LeafRemote{CredsFile: credsFile},
			connected: true},
		{name: "mutual tls", scheme: "tls",
			hub: func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.ca, Verify: true})
				if err != nil {
					t.Fatal(err)
				}
				o.LeafNode.TLSConfig, o.LeafNode.TLSTimeout = tc, 5
			},
			remote:    LeafRemote{CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey},
			connected: true},
		{name: "tls, hub from an unknown ca", scheme: "tls",
			hub: func(o *server.Options) {
				tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pki.serverCert, KeyFile: pki.serverKey})
				if err != nil {
					t.Fatal(err)
				}
				o.LeafNode.TLSConfig, o.LeafNode.TLSTimeout = tc, 5
			},
			remote: LeafRemote{CAFile: pki.otherCA},
			log:    "certificate signed by unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := natstest.FreePort(t) // nats-server does not report a leaf port it picked itself
			o := &server.Options{LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: port}}
			tc.hub(o)
			runServer(t, o)

			var logs syncBuffer
			remote := tc.remote
			remote.URLs = []string{tc.scheme + "://127.0.0.1:" + strconv.Itoa(port)}
			e, err := StartEmbedded(EmbeddedOptions{
				Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Domain: "site-a", Leaf: &remote,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Shutdown()
			if !e.Leaf() {
				t.Fatal("Leaf() false for a leaf node")
			}
			waitLeaf(t, e, &logs, tc.connected, tc.log)
			if !tc.connected && e.LeafConnected() {
				t.Fatal("the leaf link is up with wrong credentials")
			}
			if strings.Contains(logs.String(), password) || strings.Contains(logs.String(), string(useed)) {
				t.Fatalf("a secret reached the log:\n%s", logs.String())
			}
		})
	}
}

func TestEmbeddedLeafOptionsRefused(t *testing.T) {
	for name, o := range map[string]EmbeddedOptions{
		"no domain":          {Leaf: &LeafRemote{URLs: []string{"nats-leaf://127.0.0.1:7422"}}},
		"no url":             {Domain: "a", Leaf: &LeafRemote{}},
		"url without a host": {Domain: "a", Leaf: &LeafRemote{URLs: []string{"hub"}}},
		"cert without key":   {Domain: "a", Leaf: &LeafRemote{URLs: []string{"tls://127.0.0.1:7422"}, CertFile: "/x"}},
		"missing ca":         {Domain: "a", Leaf: &LeafRemote{URLs: []string{"tls://127.0.0.1:7422"}, CAFile: "/no/such/ca.pem"}},
	} {
		o.Listen, o.StoreDir = "127.0.0.1:-1", t.TempDir()
		if e, err := StartEmbedded(o); err == nil {
			e.Shutdown()
			t.Errorf("%s: started", name)
		}
	}
}

// TestEnsureHubStreamAddsSources has two edges set up the same hub stream:
// it gets no subjects and one source per edge, each through its edge's
// domain, and an operator's own settings on it stay.
func TestEnsureHubStreamAddsSources(t *testing.T) {
	hub := startServer(t, t.TempDir(), "127.0.0.1:-1")
	js, err := jetstream.New(connectTest(t, hub.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := connectCtx(t)
	cfg := HubStreamConfig{Name: "GENESYS_ALL", EdgeDomain: "site-a", Sources: []string{"GENESYS", "QUEUES"}, MaxAge: time.Hour}
	if _, err := EnsureHubStream(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "GENESYS_ALL")
	if err != nil {
		t.Fatal(err)
	}
	// An operator raises the retention by hand; a restart keeps it.
	edited := s.CachedInfo().Config
	edited.MaxAge = 48 * time.Hour
	if _, err := js.UpdateStream(ctx, edited); err != nil {
		t.Fatal(err)
	}
	for _, domain := range []string{"site-a", "site-b", "site-a"} {
		cfg.EdgeDomain = domain
		if _, err := EnsureHubStream(ctx, js, cfg); err != nil {
			t.Fatalf("edge %s: %v", domain, err)
		}
	}
	s, err = js.Stream(ctx, "GENESYS_ALL")
	if err != nil {
		t.Fatal(err)
	}
	got := s.CachedInfo().Config
	var sources []string
	for _, src := range got.Sources {
		sources = append(sources, src.Name+"@"+src.External.APIPrefix)
	}
	want := []string{"GENESYS@$JS.site-a.API", "QUEUES@$JS.site-a.API", "GENESYS@$JS.site-b.API", "QUEUES@$JS.site-b.API"}
	if strings.Join(sources, " ") != strings.Join(want, " ") {
		t.Errorf("sources %v, want %v", sources, want)
	}
	if len(got.Subjects) != 0 || got.MaxAge != 48*time.Hour {
		t.Errorf("subjects %v, max age %s; want none and the operator's 48h", got.Subjects, got.MaxAge)
	}
}

// TestEnsureHubStreamRaisesItsWindow has edges that need different
// duplicate windows set up one hub stream, made by an older gcnats with
// the default 2 minutes: the window rises to the longest any edge asks
// for, never falls, and stops at the stream's max age.
func TestEnsureHubStreamRaisesItsWindow(t *testing.T) {
	hub := startServer(t, t.TempDir(), "127.0.0.1:-1")
	js, err := jetstream.New(connectTest(t, hub.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := connectCtx(t)
	cfg := HubStreamConfig{Name: "GENESYS_ALL", EdgeDomain: "site-a", Sources: []string{"GENESYS"}, MaxAge: 24 * time.Hour, Duplicates: 2 * time.Minute}
	for _, step := range []struct {
		domain string
		ask    time.Duration
		want   time.Duration
	}{
		{"site-a", 2 * time.Minute, 2 * time.Minute},
		{"site-a", 12 * time.Hour, 12 * time.Hour},
		{"site-b", time.Hour, 12 * time.Hour},
		{"site-b", 48 * time.Hour, 24 * time.Hour},
	} {
		cfg.EdgeDomain, cfg.Duplicates = step.domain, step.ask
		s, err := EnsureHubStream(ctx, js, cfg)
		if err != nil {
			t.Fatalf("edge %s asking %s: %v", step.domain, step.ask, err)
		}
		if got := s.CachedInfo().Config.Duplicates; got != step.want {
			t.Errorf("edge %s asking %s: window %s, want %s", step.domain, step.ask, got, step.want)
		}
	}
}
