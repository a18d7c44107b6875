package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/gcnats/gcnats/publisher"
)

// NATSLogin is how gcnats, and gcnats tail, log in to NATS: the nats
// CLI's names.
type NATSLogin struct {
	NATSCreds        string `env:"NATS_CREDS"`
	NATSNKey         string `env:"NATS_NKEY"`
	NATSUser         string `env:"NATS_USER"`
	NATSPassword     string `env:"NATS_PASSWORD"`
	NATSUserFile     string `env:"NATS_USER_FILE,file"`
	NATSPasswordFile string `env:"NATS_PASSWORD_FILE,file"`
	NATSCA           string `env:"NATS_CA"`
	NATSCert         string `env:"NATS_CERT"`
	NATSKey          string `env:"NATS_KEY"`
}

// Settings are gcnats' environment, as the README lists it. Genesys names
// follow the Genesys Terraform provider and CLI; NATS names the nats CLI.
type Settings struct {
	Region       string `env:"GENESYSCLOUD_REGION"`
	APIURL       string `env:"GENESYSCLOUD_API_URL"`
	LoginURL     string `env:"GENESYSCLOUD_LOGIN_URL"`
	ClientID     string `env:"GENESYSCLOUD_OAUTHCLIENT_ID"`
	ClientSecret string `env:"GENESYSCLOUD_OAUTHCLIENT_SECRET"`

	ClientIDFile     string `env:"GENESYSCLOUD_OAUTHCLIENT_ID_FILE,file"`
	ClientSecretFile string `env:"GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE,file"`

	Topics     []string `env:"GCNATS_TOPICS"`
	RoutesFile string   `env:"GCNATS_ROUTES_FILE"`

	NATSURL string `env:"NATS_URL"`
	NATSLogin

	// Edge mode: the embedded server joins a hub as a leaf node.
	LeafRemote       string `env:"GCNATS_LEAF_REMOTE"`
	LeafCreds        string `env:"GCNATS_LEAF_CREDS"`
	LeafUser         string `env:"GCNATS_LEAF_USER"`
	LeafPassword     string `env:"GCNATS_LEAF_PASSWORD"`
	LeafUserFile     string `env:"GCNATS_LEAF_USER_FILE,file"`
	LeafPasswordFile string `env:"GCNATS_LEAF_PASSWORD_FILE,file"`
	LeafCA           string `env:"GCNATS_LEAF_CA"`
	LeafCert         string `env:"GCNATS_LEAF_CERT"`
	LeafKey          string `env:"GCNATS_LEAF_KEY"`
	JSDomain         string `env:"GCNATS_JS_DOMAIN"`
	HubStream        string `env:"GCNATS_HUB_STREAM"`
	HubDomain        string `env:"GCNATS_HUB_DOMAIN" envDefault:"hub"`
	// HubDedupWindow is the hub stream's duplicate window; 0 takes the
	// local stream's max age (see resolveHubWindow).
	HubDedupWindow time.Duration `env:"GCNATS_HUB_DEDUP_WINDOW"`
	// Hostname is the pod's name in Kubernetes: the default JetStream
	// domain of an edge.
	Hostname string `env:"HOSTNAME"`

	StoreDir       string        `env:"GCNATS_STORE_DIR" envDefault:"./data"`
	EmbeddedListen string        `env:"GCNATS_EMBEDDED_LISTEN" envDefault:"127.0.0.1:4222"`
	Stream         string        `env:"GCNATS_STREAM" envDefault:"GENESYS"`
	SubjectPrefix  string        `env:"GCNATS_SUBJECT_PREFIX" envDefault:"genesys"`
	StreamReplicas int           `env:"GCNATS_STREAM_REPLICAS" envDefault:"1"`
	StreamMaxAge   time.Duration `env:"GCNATS_STREAM_MAX_AGE" envDefault:"168h"`
	DedupWindow    time.Duration `env:"GCNATS_DEDUP_WINDOW" envDefault:"2m"`
	Payload        string        `env:"GCNATS_PAYLOAD" envDefault:"event"`
	HTTPAddr       string        `env:"GCNATS_HTTP_ADDR" envDefault:":8080"`
	LogLevel       string        `env:"GCNATS_LOG_LEVEL" envDefault:"info"`
	LogFormat      string        `env:"GCNATS_LOG_FORMAT" envDefault:"json"`

	MaxChannels      int           `env:"GCNATS_MAX_CHANNELS" envDefault:"10"`
	RESTRate         int           `env:"GCNATS_REST_RATE" envDefault:"180"`
	TopicRefresh     time.Duration `env:"GCNATS_TOPIC_REFRESH" envDefault:"5m"`
	BufferBytes      ByteSize      `env:"GCNATS_BUFFER_BYTES" envDefault:"64MiB"`
	ShutdownTimeout  time.Duration `env:"GCNATS_SHUTDOWN_TIMEOUT" envDefault:"20s"`
	HeartbeatTimeout time.Duration `env:"GCNATS_HEARTBEAT_TIMEOUT" envDefault:"75s"`
	HandoverGrace    time.Duration `env:"GCNATS_HANDOVER_GRACE" envDefault:"3s"`

	// PprofAddr serves net/http/pprof there when set (profiling; off by default).
	PprofAddr string `env:"GCNATS_PPROF_ADDR"`
}

// regions maps Genesys Cloud AWS regions to their domains.
var regions = map[string]string{
	"us-east-1":      "mypurecloud.com",
	"us-east-2":      "use2.us-gov-pure.cloud",
	"us-west-2":      "usw2.pure.cloud",
	"ca-central-1":   "cac1.pure.cloud",
	"sa-east-1":      "sae1.pure.cloud",
	"eu-west-1":      "mypurecloud.ie",
	"eu-west-2":      "euw2.pure.cloud",
	"eu-central-1":   "mypurecloud.de",
	"eu-central-2":   "euc2.pure.cloud",
	"me-central-1":   "mec1.pure.cloud",
	"ap-south-1":     "aps1.pure.cloud",
	"ap-northeast-1": "mypurecloud.jp",
	"ap-northeast-2": "apne2.pure.cloud",
	"ap-northeast-3": "apne3.pure.cloud",
	"ap-southeast-2": "mypurecloud.com.au",
}

// regionDomain accepts a region (eu-west-1) or its domain (mypurecloud.ie).
func regionDomain(region string) (string, bool) {
	region = strings.ToLower(strings.TrimSpace(region))
	if d, ok := regions[region]; ok {
		return d, true
	}
	for _, d := range regions {
		if d == region {
			return d, true
		}
	}
	return "", false
}

// ByteSize is a size in bytes that reads "67108864", "64MiB" or "512KiB".
type ByteSize int64

// UnmarshalText parses a byte size with an optional KiB, MiB or GiB suffix.
func (b *ByteSize) UnmarshalText(text []byte) error {
	s := strings.TrimSpace(string(text))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return errors.New("expected a size in bytes such as 67108864, 512KiB or 64MiB")
	}
	*b = ByteSize(n * mult)
	return nil
}

// loadSettings reads the settings from environ (os.Environ form, or nil
// for the process environment) and checks every value. Its errors are one
// line each, naming the variable.
func loadSettings(environ map[string]string) (Settings, error) {
	var s Settings
	opts := env.Options{}
	if environ != nil {
		opts.Environment = environ
	}
	// A variable that does not parse keeps its zero value, which resolve
	// would report again: only the variables parsing did not name are added.
	var problems []string
	if err := env.ParseWithOptions(&s, opts); err != nil {
		problems = settingsProblems(err)
	}
	named := map[string]bool{}
	for _, p := range problems {
		name, _, _ := strings.Cut(p, ":")
		named[name] = true
	}
	for _, err := range s.resolve() {
		if name, _, _ := strings.Cut(err.Error(), ":"); !named[name] {
			problems = append(problems, err.Error())
		}
	}
	if len(problems) > 0 {
		msg := strings.Join(problems, "; ")
		if noGenesysSettings(environ) {
			msg += "; " + noSettingsHint
		}
		return s, errors.New(msg)
	}
	return s, nil
}

// noSettingsHint ends the line of missing settings when none of Genesys'
// is set: most likely someone trying gcnats for the first time.
const noSettingsHint = "no Genesys setting is set: to try gcnats without a Genesys org, `gcnats demo` runs JetStream, a simulated org and the sidecar in one process, and `gcnats sim` runs the simulated org alone and prints the settings that point gcnats at it; neither needs a setting (see README.md)"

// noGenesysSettings reports whether none of the settings that name a
// Genesys org and its OAuth client is set.
func noGenesysSettings(environ map[string]string) bool {
	lookup := os.LookupEnv
	if environ != nil {
		lookup = func(k string) (string, bool) { v, ok := environ[k]; return v, ok }
	}
	for _, name := range []string{"GENESYSCLOUD_REGION", "GENESYSCLOUD_API_URL", "GENESYSCLOUD_OAUTHCLIENT_ID", "GENESYSCLOUD_OAUTHCLIENT_ID_FILE",
		"GENESYSCLOUD_OAUTHCLIENT_SECRET", "GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE", "GCNATS_TOPICS"} {
		if v, ok := lookup(name); ok && v != "" {
			return false
		}
	}
	return true
}

// settingsProblems rewrites the env library's errors to name the variable.
func settingsProblems(err error) []string {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return []string{err.Error()}
	}
	lines := make([]string, 0, len(agg.Errors))
	for _, e := range agg.Errors {
		var pe env.ParseError
		var fe env.LoadFileContentError
		switch {
		case errors.As(e, &pe):
			name := pe.Name
			if f, ok := reflect.TypeFor[Settings]().FieldByName(pe.Name); ok {
				name, _, _ = strings.Cut(f.Tag.Get("env"), ",")
			}
			lines = append(lines, fmt.Sprintf("%s: %s", name, expected(pe)))
		case errors.As(e, &fe):
			lines = append(lines, fmt.Sprintf("%s: cannot read %s: %v", fe.Key, fe.Filename, errors.Unwrap(fe.Err)))
		default:
			lines = append(lines, e.Error())
		}
	}
	return lines
}

func expected(pe env.ParseError) string {
	switch pe.Type {
	case reflect.TypeFor[time.Duration]():
		return "expected a duration such as 30s, 5m or 168h"
	case reflect.TypeFor[int]():
		return "expected a whole number"
	case reflect.TypeFor[ByteSize]():
		return "expected a size in bytes such as 67108864, 512KiB or 64MiB"
	}
	return pe.Err.Error()
}

// resolve fills derived settings and returns every problem found, one per
// variable, so a newcomer fixes them in one go.
func (s *Settings) resolve() []error {
	var errs []error
	bad := func(err error) { errs = append(errs, err) }
	if err := mergeFile(&s.ClientID, s.ClientIDFile, "GENESYSCLOUD_OAUTHCLIENT_ID"); err != nil {
		bad(err)
	}
	if err := mergeFile(&s.ClientSecret, s.ClientSecretFile, "GENESYSCLOUD_OAUTHCLIENT_SECRET"); err != nil {
		bad(err)
	}
	if err := mergeFile(&s.NATSUser, s.NATSUserFile, "NATS_USER"); err != nil {
		bad(err)
	}
	if err := mergeFile(&s.NATSPassword, s.NATSPasswordFile, "NATS_PASSWORD"); err != nil {
		bad(err)
	}
	if err := mergeFile(&s.LeafUser, s.LeafUserFile, "GCNATS_LEAF_USER"); err != nil {
		bad(err)
	}
	if err := mergeFile(&s.LeafPassword, s.LeafPasswordFile, "GCNATS_LEAF_PASSWORD"); err != nil {
		bad(err)
	}
	switch {
	case s.APIURL != "":
		u, err := url.Parse(s.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(fmt.Errorf("GENESYSCLOUD_API_URL: expected an http(s) URL such as https://api.mypurecloud.ie, got %q", s.APIURL))
		}
		s.APIURL = strings.TrimRight(s.APIURL, "/")
	case s.Region != "":
		d, ok := regionDomain(s.Region)
		if !ok {
			bad(fmt.Errorf("GENESYSCLOUD_REGION: unknown region %q; expected one such as eu-west-1 or its domain mypurecloud.ie", s.Region))
		}
		s.APIURL = "https://api." + d
	default:
		bad(errors.New("GENESYSCLOUD_REGION: not set; set it (e.g. eu-west-1) or GENESYSCLOUD_API_URL"))
	}
	if s.LoginURL != "" {
		if u, err := url.Parse(s.LoginURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad(fmt.Errorf("GENESYSCLOUD_LOGIN_URL: expected an http(s) URL such as https://login.mypurecloud.ie, got %q", s.LoginURL))
		}
		s.LoginURL = strings.TrimRight(s.LoginURL, "/")
	}
	if s.ClientID == "" {
		bad(errors.New("GENESYSCLOUD_OAUTHCLIENT_ID: not set (or set GENESYSCLOUD_OAUTHCLIENT_ID_FILE to a file holding it)"))
	}
	if s.ClientSecret == "" {
		bad(errors.New("GENESYSCLOUD_OAUTHCLIENT_SECRET: not set (or set GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE to a file holding it)"))
	}
	topics := s.Topics[:0]
	for _, t := range s.Topics {
		if t = strings.TrimSpace(t); t != "" {
			topics = append(topics, t)
		}
	}
	s.Topics = topics
	if len(s.Topics) == 0 {
		bad(errors.New("GCNATS_TOPICS: not set; expected comma-separated topics such as v2.routing.queues.*.conversations,v2.users.*.presence"))
	}
	if s.NATSURL == "" {
		if _, _, err := net.SplitHostPort(s.EmbeddedListen); err != nil {
			bad(fmt.Errorf("GCNATS_EMBEDDED_LISTEN: expected host:port such as 127.0.0.1:4222, got %q", s.EmbeddedListen))
		}
		if s.StoreDir == "" {
			bad(errors.New("GCNATS_STORE_DIR: empty; the embedded JetStream server needs a directory"))
		}
	}
	if (s.NATSCert == "") != (s.NATSKey == "") {
		bad(errors.New("NATS_CERT and NATS_KEY: set both or neither"))
	}
	errs = append(errs, s.resolveEdge()...)
	for name, path := range map[string]string{"NATS_CREDS": s.NATSCreds, "NATS_NKEY": s.NATSNKey, "NATS_CA": s.NATSCA, "NATS_CERT": s.NATSCert, "NATS_KEY": s.NATSKey, "GCNATS_ROUTES_FILE": s.RoutesFile,
		"GCNATS_LEAF_CREDS": s.LeafCreds, "GCNATS_LEAF_CA": s.LeafCA, "GCNATS_LEAF_CERT": s.LeafCert, "GCNATS_LEAF_KEY": s.LeafKey} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			bad(fmt.Errorf("%s: cannot read %s: %v", name, path, errors.Unwrap(err)))
		}
	}
	if s.Stream == "" || strings.ContainsAny(s.Stream, " \t\r\n.*>/\\") {
		bad(fmt.Errorf("GCNATS_STREAM: %q is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\')", s.Stream))
	}
	if s.SubjectPrefix == "" || strings.ContainsAny(s.SubjectPrefix, " \t\r\n*>") || strings.HasPrefix(s.SubjectPrefix, ".") || strings.HasSuffix(s.SubjectPrefix, ".") || strings.Contains(s.SubjectPrefix, "..") {
		bad(fmt.Errorf("GCNATS_SUBJECT_PREFIX: %q is not a valid subject prefix (dot-separated tokens, no spaces or wildcards)", s.SubjectPrefix))
	}
	if s.StreamReplicas < 1 || s.StreamReplicas > 5 {
		bad(fmt.Errorf("GCNATS_STREAM_REPLICAS: %d; expected 1 to 5", s.StreamReplicas))
	}
	if s.StreamMaxAge < 0 {
		bad(errors.New("GCNATS_STREAM_MAX_AGE: must not be negative (0 keeps messages forever)"))
	}
	if s.DedupWindow <= 0 {
		bad(errors.New("GCNATS_DEDUP_WINDOW: must be positive; the dedup window is what collapses overlapping sockets"))
	}
	if s.StreamMaxAge > 0 && s.DedupWindow > s.StreamMaxAge {
		bad(errors.New("GCNATS_DEDUP_WINDOW: longer than GCNATS_STREAM_MAX_AGE; JetStream refuses that"))
	}
	if s.Payload != "event" && s.Payload != "frame" {
		bad(fmt.Errorf("GCNATS_PAYLOAD: %q; expected event or frame", s.Payload))
	}
	if s.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
			bad(fmt.Errorf("GCNATS_HTTP_ADDR: expected host:port or :port such as :8080, got %q", s.HTTPAddr))
		}
	}
	if _, err := parseLevel(s.LogLevel); err != nil {
		bad(err)
	}
	if s.LogFormat != "json" && s.LogFormat != "text" {
		bad(fmt.Errorf("GCNATS_LOG_FORMAT: %q; expected json or text", s.LogFormat))
	}
	if s.MaxChannels < 2 || s.MaxChannels > 20 {
		bad(fmt.Errorf("GCNATS_MAX_CHANNELS: %d; expected 2 to 20 (Genesys allows 20 channels per OAuth client, and one of the budget stays spare for rollovers)", s.MaxChannels))
	}
	if s.RESTRate < 1 || s.RESTRate > 300 {
		bad(fmt.Errorf("GCNATS_REST_RATE: %d; expected 1 to 300 REST calls a minute (Genesys allows about 300 a token)", s.RESTRate))
	}
	if s.TopicRefresh < time.Second {
		bad(errors.New("GCNATS_TOPIC_REFRESH: expected at least 1s"))
	}
	if s.BufferBytes < 1<<20 {
		bad(errors.New("GCNATS_BUFFER_BYTES: expected at least 1MiB"))
	}
	if s.ShutdownTimeout <= 0 {
		bad(errors.New("GCNATS_SHUTDOWN_TIMEOUT: must be positive"))
	}
	if s.HeartbeatTimeout < 100*time.Millisecond {
		bad(errors.New("GCNATS_HEARTBEAT_TIMEOUT: expected at least 100ms (Genesys sends a heartbeat every 30s)"))
	}
	if s.HandoverGrace <= 0 || s.HandoverGrace > time.Minute {
		bad(fmt.Errorf("GCNATS_HANDOVER_GRACE: %s; expected more than 0 and at most 1m (a replaced socket is closed this long after its replacement answered, unless an event showed the replacement receiving sooner)", s.HandoverGrace))
	}
	return errs
}

// leafURLs are GCNATS_LEAF_REMOTE's URLs.
func (s *Settings) leafURLs() []string {
	var urls []string
	for u := range strings.SplitSeq(s.LeafRemote, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// resolveEdge checks the leaf node settings and derives the edge's
// JetStream domain.
func (s *Settings) resolveEdge() []error {
	var errs []error
	bad := func(err error) { errs = append(errs, err) }
	urls := s.leafURLs()
	if len(urls) == 0 {
		for name, v := range map[string]string{"GCNATS_LEAF_CREDS": s.LeafCreds, "GCNATS_LEAF_USER": s.LeafUser, "GCNATS_LEAF_PASSWORD": s.LeafPassword,
			"GCNATS_LEAF_CA": s.LeafCA, "GCNATS_LEAF_CERT": s.LeafCert, "GCNATS_LEAF_KEY": s.LeafKey, "GCNATS_HUB_STREAM": s.HubStream} {
			if v != "" {
				bad(fmt.Errorf("%s: set without GCNATS_LEAF_REMOTE, which it belongs to", name))
			}
		}
	} else {
		if s.NATSURL != "" {
			bad(errors.New("GCNATS_LEAF_REMOTE: the embedded server is what joins the hub; leave NATS_URL empty with it"))
		}
		for _, raw := range urls {
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" || !slices.Contains([]string{"nats", "nats-leaf", "tls", "ws", "wss"}, u.Scheme) {
				bad(fmt.Errorf("GCNATS_LEAF_REMOTE: expected URLs of the hub's leaf node port such as nats-leaf://hub.example.com:7422, got %q", publisher.RedactURLs(raw)))
				break
			}
			if u.User != nil {
				bad(errors.New("GCNATS_LEAF_REMOTE: credentials in the URL; set GCNATS_LEAF_USER and GCNATS_LEAF_PASSWORD (or their _FILE variants) instead, so they stay out of logs"))
				break
			}
		}
		if s.JSDomain == "" {
			s.JSDomain = domainFrom(s.Hostname)
		}
	}
	if (s.LeafCert == "") != (s.LeafKey == "") {
		bad(errors.New("GCNATS_LEAF_CERT and GCNATS_LEAF_KEY: set both or neither"))
	}
	if s.JSDomain != "" {
		if s.NATSURL != "" {
			bad(errors.New("GCNATS_JS_DOMAIN: names the embedded server's domain; leave NATS_URL empty with it"))
		} else if !validDomain(s.JSDomain) {
			bad(fmt.Errorf("GCNATS_JS_DOMAIN: %q; expected letters, digits, '-' and '_' only", s.JSDomain))
		}
	}
	if s.HubStream != "" {
		if strings.ContainsAny(s.HubStream, " \t\r\n.*>/\\") {
			bad(fmt.Errorf("GCNATS_HUB_STREAM: %q is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\')", s.HubStream))
		}
		switch {
		case !validDomain(s.HubDomain):
			bad(fmt.Errorf("GCNATS_HUB_DOMAIN: %q; expected the hub's JetStream domain: letters, digits, '-' and '_' only", s.HubDomain))
		case s.HubDomain == s.JSDomain:
			bad(fmt.Errorf("GCNATS_HUB_DOMAIN: %q is also the edge's GCNATS_JS_DOMAIN; they must differ", s.HubDomain))
		}
		errs = append(errs, s.resolveHubWindow()...)
	} else if s.HubDedupWindow != 0 {
		bad(errors.New("GCNATS_HUB_DEDUP_WINDOW: set without GCNATS_HUB_STREAM, which it belongs to"))
	}
	return errs
}

// defaultHubWindow is the hub stream's duplicate window when the local
// stream keeps events forever: no window covers an unbounded buffer, and
// the start-up check says so (see sidecar.checkHubWindow).
const defaultHubWindow = 168 * time.Hour

// resolveHubWindow derives the hub stream's duplicate window. By default
// it is the local stream's max age, the edge's buffer horizon: where two
// edges feed the hub, one edge's copy of an event stored during its link
// outage reaches the hub after the other's by the outage plus the hub's
// catch-up, and the hub must still know the first copy's id then. A copy
// reaches the hub only while its edge still holds it, at most the max age
// after it was stored, so a window that long covers any outage.
func (s *Settings) resolveHubWindow() []error {
	switch {
	case s.HubDedupWindow < 0:
		return []error{errors.New("GCNATS_HUB_DEDUP_WINDOW: must not be negative (0 or unset: GCNATS_STREAM_MAX_AGE)")}
	case s.HubDedupWindow == 0 && s.StreamMaxAge > 0:
		s.HubDedupWindow = s.StreamMaxAge
	case s.HubDedupWindow == 0:
		s.HubDedupWindow = defaultHubWindow
	case s.StreamMaxAge > 0 && s.HubDedupWindow > s.StreamMaxAge:
		// The hub stream is created with the local max age.
		return []error{errors.New("GCNATS_HUB_DEDUP_WINDOW: longer than GCNATS_STREAM_MAX_AGE, which the hub stream is created with; JetStream refuses that")}
	}
	return nil
}

func validDomain(d string) bool {
	if d == "" {
		return false
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// domainFrom derives an edge's JetStream domain from its host name (in
// Kubernetes, the pod's name): the characters a domain may not hold
// become '_'. It is stable across restarts only where the name is: a
// StatefulSet's pod, not a Deployment's; set GCNATS_JS_DOMAIN there.
func domainFrom(hostname string) string {
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	d := []rune(strings.ToLower(hostname))
	for i, r := range d {
		if !validDomain(string(r)) {
			d[i] = '_'
		}
	}
	if len(d) == 0 {
		return "edge"
	}
	return string(d)
}

// mergeFile takes a secret from its _FILE variable when that is set.
func mergeFile(value *string, fromFile, name string) error {
	if fromFile == "" {
		return nil
	}
	if *value != "" {
		return fmt.Errorf("%s and %s_FILE: set one, not both", name, name)
	}
	*value = strings.TrimSpace(fromFile)
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("GCNATS_LOG_LEVEL: %q; expected debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(s Settings, w io.Writer) *slog.Logger {
	level, _ := parseLevel(s.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if s.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
