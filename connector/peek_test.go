package connector

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"unsafe"
)

const (
	peekHeartbeat  = `{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}`
	peekPong       = `{"topicName":"channel.metadata","eventBody":{"message":"pong"}}`
	peekClosing    = `{"topicName":"v2.system.socket_closing","eventBody":{"message":"Socket closing"}}`
	peekGone       = `{"result":"404","message":"channel not found: it does not exist or has expired"}`
	peekSubAnswer  = `{"correlationId":"abc","topics":["v2.users.1.presence"],"result":"200","status":"subscribed"}`
	peekSubFailed  = `{"result":"400","status":"error","message":"too many topics"}`
	peekQueueEvent = `{"topicName":"v2.routing.queues.8f0c.conversations","version":"2","eventBody":{"id":"c1","participants":[]},"metadata":{"CorrelationId":"5a3b"}}`
)

// frameWant is a Frame's expected fields; "<nil>" marks an absent field.
type frameWant struct {
	topic, body, version, corr, result, msg string
}

func fieldText(b []byte) string {
	if b == nil {
		return "<nil>"
	}
	return string(b)
}

func TestPeek(t *testing.T) {
	const n = "<nil>"
	for _, tc := range []struct {
		name, in string
		want     frameWant
	}{
		{"event", peekQueueEvent, frameWant{"v2.routing.queues.8f0c.conversations", `{"id":"c1","participants":[]}`, "2", "5a3b", n, n}},
		{"topic last", `{"eventBody":{"a":1},"metadata":{"CorrelationId":"x"},"version":"2","topicName":"t.1"}`,
			frameWant{"t.1", `{"a":1}`, "2", "x", n, n}},
		{"whitespace", " \r\n\t{ \"topicName\" :\t\"t\" ,\n\"eventBody\"\r\n: [ 1 , 2 ] , \"version\" : 2 }\n ",
			frameWant{"t", `[ 1 , 2 ]`, "2", n, n, n}},
		{"escaped topic", `{"topicName":"v2.users.\u0061b\"c.presence","eventBody":{}}`,
			frameWant{`v2.users.ab"c.presence`, `{}`, n, n, n, n}},
		{"escaped keys", `{"topic\u004eame":"t","event\u0042ody":null,"metad\u0061ta":{"Correlation\u0049d":"c\u00e9"}}`,
			frameWant{"t", "null", n, "cé", n, n}},
		{"nested decoys", `{"eventBody":{"topicName":"decoy","metadata":{"CorrelationId":"d"},"x":[{"topicName":"d2"}]},
			"metadata":{"topicName":"decoy3","CorrelationId":"real"},"topicName":"real.topic"}`,
			frameWant{"real.topic", `{"topicName":"decoy","metadata":{"CorrelationId":"d"},"x":[{"topicName":"d2"}]}`, n, "real", n, n}},
		{"decoy only", `{"eventBody":{"topicName":"decoy"}}`, frameWant{n, `{"topicName":"decoy"}`, n, n, n, n}},
		{"duplicate topic", `{"topicName":"first","topicName":"second","eventBody":1,"eventBody":2}`,
			frameWant{"second", "2", n, n, n, n}},
		{"duplicate rescues a bad first", `{"topicName":7,"topicName":"ok"}`, frameWant{"ok", n, n, n, n, n}},
		{"case matters", `{"TopicName":"no","topicname":"no","EventBody":{},"Metadata":{"CorrelationId":"no"},"metadata":{"correlationId":"no"}}`,
			frameWant{n, n, n, n, n, n}},
		{"heartbeat", peekHeartbeat, frameWant{"channel.metadata", `{"message":"WebSocket Heartbeat"}`, n, n, n, "WebSocket Heartbeat"}},
		{"pong", peekPong, frameWant{"channel.metadata", `{"message":"pong"}`, n, n, n, "pong"}},
		{"closing", peekClosing, frameWant{"v2.system.socket_closing", `{"message":"Socket closing"}`, n, n, n, "Socket closing"}},
		{"channel gone", peekGone, frameWant{n, n, n, n, "404", n}},
		{"subscribe answer", peekSubAnswer, frameWant{n, n, n, n, "200", n}},
		{"subscribe failed", peekSubFailed, frameWant{n, n, n, n, "400", n}},
		{"numeric result", `{"result":404}`, frameWant{n, n, n, n, "404", n}},
		{"empty topic", `{"topicName":""}`, frameWant{"", n, n, n, n, n}},
		{"version null", `{"topicName":"t","version":null}`, frameWant{"t", n, "null", n, n, n}},
		{"body string", `{"topicName":"t","eventBody":"hi\n"}`, frameWant{"t", `"hi\n"`, n, n, n, n}},
		// An id of another kind still tells its event apart: its raw token.
		{"correlation a number", `{"topicName":"t","metadata":{"CorrelationId":12}}`, frameWant{"t", n, n, "12", n, n}},
		{"correlation a big number", `{"topicName":"t","metadata":{"CorrelationId": -1.5e300 }}`, frameWant{"t", n, n, "-1.5e300", n, n}},
		{"correlation a boolean", `{"topicName":"t","metadata":{"CorrelationId":true}}`, frameWant{"t", n, n, "true", n, n}},
		{"correlation an object", `{"topicName":"t","metadata":{"CorrelationId":{"a": [1, "x"]}}}`, frameWant{"t", n, n, `{"a": [1, "x"]}`, n, n}},
		{"correlation an array", `{"topicName":"t","metadata":{"CorrelationId":[2]}}`, frameWant{"t", n, n, "[2]", n, n}},
		{"correlation null", `{"topicName":"t","metadata":{"CorrelationId":null}}`, frameWant{"t", n, n, n, n, n}},
		{"correlation empty", `{"topicName":"t","metadata":{"CorrelationId":""}}`, frameWant{"t", n, n, "", n, n}},
		{"metadata not an object", `{"topicName":"t","metadata":"CorrelationId"}`, frameWant{"t", n, n, n, n, n}},
		{"message not a string", `{"topicName":"t","eventBody":{"message":{"text":"x"}}}`, frameWant{"t", `{"message":{"text":"x"}}`, n, n, n, n}},
		{"invalid utf-8 topic", "{\"topicName\":\"a\xffb\"}", frameWant{"a\uFFFDb", n, n, n, n, n}},
		{"lone surrogate", `{"topicName":"a\ud800b"}`, frameWant{"a\uFFFDb", n, n, n, n, n}},
		{"empty object", `{}`, frameWant{n, n, n, n, n, n}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var f Frame
			if err := Peek([]byte(tc.in), &f); err != nil {
				t.Fatalf("Peek: %v", err)
			}
			got := frameWant{fieldText(f.Topic), fieldText(f.Body), fieldText(f.Version), fieldText(f.CorrelationID), fieldText(f.Result), fieldText(BodyMessage(&f))}
			if got != tc.want {
				t.Fatalf("Peek(%s)\n got %+v\nwant %+v", tc.in, got, tc.want)
			}
			if !bytes.Equal(f.Raw, []byte(tc.in)) {
				t.Fatal("Raw is not the input")
			}
		})
	}
}

func TestPeekErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "peek frame: unexpected end of JSON input at offset 0"},
		{`   `, "peek frame: unexpected end of JSON input at offset 3"},
		{`null`, "peek frame: not a JSON object: got null"},
		{`[{"topicName":"t"}]`, "peek frame: not a JSON object: got array"},
		{`"topicName"`, "peek frame: not a JSON object: got string"},
		{`[1,`, "peek frame: unexpected end of JSON input at offset 3"},
		{`{"topicName":"t",}`, "peek frame: invalid character '}' looking for beginning of object key string at offset 17"},
		{`{"topicName":"t"}x`, "peek frame: invalid character 'x' after top-level value at offset 17"},
		{`{"topicName":"t"} {}`, "peek frame: invalid character '{' after top-level value at offset 18"},
		{`{"topicName":"t","eventBody":{"a":tru}}`, "peek frame: invalid character '}' in literal at offset 37"},
		{"{\"topicName\":\"a\nb\"}", "peek frame: invalid character byte 0x0a in string literal at offset 15"},
		{`{"topicName":7}`, "peek frame: topicName is a number, want a string"},
		{`{"topicName":null}`, "peek frame: topicName is null, want a string"},
		{`{"topicName":{"id":"t"}}`, "peek frame: topicName is an object, want a string"},
		{`{"topicName":"ok","topicName":["t"]}`, "peek frame: topicName is an array, want a string"},
		{`{"topicName":"t","eventBody":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`,
			"peek frame: exceeded max depth at offset 10028"},
	} {
		var f Frame
		err := Peek([]byte(tc.in), &f)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Peek(%.40q) = %v, want %s", tc.in, err, tc.want)
		}
	}
	// The deepest nesting encoding/json accepts is accepted.
	deep := `{"eventBody":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`
	var f Frame
	if err := Peek([]byte(deep), &f); err != nil || len(f.Body) != 2*9999 {
		t.Errorf("Peek(depth 10000) = %v", err)
	}
}

func TestPeekLookup(t *testing.T) {
	var f Frame
	if err := Peek([]byte(peekGone), &f); err != nil {
		t.Fatal(err)
	}
	if got := fieldText(Lookup(&f, "message")); got != "channel not found: it does not exist or has expired" {
		t.Errorf("Lookup(message) = %s", got)
	}
	if err := Peek([]byte(peekSubAnswer), &f); err != nil {
		t.Fatal(err)
	}
	for keys, want := range map[string]string{"correlationId": "abc", "status": "subscribed",
		"topics": `["v2.users.1.presence"]`, "missing": "<nil>", "": "<nil>"} {
		var k []string
		if keys != "" {
			k = []string{keys}
		}
		if got := fieldText(Lookup(&f, k...)); got != want {
			t.Errorf("Lookup(%q) = %s, want %s", keys, got, want)
		}
	}
	if err := Peek([]byte(`{"topicName":"t","eventBody":{"message":"p\u006fng"}}`), &f); err != nil {
		t.Fatal(err)
	}
	if got := fieldText(Lookup(&f, "eventBody", "message")); got != "pong" {
		t.Errorf("Lookup(eventBody.message) = %s", got)
	}
	if got := fieldText(BodyMessage(&f)); got != "pong" {
		t.Errorf("BodyMessage = %s", got)
	}
}

// TestPeekReuse checks a Frame is fully reset by each Peek and that its
// buffer is reused without allocating.
func TestPeekReuse(t *testing.T) {
	escaped := []byte(`{"topicName":"v2.users.\u0031.presence","version":"\u0032","eventBody":{"message":"\u0070ong"},"metadata":{"CorrelationId":"\u0063"}}`)
	plain := []byte(peekHeartbeat)
	var f Frame
	for range 3 {
		if err := Peek(escaped, &f); err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%s|%s|%s|%s", f.Topic, f.Version, f.CorrelationID, BodyMessage(&f)); got != "v2.users.1.presence|2|c|pong" {
			t.Fatalf("escaped frame: %s", got)
		}
		if err := Peek(plain, &f); err != nil {
			t.Fatal(err)
		}
		if f.Version != nil || f.CorrelationID != nil || string(f.Topic) != "channel.metadata" || !inRaw(plain, f.Topic) {
			t.Fatalf("plain frame after escaped: %+v", f)
		}
	}
	frames := [][]byte{escaped, plain, []byte(peekGone), []byte(peekQueueEvent)}
	for _, size := range peekBenchSizes {
		frames = append(frames, peekConversationFrame(size.bytes, false), peekConversationFrame(size.bytes, true))
	}
	allocs := testing.AllocsPerRun(50, func() {
		for _, fr := range frames {
			if err := Peek(fr, &f); err != nil {
				t.Fatal(err)
			}
			_ = BodyMessage(&f)
			_ = Lookup(&f, "message")
		}
	})
	if allocs != 0 {
		t.Fatalf("Peek: %v allocs per run, want 0", allocs)
	}
}

// inRaw reports whether sub lies inside raw's memory: the zero-copy claim.
func inRaw(raw, sub []byte) bool {
	if len(sub) == 0 {
		return true
	}
	r, s := uintptr(unsafe.Pointer(unsafe.SliceData(raw))), uintptr(unsafe.Pointer(unsafe.SliceData(sub)))
	return s >= r && s+uintptr(len(sub)) <= r+uintptr(len(raw))
}

// FuzzPeek holds Peek to encoding/json on any input: Peek fails exactly
// when json.Unmarshal into map[string]json.RawMessage fails, the input is
// not an object, or the (last) topicName is not a string; otherwise every
// field equals what encoding/json decodes.
func FuzzPeek(f *testing.F) {
	for _, s := range []string{peekHeartbeat, peekPong, peekClosing, peekGone, peekSubAnswer, peekSubFailed, peekQueueEvent,
		``, `null`, `{}`, `[]`, `{"topicName":1}`, `{"topicName":"a","topicName":"b"}`,
		`{"topicName":"\ud83d\ude00","version":2,"metadata":{"CorrelationId":"\u00e9","CorrelationId":null}}`,
		`{"topic\u004eame":"x\/y","eventBody":{"topicName":"decoy"},"result":"2\u0030\u0030"}`,
		"{\"topicName\":\"\xff\xfe\",\"eventBody\":[1,2.5e-3,true,false,null,\"\\\"\"]}",
		`{"topicName":"t","metadata":{"CorrelationId":"a"},"metadata":{}}`,
		`{"eventBody":{"message":"pong"},"topicName":"channel.metadata"}  `,
		`{"a":{"b":[{"c":{}}]},"topicName":"t"`, `{"topicName":"t"}}`, `{"topicName":"t\u12"}`,
	} {
		f.Add([]byte(s))
	}
	f.Add(peekConversationFrame(600, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		var fr Frame
		err := Peek(data, &fr)

		var m map[string]json.RawMessage
		oerr := json.Unmarshal(data, &m)
		topicRaw, hasTopic := m["topicName"]
		wantErr := oerr != nil || m == nil || hasTopic && topicRaw[0] != '"'
		if (err != nil) != wantErr {
			t.Fatalf("Peek(%q) = %v; oracle: %v, map %v", data, err, oerr, m)
		}
		if err != nil {
			return
		}
		check := func(name string, got []byte, raw json.RawMessage, present bool) {
			t.Helper()
			if !present {
				if got != nil {
					t.Fatalf("Peek(%q).%s = %q, want nil", data, name, got)
				}
				return
			}
			want := []byte(raw)
			if raw[0] == '"' {
				var s string
				if err := json.Unmarshal(raw, &s); err != nil {
					t.Fatalf("oracle %s: %v", name, err)
				}
				want = []byte(s)
			}
			if got == nil || !bytes.Equal(got, want) {
				t.Fatalf("Peek(%q).%s = %q, want %q", data, name, got, want)
			}
		}
		check("Topic", fr.Topic, topicRaw, hasTopic)
		v, ok := m["version"]
		check("Version", fr.Version, v, ok)
		v, ok = m["result"]
		check("Result", fr.Result, v, ok)

		body, ok := m["eventBody"]
		if ok != (fr.Body != nil) || !bytes.Equal(fr.Body, body) || !inRaw(data, fr.Body) {
			t.Fatalf("Peek(%q).Body = %q, want %q", data, fr.Body, body)
		}

		var meta map[string]json.RawMessage
		var corr json.RawMessage
		if raw, ok := m["metadata"]; ok && raw[0] == '{' {
			if err := json.Unmarshal(raw, &meta); err != nil {
				t.Fatalf("oracle metadata: %v", err)
			}
			if c, ok := meta["CorrelationId"]; ok && string(c) != "null" {
				corr = c
			}
		}
		check("CorrelationID", fr.CorrelationID, corr, corr != nil)

		var msg json.RawMessage
		if ok && body[0] == '{' {
			var b map[string]json.RawMessage
			if err := json.Unmarshal(body, &b); err != nil {
				t.Fatalf("oracle eventBody: %v", err)
			}
			if c, ok := b["message"]; ok && c[0] == '"' {
				msg = c
			}
		}
		check("BodyMessage", BodyMessage(&fr), msg, msg != nil)
	})
}

// peekBenchSizes are the frame sizes benchmarked (and checked allocation-free).
var peekBenchSizes = []struct {
	name  string
	bytes int
}{{"0.5KB", 500}, {"4KB", 4 << 10}, {"32KB", 32 << 10}}

// peekConversationFrame builds a v2.routing.queues.{id}.conversations event of
// about size bytes, shaped like the SDK's
// Queueconversationeventtopicconversation: participants with calls,
// routing data, wrap-up, attributes, escaped names and notes.
func peekConversationFrame(size int, topicLast bool) []byte {
	const queue = "8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
	var p strings.Builder
	participant := func(i int) {
		if i > 0 {
			p.WriteByte(',')
		}
		fmt.Fprintf(&p, `{"id":"6f2d3c1e-8a4b-4c2d-9e1f-%012d","connectedTime":"2024-05-01T10:00:%02d.123Z",`+
			`"userId":"3b1c9a7e-2d4f-4e6a-8b0c-%012d","queueId":%q,"name":"Jos\u00e9 P\u00e9rez %d",`+
			`"purpose":"agent","address":"sip:agent%d@example.mypurecloud.ie","wrapupRequired":true,`+
			`"wrapupPrompt":"mandatoryTimeout","wrapupTimeoutMs":60000,`+
			`"wrapup":{"code":"1a2b3c4d-0000-4000-8000-%012d","notes":"Customer said \"thanks\"\nand left","tags":[],"durationSeconds":%d},`+
			`"conversationRoutingData":{"queue":{"id":%q},"priority":0,"skills":[{"id":"5e6f7a8b-0000-4000-8000-000000000001"}],"scoredAgents":[]},`+
			`"alertingTimeoutMs":8000,"attributes":{"ivr.language":"en-US","crm.ticket":"T-%05d"},`+
			`"calls":[{"id":"9d8c7b6a-5f4e-4d3c-8b2a-%012d","state":"connected","initialState":"alerting","recording":true,`+
			`"recordingState":"active","muted":false,"confined":false,"held":false,"disconnectType":null,"startHoldTime":null,`+
			`"direction":"inbound","self":{"nameRaw":"","addressNormalized":"tel:+35312345%02d","addressDisplay":"+353 1 234 5%02d"},`+
			`"other":{"nameRaw":"Caller","addressNormalized":"tel:+18005551234"},"provider":"Edge",`+
			`"disconnectReasons":[{"type":"peer","code":"normal","phrase":"Normal call clearing"}],"afterCallWorkRequired":false}]}`,
			i, i%60, i, queue, i, i, i, 30+i, queue, i, i, i%100, i%100)
	}
	build := func(n, divisions int) []byte {
		p.Reset()
		for i := range n {
			participant(i)
		}
		var d strings.Builder
		for i := range divisions {
			if i > 0 {
				d.WriteByte(',')
			}
			fmt.Fprintf(&d, `{"division":{"id":"d1e2f3a4-0000-4000-8000-%012d"},"entities":[{"id":"e1f2a3b4-0000-4000-8000-%012d"}]}`, i, i)
		}
		body := `{"id":"c0ffee00-1234-4abc-8def-0123456789ab","maxParticipants":` + fmt.Sprint(n+1) +
			`,"participants":[` + p.String() + `],"recordingState":"active","address":"tel:+18005551234","divisions":[` + d.String() + `]}`
		topic := `"topicName":"v2.routing.queues.` + queue + `.conversations"`
		rest := `"version":"2","eventBody":` + body + `,"metadata":{"CorrelationId":"5a3b0c2d-9e8f-4a7b-8c6d-5e4f3a2b1c0d"}`
		if topicLast {
			return []byte("{" + rest + "," + topic + "}")
		}
		return []byte("{" + topic + "," + rest + "}")
	}
	// As many participants as fit, then divisions (about 120 bytes each)
	// to come close to size.
	n := 0
	for len(build(n+1, 1)) <= size {
		n++
	}
	d := 1
	for len(build(n, d+1)) <= size {
		d++
	}
	return build(n, d)
}

func TestPeekBenchFrames(t *testing.T) {
	for _, s := range peekBenchSizes {
		for _, last := range []bool{false, true} {
			fr := peekConversationFrame(s.bytes, last)
			var f Frame
			if err := Peek(fr, &f); err != nil || !json.Valid(fr) {
				t.Fatalf("%s: %v", s.name, err)
			}
			if string(f.Topic) != "v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations" {
				t.Fatalf("%s: topic %q", s.name, f.Topic)
			}
		}
	}
}

func BenchmarkPeek(b *testing.B) {
	for _, s := range peekBenchSizes {
		for _, last := range []bool{false, true} {
			fr := peekConversationFrame(s.bytes, last)
			b.Run(peekBenchName(s.name, last, len(fr)), func(b *testing.B) {
				var f Frame
				b.SetBytes(int64(len(fr)))
				b.ReportAllocs()
				for b.Loop() {
					if err := Peek(fr, &f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPeekEncodingJSON is the baseline: what the connector would pay
// with encoding/json for the same fields.
func BenchmarkPeekEncodingJSON(b *testing.B) {
	type frame struct {
		TopicName string
		Version   string
		EventBody json.RawMessage
		Metadata  struct{ CorrelationId string }
	}
	for _, s := range peekBenchSizes {
		for _, last := range []bool{false, true} {
			fr := peekConversationFrame(s.bytes, last)
			b.Run(peekBenchName(s.name, last, len(fr)), func(b *testing.B) {
				b.SetBytes(int64(len(fr)))
				b.ReportAllocs()
				for b.Loop() {
					var f frame
					if err := json.Unmarshal(fr, &f); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

func peekBenchName(size string, topicLast bool, n int) string {
	order := "topic_first"
	if topicLast {
		order = "topic_last"
	}
	return fmt.Sprintf("%s/%s/%dB", size, order, n)
}
