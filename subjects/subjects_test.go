package subjects

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestDefaultMapping(t *testing.T) {
	tab, err := New("genesys")
	if err != nil {
		t.Fatal(err)
	}
	for topic, want := range map[string]string{
		"v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations": "genesys.v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations",
		"channel.metadata":  "genesys.channel.metadata",
		"a b\tc\rd\ne\ff":   "genesys.a_b_c_d_e_f",
		"a.*.>.b":           "genesys.a._._.b",
		"x*y>z":             "genesys.x_y_z",
		".a..b.":            "genesys._.a._.b._",
		"":                  "genesys._",
		".":                 "genesys._._",
		"café.Ünïcødé.日本":   "genesys.café.Ünïcødé.日本",
		"nul\x00del\x7fend": "genesys.nul_del_end",
		"v2.users.{id}":     "genesys.v2.users.{id}",
	} {
		got, pass := tab.Route([]byte("keep:"), []byte(topic), nil)
		if string(got) != "keep:"+want || !pass {
			t.Errorf("Route(%q) = %q, %v; want %q, true", topic, got, pass, "keep:"+want)
		}
	}
	multi, err := New("acme.gc")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := multi.Route(nil, []byte("v2.x"), nil); string(got) != "acme.gc.v2.x" {
		t.Errorf("multi-token prefix: %q", got)
	}
	if got := multi.Streams("GENESYS"); !reflect.DeepEqual(got, []Stream{{"GENESYS", []string{"acme.gc.>"}}}) {
		t.Errorf("Streams = %v", got)
	}
	for _, bad := range []string{"", "a..b", "a b", "a.*", ">", ".a", "a.", "a\tb", "x>"} {
		if _, err := New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
		if _, err := Parse("r.yaml", []byte("routes: []"), bad); err == nil {
			t.Errorf("Parse with prefix %q accepted", bad)
		}
	}
	if _, err := New("genesys"); err != nil || DefaultPrefix != "genesys" {
		t.Error("default prefix")
	}
}

const routesYAML = `# routes for the tests
routes:
  - topic: v2.routing.queues.*.conversations.>
    subject: "queues.{1}.{2}"
    stream: QUEUES
  - topic: v2.routing.queues.*.conversations
    subject: "{prefix}.q.{1}"
  - topic: v2.users.*.routingStatus
    subject: "{prefix}.routing.{1}"
    filter:
      - field: routingStatus.status
        equals: OFF_QUEUE
  - topic: v2.users.*.presence
    filter:
      - field: presenceDefinition.systemPresence
        one_of: [Available, Busy]
      - field: presenceMessage
        exists: false
  - topic: v2.users.*.conversations.>
    drop: true
  - topic: v2.detail.events.conversation.*.>
    subject: "detail.{topic}"
    stream: DETAIL
  - topic: "*.metadata"
    subject: "{prefix}.meta-{1}.x{1}y"
`

func TestRoute(t *testing.T) {
	tab, err := Parse("routes.yaml", []byte(routesYAML), "genesys")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		topic, body string
		subject     string
		pass        bool
	}{
		{"v2.routing.queues.Q1.conversations.calls", `{}`, "queues.Q1.calls", true},
		{"v2.routing.queues.Q1.conversations.a.b", `{}`, "queues.Q1.a.b", true},
		{"v2.routing.queues.Q 1.conversations.c*", `{}`, "queues.Q_1.c_", true},
		{"v2.routing.queues.Q1.conversations", `{}`, "genesys.q.Q1", true},
		{"v2.routing.queues..conversations", `{}`, "genesys.q._", true},
		{"v2.routing.queues.Q1.conversations.", `{}`, "queues.Q1._", true},
		{"v2.routing.queues.Q1.users", `{}`, "genesys.v2.routing.queues.Q1.users", true},
		{"v2.routing.queues.Q1", `{}`, "genesys.v2.routing.queues.Q1", true},
		{"v2.users.U1.routingStatus", `{"routingStatus":{"status":"OFF_QUEUE"}}`, "genesys.routing.U1", true},
		{"v2.users.U1.routingStatus", `{"routingStatus":{"status":"IDLE"}}`, "genesys.routing.U1", false},
		{"v2.users.U1.routingStatus", `{"routingStatus":{"status":"OFF\u005fQUEUE"}}`, "genesys.routing.U1", true},
		{"v2.users.U1.routingStatus", `{"status":"OFF_QUEUE"}`, "genesys.routing.U1", false},
		{"v2.users.U1.presence", `{"presenceDefinition":{"systemPresence":"Available"}}`, "genesys.v2.users.U1.presence", true},
		{"v2.users.U1.presence", `{"presenceDefinition":{"systemPresence":"Busy"},"x":1}`, "genesys.v2.users.U1.presence", true},
		{"v2.users.U1.presence", `{"presenceDefinition":{"systemPresence":"Away"}}`, "genesys.v2.users.U1.presence", false},
		{"v2.users.U1.presence", `{"presenceDefinition":{"systemPresence":"Busy"},"presenceMessage":null}`, "genesys.v2.users.U1.presence", false},
		{"v2.users.U1.presence.extra", `{}`, "genesys.v2.users.U1.presence.extra", true},
		{"v2.users.U1.conversations.calls", `{}`, "", false},
		{"v2.users.U1.conversations", `{}`, "genesys.v2.users.U1.conversations", true},
		{"v2.detail.events.conversation.C1.wrapup", `{}`, "detail.v2.detail.events.conversation.C1.wrapup", true},
		{"channel.metadata", `{}`, "genesys.meta-channel.xchannely", true},
		{"v2", `{}`, "genesys.v2", true},
		{"", `{}`, "genesys._", true},
	} {
		got, pass := tab.Route(nil, []byte(tc.topic), []byte(tc.body))
		if string(got) != tc.subject || pass != tc.pass {
			t.Errorf("Route(%q, %s) = %q, %v; want %q, %v", tc.topic, tc.body, got, pass, tc.subject, tc.pass)
		}
	}
}

// filterTable is a table with one route on topic "t" holding the given
// filter list.
func filterTable(t *testing.T, filters string) *Table {
	t.Helper()
	tab, err := Parse("f.yaml", []byte("routes:\n  - topic: t\n    filter:\n"+filters), "g")
	if err != nil {
		t.Fatalf("filters %s: %v", filters, err)
	}
	return tab
}

func TestFilters(t *testing.T) {
	for _, tc := range []struct {
		filter string
		pass   []string
		fail   []string
	}{
		{"- {field: s, equals: OFF_QUEUE}",
			[]string{`{"s":"OFF_QUEUE"}`, `{"s":"OFF\u005fQUEUE"}`, `{"s":"X","s":"OFF_QUEUE"}`, `{"\u0073":"OFF_QUEUE"}`, ` { "s" : "OFF_QUEUE" } `},
			[]string{`{"s":"off_queue"}`, `{}`, `{"s":null}`, `{"s":{"x":1}}`, `{"s":["OFF_QUEUE"]}`, `{"s":"OFF_QUEUE","s":"X"}`, `{"S":"OFF_QUEUE"}`, `[]`, `"OFF_QUEUE"`, ``, `{"s":`, `{"x":[}`}},
		{"- {field: s, equals: 2}",
			[]string{`{"s":2}`, `{"s":"2"}`},
			[]string{`{"s":2.0}`, `{"s":20}`, `{"s":-2}`}},
		{"- {field: s, equals: true}",
			[]string{`{"s":true}`, `{"s":"true"}`},
			[]string{`{"s":false}`, `{"s":1}`}},
		{"- {field: s, equals: True}", []string{`{"s":true}`}, []string{`{"s":"True"}`}},
		{"- {field: s, equals: ~}", []string{`{"s":null}`, `{"s":"null"}`}, []string{`{}`, `{"s":"~"}`}},
		{"- {field: s, equals: café}", []string{`{"s":"caf\u00e9"}`, `{"s":"café"}`}, []string{`{"s":"cafe"}`}},
		{"- {field: s, equals: \"a\\\"b\"}", []string{`{"s":"a\"b"}`}, []string{`{"s":"a\\\"b"}`}},
		{"- {field: s, not_equals: X}",
			[]string{`{"s":"Y"}`, `{}`, `{"s":[1]}`, `{"s":null}`, `{"s":"x"}`},
			[]string{`{"s":"X"}`, `{"s":"\u0058"}`}},
		{"- {field: s, one_of: [A, B, 3]}",
			[]string{`{"s":"A"}`, `{"s":"B"}`, `{"s":3}`},
			[]string{`{"s":"C"}`, `{}`, `{"s":"AB"}`}},
		{"- {field: s, exists: true}",
			[]string{`{"s":null}`, `{"s":{}}`, `{"s":""}`},
			[]string{`{}`, `{"a":{"s":1}}`, ``}},
		{"- {field: s, exists: false}",
			[]string{`{}`, `{"a":{"s":1}}`, ``, `null`},
			[]string{`{"s":null}`, `{"s":1}`}},
		{"- {field: a.b.c, equals: v}",
			[]string{`{"a":{"b":{"c":"v"}}}`, `{"x":[{"a":1}],"a":{"y":{},"b":{"c":"v","d":[]}}}`},
			[]string{`{"a":{"b":"v"}}`, `{"a":[{"b":{"c":"v"}}]}`, `{"a":{"b":{"c":"w"}}}`, `{"c":"v"}`}},
		{"- {field: a, equals: x}\n      - {field: b, exists: true}",
			[]string{`{"a":"x","b":0}`},
			[]string{`{"a":"x"}`, `{"b":0}`, `{"a":"y","b":0}`}},
	} {
		tab := filterTable(t, "      "+tc.filter+"\n")
		for _, body := range tc.pass {
			if _, pass := tab.Route(nil, []byte("t"), []byte(body)); !pass {
				t.Errorf("filter %s: body %s filtered, want it to pass", tc.filter, body)
			}
		}
		for _, body := range tc.fail {
			if _, pass := tab.Route(nil, []byte("t"), []byte(body)); pass {
				t.Errorf("filter %s: body %s passes, want it filtered", tc.filter, body)
			}
		}
	}
}

func TestParseErrors(t *testing.T) {
	const r = "routes:\n  - topic: "
	for _, tc := range []struct{ in, want string }{
		{"", "routes.yaml: empty routes file: want a mapping with a routes list"},
		{"# nothing\n", "routes.yaml: empty routes file: want a mapping with a routes list"},
		{"routes: [\n", "routes.yaml:1: invalid YAML: did not find expected node content"},
		{"routes:\n  - topic: a\n   subject: b\n", "routes.yaml:1: invalid YAML: did not find expected '-' indicator"},
		{"- a\n", "routes.yaml:1: want a mapping with a routes list, got a list"},
		{"rutes: []\n", `routes.yaml:1: unknown key "rutes" (want routes)`},
		{"version: 1\n", `routes.yaml:1: unknown key "version" (want routes)`},
		{"routes: x\n", `routes.yaml:1: routes must be a list, got "x"`},
		{"routes:\n  - a.b\n", `routes.yaml:2: route 1: want a mapping with topic, subject, stream, filter or drop, got "a.b"`},
		{"routes:\n  - topic: a\n  - subject: x\n", "routes.yaml:3: route 2: missing topic"},
		{r + "a.b\n    subjekt: x\n", `routes.yaml:3: route 1: unknown key "subjekt" (want topic, subject, stream, filter or drop)`},
		{r + "a.b\n    topic: c\n", `routes.yaml:3: route 1: duplicate key "topic"`},
		{r + "\n", `routes.yaml:2: route 1: topic wants a non-empty string, got nothing`},
		{r + "[a]\n", `routes.yaml:2: route 1: topic wants a non-empty string, got a list`},
		{r + "a..b\n", `routes.yaml:2: route 1: topic "a..b" has an empty token`},
		{r + ".a\n", `routes.yaml:2: route 1: topic ".a" has an empty token`},
		{r + "a.>.b\n", `routes.yaml:2: route 1: topic "a.>.b": '>' must be the last token`},
		{r + "a.b*\n", `routes.yaml:2: route 1: topic "a.b*": a wildcard must be a whole token, not part of "b*"`},
		{r + "\"a b\"\n", `routes.yaml:2: route 1: topic "a b": token "a b" holds ' ', which no topic token can`},
		{r + "\"" + strings.Repeat("*.", 17) + "x\"\n", `routes.yaml:2: route 1: topic "` + strings.Repeat("*.", 17) + `x" has 17 wildcards, at most 16 are supported`},
		{r + "a.*.*\n\n\n\n\n\n\n    subject: \"{prefix}.{3}\"\n", "routes.yaml:9: route 1: template uses {3} but the pattern has 2 wildcards"},
		{r + "a.*\n    subject: \"{prefix}.{2}\"\n", "routes.yaml:3: route 1: template uses {2} but the pattern has 1 wildcard"},
		{r + "a\n    subject: \"{prefix}.{1}\"\n", "routes.yaml:3: route 1: template uses {1} but the pattern has 0 wildcards"},
		{r + "a.*\n    subject: \"{prefix}.{0}\"\n", `routes.yaml:3: route 1: subject "{prefix}.{0}": unknown placeholder {0} (want {prefix}, {topic} or {1}..{N} for the N wildcards)`},
		{r + "a.*\n    subject: \"{prefix}.{01}\"\n", `routes.yaml:3: route 1: subject "{prefix}.{01}": unknown placeholder {01} (want {prefix}, {topic} or {1}..{N} for the N wildcards)`},
		{r + "a.*\n    subject: \"{Prefix}.x\"\n", `routes.yaml:3: route 1: subject "{Prefix}.x": unknown placeholder {Prefix} (want {prefix}, {topic} or {1}..{N} for the N wildcards)`},
		{r + "a.*\n    subject: \"{prefix.x\"\n", `routes.yaml:3: route 1: subject "{prefix.x": '{' without '}'`},
		{r + "a.*\n    subject: \"x}.y\"\n", `routes.yaml:3: route 1: subject "x}.y": '}' without '{'`},
		{r + "a.*\n    subject: \"x..{1}\"\n", `routes.yaml:3: route 1: subject "x..{1}": empty token (a subject may not start or end with '.' or hold '..')`},
		{r + "a.*\n    subject: \"{prefix}.{1}.\"\n", `routes.yaml:3: route 1: subject "{prefix}.{1}.": empty token (a subject may not start or end with '.' or hold '..')`},
		{r + "a.*\n    subject: \"x.*\"\n", `routes.yaml:3: route 1: subject "x.*": '*' is a wildcard character, not allowed in a published subject`},
		{r + "a.*\n    subject: \"x.{1}>\"\n", `routes.yaml:3: route 1: subject "x.{1}>": '>' is a wildcard character, not allowed in a published subject`},
		{r + "a.*\n    subject: \"x y.{1}\"\n", `routes.yaml:3: route 1: subject "x y.{1}": ' ' is not allowed in a subject`},
		{r + "a.*\n    subject: \"\"\n", `routes.yaml:3: route 1: subject wants a non-empty string, got ""`},
		{r + "a\n    stream: A.B\n", `routes.yaml:3: route 1: stream "A.B": '.' is not allowed in a stream name`},
		{r + "a\n    stream: \"A B\"\n", `routes.yaml:3: route 1: stream "A B": ' ' is not allowed in a stream name`},
		{r + "a\n    drop: maybe\n", `routes.yaml:3: route 1: drop wants true or false, got "maybe"`},
		{r + "a\n    drop: true\n    subject: x\n", "routes.yaml:3: route 1: a drop route takes no subject, stream or filter"},
		{r + "a\n    filter: {field: x, equals: y}\n", "routes.yaml:3: route 1: filter must be a list of conditions, got a mapping"},
		{r + "a\n    filter:\n      - x\n", `routes.yaml:4: route 1: filter 1: want a mapping with field and one of equals, not_equals, one_of, exists, got "x"`},
		{r + "a\n    filter:\n      - field: x\n", "routes.yaml:4: route 1: filter 1: no operator: want one of equals, not_equals, one_of, exists"},
		{r + "a\n    filter:\n      - {field: x, equals: 1}\n      - field: y\n        equals: a\n        one_of: [a]\n", "routes.yaml:7: route 1: filter 2: two operators, equals and one_of: use one per condition"},
		{r + "a\n    filter:\n      - equals: a\n", "routes.yaml:4: route 1: filter 1: missing field"},
		{r + "a\n    filter:\n      - {field: a..b, exists: true}\n", `routes.yaml:4: route 1: filter 1: field "a..b" has an empty key`},
		{r + "a\n    filter:\n      - {field: a, exist: true}\n", `routes.yaml:4: route 1: filter 1: unknown key "exist" (want field and one of equals, not_equals, one_of, exists)`},
		{r + "a\n    filter:\n      - {field: a, one_of: []}\n", "routes.yaml:4: route 1: filter 1: one_of wants a non-empty list of values"},
		{r + "a\n    filter:\n      - {field: a, one_of: x}\n", "routes.yaml:4: route 1: filter 1: one_of wants a non-empty list of values"},
		{r + "a\n    filter:\n      - {field: a, one_of: [x, [y]]}\n", "routes.yaml:4: route 1: filter 1: one_of wants a value (string, number, true, false or null), got a list"},
		{r + "a\n    filter:\n      - {field: a, equals: {x: 1}}\n", "routes.yaml:4: route 1: filter 1: equals wants a value (string, number, true, false or null), got a mapping"},
		{r + "a\n    filter:\n      - {field: a, exists: yes}\n", `routes.yaml:4: route 1: filter 1: exists wants true or false, got "yes"`},
		{r + "a.*\n  - topic: a.b\n", "routes.yaml:3: route 2: topic a.b can never match: route 1's topic a.* (line 2) matches it first"},
		{r + "a.>\n  - topic: a.b.c\n", "routes.yaml:3: route 2: topic a.b.c can never match: route 1's topic a.> (line 2) matches it first"},
		{r + "\">\"\n  - topic: x\n", "routes.yaml:3: route 2: topic x can never match: route 1's topic > (line 2) matches it first"},
		{r + ">\n", `routes.yaml:2: route 1: topic wants a non-empty string, got "" (in YAML, quote a value that starts with '>', '*' or '|')`},
		{r + "a.*\n    subject: \"{prefix}.q.{1}\"\n    stream: Q\n",
			"routes.yaml:2: route 1: its subjects genesys.q.* (stream Q) overlap genesys.> of the default stream; JetStream lets a subject belong to one stream only (the default stream takes genesys.> for the default mapping, so give the route a subject outside {prefix}.)"},
		{r + "a.*\n    subject: \"q.{1}\"\n    stream: Q\n  - topic: b.*\n    subject: \"q.x\"\n    stream: R\n",
			"routes.yaml:5: route 2: its subjects q.x (stream R) overlap q.* of stream Q; JetStream lets a subject belong to one stream only"},
		{r + "a.*\n    subject: \"q.{1}\"\n  - topic: b.*\n    subject: \"q.{1}.x\"\n  - topic: c\n    subject: \"q.c.x\"\n    stream: R\n",
			"routes.yaml:6: route 3: its subjects q.c.x (stream R) overlap q.*.x of the default stream; JetStream lets a subject belong to one stream only"},
	} {
		_, err := Parse("routes.yaml", []byte(tc.in), "genesys")
		if err == nil || err.Error() != tc.want {
			t.Errorf("Parse(%q)\n got %v\nwant %s", tc.in, err, tc.want)
		}
	}
}

func TestParseAccepts(t *testing.T) {
	for _, in := range []string{
		"routes: []\n",
		"routes:\n",
		"routes:\n  - topic: a\n    drop: false\n    subject: x\n",
		"routes:\n  - &r {topic: a.*, subject: \"x.{1}\"}\n  - topic: b\n    filter: [{field: f, equals: *r}]\n" + "", // alias into a wrong place
	} {
		_, err := Parse("ok.yaml", []byte(in), "genesys")
		if strings.Contains(in, "*r}]") {
			if err == nil {
				t.Errorf("Parse(%q) accepted a mapping as a value", in)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
		}
	}
	// Aliases resolve.
	tab, err := Parse("a.yaml", []byte("x: &v OFF\nroutes:\n  - {topic: t, filter: [{field: s, equals: *v}]}\n"), "g")
	if err == nil {
		t.Errorf("unknown top-level key accepted: %v", tab)
	}
	tab, err = Parse("a.yaml", []byte("routes:\n  - {topic: t, filter: [{field: s, equals: &v OFF}, {field: r, equals: *v}]}\n"), "g")
	if err != nil {
		t.Fatal(err)
	}
	if _, pass := tab.Route(nil, []byte("t"), []byte(`{"s":"OFF","r":"OFF"}`)); !pass {
		t.Error("alias value not resolved")
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "routes.yaml")
	if err := os.WriteFile(path, []byte(routesYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	tab, err := Load(path, "genesys")
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := tab.Route(nil, []byte("v2.routing.queues.Q.conversations"), nil); string(got) != "genesys.q.Q" {
		t.Errorf("loaded table routes to %q", got)
	}
	if err := os.WriteFile(path, []byte("routes:\n  - topic: a\n    subject: \"{9}\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path, "genesys"); err == nil || err.Error() != path+":3: route 1: template uses {9} but the pattern has 0 wildcards" {
		t.Errorf("Load error = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), "genesys"); err == nil || !strings.HasPrefix(err.Error(), "read routes file: ") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func TestStreams(t *testing.T) {
	for _, tc := range []struct {
		name, routes string
		want         []Stream
	}{
		{"none", "routes: []", []Stream{{"GENESYS", []string{"genesys.>"}}}},
		{"example", routesYAML, []Stream{
			{"GENESYS", []string{"genesys.>"}},
			{"QUEUES", []string{"queues.*.>"}},
			{"DETAIL", []string{"detail.v2.detail.events.conversation.*.>"}},
		}},
		{"unnamed outside the prefix", `routes:
  - {topic: a.*.b, subject: "x.{1}.y"}
  - {topic: c.*, subject: "x.c{1}d.y"}
  - {topic: d.>, subject: "z.{1}.end"}
  - {topic: e.*, subject: "x.{1}.y"}
  - {topic: f.*.g, subject: "x.f.{1}"}
  - {topic: h, subject: "lit.{topic}"}
  - {topic: i.*, stream: GENESYS, subject: "i.{topic}"}
  - {topic: j.*, drop: true}`,
			[]Stream{{"GENESYS", []string{"genesys.>", "x.*.*", "z.>", "lit.h", "i.i.*"}}}},
		{"named streams", `routes:
  - {topic: q.*.>, subject: "queues.{1}.{2}", stream: Q}
  - {topic: q.*, subject: "queues.{1}", stream: Q}
  - {topic: u.*, subject: "users.{1}", stream: U}
  - {topic: u.*.x, subject: "users.{1}.{topic}", stream: U}`,
			[]Stream{{"GENESYS", []string{"genesys.>"}}, {"Q", []string{"queues.*.>", "queues.*"}}, {"U", []string{"users.*", "users.*.u.*.x"}}}},
		{"catch-all route replaces the default mapping", `routes:
  - {topic: q.*, subject: "queues.{1}", stream: Q}
  - {topic: ">", subject: "all.{1}", stream: ALL}`,
			[]Stream{{"Q", []string{"queues.*"}}, {"ALL", []string{"all.>"}}}},
	} {
		tab, err := Parse("s.yaml", []byte(tc.routes), "genesys")
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := tab.Streams("GENESYS"); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: Streams =\n %v\nwant\n %v", tc.name, got, tc.want)
		}
	}
}

func TestWildcards(t *testing.T) {
	for _, tc := range []struct {
		a, b    string
		collide bool
		merged  string
	}{
		{"a.b", "a.b", true, "a.b"},
		{"a.*", "a.b", true, "a.*"},
		{"a.>", "a.b.c", true, "a.>"},
		{"a.>", "a", false, ">"},
		{"a.*.c", "a.b.*", true, "a.*.*"},
		{"a.b", "a.b.c", false, "a.>"},
		{"a.b", "c.d", false, "*.*"},
		{"a", "b.c", false, ">"},
		{"*", ">", true, ">"},
	} {
		if got := collide(tc.a, tc.b); got != tc.collide {
			t.Errorf("collide(%s, %s) = %v", tc.a, tc.b, got)
		}
		m := merge(tc.a, tc.b)
		if m != tc.merged {
			t.Errorf("merge(%s, %s) = %s, want %s", tc.a, tc.b, m, tc.merged)
		}
		for _, s := range []string{tc.a, tc.b} {
			if !collide(m, s) {
				t.Errorf("merge(%s, %s) = %s does not cover %s", tc.a, tc.b, m, s)
			}
		}
	}
}

func TestPattern(t *testing.T) {
	for topic, want := range map[string]string{
		"v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations":              "v2.routing.queues.{id}.conversations",
		"v2.users.3B1C9A7E-2D4F-4E6A-8B0C-000000000001.presence":                            "v2.users.{id}.presence",
		"genesys.v2.detail.events.conversation.c0ffee00-1234-4abc-8def-0123456789ab.wrapup": "genesys.v2.detail.events.conversation.{id}.wrapup",
		"channel.metadata":                       "channel.metadata",
		"v2.system.socket_closing":               "v2.system.socket_closing",
		"v2.analytics.queues.12345.observations": "v2.analytics.queues.{id}.observations",
		"v2.flows.a1b2c3d4e5f6a7b8.x":            "v2.flows.{id}.x",
		"v2.users.conversationsummary":           "v2.users.conversationsummary",
		"v2.x.conversation-summary_events":       "v2.x.conversation-summary_events",
		"":                                       "",
		"a..b.":                                  "a..b.",
		"v2.users.ab$12345678901.presence":       "v2.users.ab$12345678901.presence",
	} {
		if got := Pattern([]byte(topic)); got != want {
			t.Errorf("Pattern(%q) = %q, want %q", topic, got, want)
		}
	}
	topic := []byte("v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations")
	buf := make([]byte, 0, 64)
	if n := testing.AllocsPerRun(100, func() { buf = AppendPattern(buf[:0], topic) }); n != 0 {
		t.Errorf("AppendPattern: %v allocs", n)
	}
}

func TestConcurrentRoute(t *testing.T) {
	tab := benchTable(t)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 0, 128)
			for i := range 500 {
				topic := fmt.Sprintf("v2.users.u%d-%d.routingStatus", g, i)
				var pass bool
				buf, pass = tab.Route(buf[:0], []byte(topic), []byte(`{"routingStatus":{"status":"OFF_QUEUE"}}`))
				if want := fmt.Sprintf("genesys.routing.u%d-%d", g, i); string(buf) != want || !pass {
					t.Errorf("Route(%s) = %s, %v", topic, buf, pass)
					return
				}
			}
		})
	}
	wg.Wait()
}

// benchTable is a realistic table of 20 routes, most with filters.
func benchTable(tb testing.TB) *Table {
	var b strings.Builder
	b.WriteString("routes:\n")
	for i := range 14 {
		fmt.Fprintf(&b, "  - topic: v2.analytics.flows.*.metric%d\n    subject: \"flows.{1}.m%d\"\n    stream: FLOWS\n", i, i)
		fmt.Fprintf(&b, "    filter:\n      - {field: metric.name, not_equals: skip%d}\n", i)
	}
	b.WriteString(`  - topic: v2.users.*.conversations.>
    drop: true
  - topic: v2.users.*.routingStatus
    subject: "{prefix}.routing.{1}"
    filter:
      - {field: routingStatus.status, one_of: [OFF_QUEUE, IDLE]}
  - topic: v2.users.*.presence
    filter:
      - {field: presenceDefinition.systemPresence, not_equals: Offline}
  - topic: v2.routing.queues.*.conversations.>
    subject: "queues.{1}.{2}"
    stream: QUEUES
    filter:
      - {field: participants, exists: true}
  - topic: v2.routing.queues.*.conversations
    subject: "queues.{1}.all"
    stream: QUEUES
    filter:
      - {field: recordingState, not_equals: paused}
      - {field: address, exists: true}
  - topic: v2.detail.events.conversation.*.>
    subject: "detail.{topic}"
    stream: DETAIL
`)
	tab, err := Parse("bench.yaml", []byte(b.String()), "genesys")
	if err != nil {
		tb.Fatal(err)
	}
	if len(tab.routes) != 20 {
		tb.Fatalf("%d routes", len(tab.routes))
	}
	return tab
}

var convBody = []byte(`{"id":"c0ffee00-1234-4abc-8def-0123456789ab","participants":[{"id":"p1","purpose":"agent","calls":[{"state":"connected"}]},` +
	`{"id":"p2","purpose":"customer","attributes":{"a":"b"}}],"recordingState":"active","address":"tel:+18005551234"}`)

func TestRouteNoAllocs(t *testing.T) {
	tab := benchTable(t)
	def, _ := New("genesys")
	buf := make([]byte, 0, 256)
	topics := [][]byte{
		[]byte("v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations"),
		[]byte("v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations.calls"),
		[]byte("v2.users.3b1c9a7e-2d4f-4e6a-8b0c-000000000001.presence"),
		[]byte("v2.no.route.at all"),
	}
	n := testing.AllocsPerRun(100, func() {
		for _, topic := range topics {
			buf, _ = tab.Route(buf[:0], topic, convBody)
			buf, _ = def.Route(buf[:0], topic, convBody)
		}
	})
	if n != 0 {
		t.Fatalf("Route: %v allocs per run, want 0", n)
	}
}

func BenchmarkRoute(b *testing.B) {
	def, _ := New("genesys")
	tab := benchTable(b)
	queue := []byte("v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations")
	for _, bc := range []struct {
		name  string
		tab   *Table
		topic []byte
	}{
		{"default", def, queue},
		{"20routes/last_route_with_2_filters", tab, queue},
		{"20routes/no_match", tab, []byte("v2.users.3b1c9a7e-2d4f-4e6a-8b0c-000000000001.geolocation")},
		{"20routes/early_route_with_filter", tab, []byte("v2.analytics.flows.5e6f7a8b-0000-4000-8000-000000000001.metric0")},
	} {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 0, 256)
			b.ReportAllocs()
			var pass bool
			for b.Loop() {
				buf, pass = bc.tab.Route(buf[:0], bc.topic, convBody)
			}
			_ = pass
		})
	}
}

// docExample is the routes file of the package documentation; it must stay
// valid.
const docExample = `routes:
  # Queue conversations, split by media type, on their own stream.
  - topic: v2.routing.queues.*.conversations.>   # '*' one token, '>' one or more (last only)
    subject: "queues.{1}.{2}"                     # {N}: what the N-th wildcard matched
    stream: QUEUES
  # Only agents going off queue, under the default stream.
  - topic: v2.users.*.routingStatus
    subject: "{prefix}.routing.{1}"
    filter:                                       # all must hold
      - field: routingStatus.status               # dotted path into eventBody
        equals: OFF_QUEUE
  - topic: v2.users.*.presence
    filter:
      - field: presenceDefinition.systemPresence
        one_of: [AVAILABLE, BUSY]
      - field: presenceMessage
        exists: false
  # Never publish these.
  - topic: v2.users.*.conversations.>
    drop: true
`

func TestDocExample(t *testing.T) {
	tab, err := Parse("doc.yaml", []byte(docExample), DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	want := []Stream{{"GENESYS", []string{"genesys.>"}}, {"QUEUES", []string{"queues.*.>"}}}
	if got := tab.Streams("GENESYS"); !reflect.DeepEqual(got, want) {
		t.Errorf("Streams = %v, want %v", got, want)
	}
	for _, tc := range []struct {
		topic, body, subject string
		pass                 bool
	}{
		{"v2.routing.queues.q1.conversations.calls", "{}", "queues.q1.calls", true},
		{"v2.users.u1.routingStatus", `{"routingStatus":{"status":"OFF_QUEUE"}}`, "genesys.routing.u1", true},
		{"v2.users.u1.presence", `{"presenceDefinition":{"systemPresence":"BUSY"}}`, "genesys.v2.users.u1.presence", true},
		{"v2.users.u1.presence", `{"presenceDefinition":{"systemPresence":"BUSY"},"presenceMessage":"lunch"}`, "genesys.v2.users.u1.presence", false},
		{"v2.users.u1.conversations.calls", "{}", "", false},
	} {
		if got, pass := tab.Route(nil, []byte(tc.topic), []byte(tc.body)); string(got) != tc.subject || pass != tc.pass {
			t.Errorf("Route(%s) = %q, %v; want %q, %v", tc.topic, got, pass, tc.subject, tc.pass)
		}
	}
}
