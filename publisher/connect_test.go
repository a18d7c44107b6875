package publisher

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/gcnats/gcnats/internal/rawio"
)

// runServer starts a plain nats-server with opts (auth, TLS) on a free port.
func runServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.NoSigs, opts.NoLog = "127.0.0.1", server.RANDOM_PORT, true, true
	return startAuthServer(t, opts)
}

func hostPort(srv *server.Server) string { return srv.Addr().String() }

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func connectCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestConnectUserPassword(t *testing.T) {
	const password = "s3cret-pa55"
	srv := runServer(t, &server.Options{Username: "gcnats", Password: password})
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	nc, err := Connect(connectCtx(t), "nats://"+hostPort(srv), ConnectOptions{
		User: "gcnats", Password: password, Logger: log,
		Options: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	// Credentials in the URL, and a wrong password: it fails at once rather
	// than retrying until ctx ends, and nothing logs the secret.
	nc, err = Connect(connectCtx(t), "nats://gcnats:"+password+"@"+hostPort(srv), ConnectOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	start := time.Now()
	_, err = Connect(connectCtx(t), "nats://"+hostPort(srv), ConnectOptions{User: "gcnats", Password: "wrong", Logger: log})
	if !errors.Is(err, nats.ErrAuthorization) || time.Since(start) > 5*time.Second {
		t.Fatalf("wrong password: %v after %s", err, time.Since(start))
	}
	if strings.Contains(logs.String(), password) {
		t.Fatalf("password in logs:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "nats connected") {
		t.Fatalf("no connect log:\n%s", logs.String())
	}
}

func TestConnectWaitsForServer(t *testing.T) {
	// A free port nobody listens on yet.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := Connect(ctx, "nats://"+addr, ConnectOptions{Logger: testLogger()}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("no server: %v, want deadline exceeded", err)
	}

	// It keeps trying while no server answers, and connects once one does.
	type res struct {
		nc  *nats.Conn
		err error
	}
	done := make(chan res, 1)
	go func() {
		nc, err := Connect(connectCtx(t), "nats://"+addr, ConnectOptions{Logger: testLogger()})
		done <- res{nc, err}
	}()
	startServer(t, t.TempDir(), addr)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	r.nc.Close()
}

func TestConnectNKey(t *testing.T) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := kp.PublicKey()
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "user.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := runServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})

	nc, err := Connect(connectCtx(t), "nats://"+hostPort(srv), ConnectOptions{NKeyFile: seedFile, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	if _, err := Connect(connectCtx(t), "nats://"+hostPort(srv), ConnectOptions{Logger: testLogger()}); err == nil {
		t.Fatal("connected without the nkey")
	}
}

func TestConnectCreds(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	ojwt, err := jwt.NewOperatorClaims(opub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	oc, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ajwt, err := jwt.NewAccountClaims(apub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	useed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, useed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := filepath.Join(t.TempDir(), "user.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	resolver := &server.MemAccResolver{}
	if err := resolver.Store(apub, ajwt); err != nil {
		t.Fatal(err)
	}
	srv := runServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver})

	var logs syncBuffer
	nc, err := Connect(connectCtx(t), "nats://"+hostPort(srv), ConnectOptions{
		CredsFile: credsFile, Logger: slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc.Close()
	if strings.Contains(logs.String(), string(useed)) || strings.Contains(logs.String(), ujwt) {
		t.Fatalf("credentials in logs:\n%s", logs.String())
	}
}

func TestConnectTLS(t *testing.T) {
	dir := t.TempDir()
	pki := newTestPKI(t, dir)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: pki.serverCert, KeyFile: pki.serverKey, CaFile: pki.ca, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := runServer(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 5})
	url := "nats://" + hostPort(srv)

	nc, err := Connect(connectCtx(t), url, ConnectOptions{
		CAFile: pki.ca, CertFile: pki.clientCert, KeyFile: pki.clientKey, Logger: testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !nc.TLSRequired() {
		t.Fatal("connection not over TLS")
	}
	if err := nc.FlushTimeout(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	nc.Close()

	// Refused without a client certificate, and with a server certificate
	// from an unknown CA: at once, not after ctx.
	for name, o := range map[string]ConnectOptions{
		"no client cert": {CAFile: pki.ca},
		"unknown ca":     {CAFile: pki.otherCA, CertFile: pki.clientCert, KeyFile: pki.clientKey},
	} {
		o.Logger = testLogger()
		start := time.Now()
		_, err := Connect(connectCtx(t), url, o)
		t.Logf("%s: %v", name, err)
		if err == nil || time.Since(start) > 5*time.Second {
			t.Errorf("%s: err %v after %s", name, err, time.Since(start))
		}
	}
	if _, err := Connect(connectCtx(t), url, ConnectOptions{CertFile: pki.clientCert}); err == nil {
		t.Error("cert without key accepted")
	}
}

type testPKI struct {
	ca, otherCA, serverCert, serverKey, clientCert, clientKey string
}

// newTestPKI writes a throwaway CA, a server certificate for 127.0.0.1 and a
// client certificate, all made now.
func newTestPKI(t *testing.T, dir string) testPKI {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	serial := int64(0)
	cert := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		serial++
		tmpl.SerialNumber = big.NewInt(serial)
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		tmpl.NotAfter = time.Now().Add(time.Hour)
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return c, key, der, keyDER
	}
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true,
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		}
	}

	var p testPKI
	ca, caKey, caDER, _ := cert(caTmpl("gcnats test CA"), nil, nil)
	p.ca = write("ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER, _ := cert(caTmpl("other CA"), nil, nil)
	p.otherCA = write("other-ca.pem", "CERTIFICATE", otherDER)

	_, _, der, keyDER := cert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "nats-server"},
		DNSNames:    []string{"localhost"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, ca, caKey)
	p.serverCert = write("server.pem", "CERTIFICATE", der)
	p.serverKey = write("server-key.pem", "EC PRIVATE KEY", keyDER)

	_, _, der, keyDER = cert(&x509.Certificate{
		Subject:     pkix.Name{CommonName: "gcnats"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, ca, caKey)
	p.clientCert = write("client.pem", "CERTIFICATE", der)
	p.clientKey = write("client-key.pem", "EC PRIVATE KEY", keyDER)
	return p
}

func TestEmbeddedPortTaken(t *testing.T) {
	first := startServer(t, t.TempDir(), "127.0.0.1:-1")
	start := time.Now()
	_, err := StartEmbedded(EmbeddedOptions{Listen: first.Addr(), StoreDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("second server on %s: %v", first.Addr(), err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("port-taken error took %s", time.Since(start))
	}
	for _, bad := range []EmbeddedOptions{{Listen: "127.0.0.1:-1"}, {Listen: "nohost", StoreDir: "x"}, {Listen: "h:99999", StoreDir: "x"}} {
		if _, err := StartEmbedded(bad); err == nil {
			t.Errorf("StartEmbedded(%+v) succeeded", bad)
		}
	}
}

// The connection to NATS is dialled through package rawio, so at everyday
// rates its reads and writes do not wake the runtime's monitor thread.
func TestConnectDialsWithRawIO(t *testing.T) {
	nopts, err := ConnectOptions{}.natsOptions(slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	o := nats.GetDefaultOptions()
	for _, opt := range nopts {
		if err := opt(&o); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := o.CustomDialer.(*rawio.Dialer); !ok {
		t.Fatalf("NATS is dialled with %T, want *rawio.Dialer", o.CustomDialer)
	}
}
