package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// seeds covers the grammar's corners; every fuzz test starts from it.
var seeds = []string{
	``, ` `, `{}`, `[]`, `""`, `0`, `-0`, `-`, `01`, `1.`, `1.5`, `1e`, `1e+`, `1E-7`, `-1.25e+10`,
	`.5`, `+1`, `true`, `tru`, `false`, `null`, `nul`, `nulll`, `True`,
	`"\u00e9"`, `"\ud83d\ude00"`, `"\ud83d"`, `"\ude00"`, `"\ud83d\u0041"`, `"\ud83d\ud83d\ude00"`,
	`"\uD83D\uDE00"`, `"\u12"`, `"\u12G4"`, `"\x"`, `"\'"`, "\"\xff\"", "\"\xed\xa0\x80\"", "\"a\tb\"",
	"\"\x7f\"", `"\/\b\f\n\r\t\\\""`, `"abc`, `"abc\`, `"é"`, "\"\xef\xbf\xbd\"",
	`{"a":1}`, `{"a":1,}`, `{"a" 1}`, `{"a":}`, `{a:1}`, `{"a":1 "b":2}`, `{"a":[1,{"b":[]}]}`,
	`[1,2,]`, `[,]`, `[1 2]`, `[[[[]]]]`, `[{}]`, `{"a":{"b":{"c":null}}}`, ` {"a" : "b" } `,
	`{"a":1}x`, `{"a":1}{}`, "{\"a\":\r\n\t1}", `{"a":1,"a":2}`, `{"":0}`, `{"a\u0062":1,"ab":2}`,
	`[1]]`, `{"a":1}}`, `"\u0000"`, `{"a":"\u0000"}`, "{\"\xff\":1,\"\xfe\":2}",
	`{"x":"0123456789abcdef\"0123456789"}`, `{"long":"` + strings.Repeat("ab\\n", 40) + `"}`,
}

func addSeeds(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzValidate(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		err := Validate(data)
		if want := json.Valid(data); (err == nil) != want {
			t.Fatalf("Validate(%q) = %v, json.Valid = %v", data, err, want)
		}
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Offset < 0 || se.Offset > len(data) {
				t.Fatalf("Validate(%q): bad error %#v", data, err)
			}
			_ = err.Error()
			return
		}
		// A valid document skips to its end exactly.
		end, err := Skip(data, 0)
		if err != nil || !bytes.Equal(bytes.TrimRight(data[end:], " \t\r\n"), nil) {
			t.Fatalf("Skip(%q) = %d, %v", data, end, err)
		}
		v := TrimSpace(data)
		if k := KindOf(v); k == Invalid {
			t.Fatalf("KindOf(%q) = invalid", v)
		}
	})
}

func FuzzString(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		tok := TrimSpace(data)
		got, gerr := AppendUnquote([]byte("pre"), tok)
		var want string
		werr := json.Unmarshal(tok, &want)
		isString := werr == nil && KindOf(tok) == String
		if !isString {
			// Not a string token (or not valid): never a match, and no claim
			// of plainness when invalid.
			if json.Valid(tok) {
				return
			}
			if gerr == nil && Valid(tok) {
				t.Fatalf("AppendUnquote(%q) accepted an invalid token", tok)
			}
			return
		}
		if gerr != nil || string(got) != "pre"+want {
			t.Fatalf("AppendUnquote(%q) = %q, %v; want %q", tok, got, gerr, want)
		}
		if !EqualString(tok, want) {
			t.Fatalf("EqualString(%q, %q) = false", tok, want)
		}
		if EqualString(tok, want+"x") || (len(want) > 0 && EqualString(tok, want[:len(want)-1])) {
			t.Fatalf("EqualString(%q) matches a different string", tok)
		}
		if raw, plain := Contents(tok); plain && string(raw) != want {
			t.Fatalf("Contents(%q) = %q plain, decoded %q", tok, raw, want)
		} else if !plain && string(raw) == want && utf8.Valid(raw) && !bytes.ContainsRune(raw, '\\') {
			t.Fatalf("Contents(%q) says not plain", tok)
		}
	})
}

// FuzzMembers checks the member walk against decoding into
// map[string]json.RawMessage: same acceptance, same last-wins members.
func FuzzMembers(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var want map[string]json.RawMessage
		werr := json.Unmarshal(data, &want)
		isObject := werr == nil && KindOf(TrimSpace(data)) == Object

		got := map[string][]byte{}
		var m Members
		m.Reset(data)
		var key []byte
		for m.Next() {
			key, _ = AppendUnquote(key[:0], m.Key())
			got[string(key)] = m.Value()
		}
		if (m.Err() == nil) != isObject {
			t.Fatalf("Members(%q): err %v, oracle err %v", data, m.Err(), werr)
		}
		if !isObject {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("Members(%q): %d keys, want %d", data, len(got), len(want))
		}
		for k, w := range want {
			if g, ok := got[k]; !ok || !bytes.Equal(g, w) {
				t.Fatalf("Members(%q)[%q] = %q, want %q", data, k, g, w)
			}
			v, err := Get(data, k)
			if err != nil || !bytes.Equal(v, w) {
				t.Fatalf("Get(%q, %q) = %q, %v; want %q", data, k, v, err, w)
			}
		}
	})
}

func TestDepth(t *testing.T) {
	for _, n := range []int{1, 63, 64, 65, 127, 128, 129, 200, MaxDepth - 1, MaxDepth, MaxDepth + 1} {
		arr := []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
		obj := []byte(strings.Repeat(`{"a":`, n-1) + "{}" + strings.Repeat("}", n-1))
		mid := "1"
		if n%2 == 1 {
			mid = "[1]"
		}
		mixed := []byte(strings.Repeat(`[{"a":`, n/2) + mid + strings.Repeat("}]", n/2))
		for _, doc := range [][]byte{arr, obj, mixed} {
			err := Validate(doc)
			if want := json.Valid(doc); (err == nil) != want {
				t.Fatalf("depth %d: Validate = %v, json.Valid = %v", n, err, want)
			}
			if (err == nil) != (n <= MaxDepth) {
				t.Fatalf("depth %d: Validate = %v", n, err)
			}
		}
	}
}

func TestValidateErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "unexpected end of JSON input at offset 0"},
		{`{"a":1}x`, "invalid character 'x' after top-level value at offset 7"},
		{`{"a" 1}`, "invalid character '1' after object key at offset 5"},
		{`[1 2]`, "invalid character '2' after array element at offset 3"},
		{`{"a":1 "b":2}`, `invalid character '"' after object key:value pair at offset 7`},
		{`{1:2}`, "invalid character '1' looking for beginning of object key string at offset 1"},
		{`"\x"`, `invalid character 'x' in string escape code at offset 2`},
		{"\"a\x01\"", `invalid character byte 0x01 in string literal at offset 2`},
		{`"\u12z4"`, `invalid character 'z' in \u hexadecimal character escape at offset 5`},
		{`-x`, "invalid character 'x' in numeric literal at offset 1"},
		{`trux`, "invalid character 'x' in literal at offset 3"},
		{`[1,`, "unexpected end of JSON input at offset 3"},
		{strings.Repeat("[", MaxDepth+1), "exceeded max depth at offset 10000"},
	} {
		err := Validate([]byte(tc.in))
		if err == nil || err.Error() != tc.want {
			t.Errorf("Validate(%q) = %v, want %s", tc.in, err, tc.want)
		}
	}
}

func TestGet(t *testing.T) {
	doc := []byte(` {"routingStatus":{"status":"OFF_QUEUE","startTime":"x"},
		"presenceDefinition":{"systemPresence":"Available","id":"p1"},
		"a":{"b":1},"a":{"c":2}, "n":null, "arr":[{"status":"decoy"}],
		"s\u0074ate":"escaped key", "deep":{"status":{"status":"decoy"}}} `)
	for _, tc := range []struct {
		path string
		want string // "<nil>" for absent
	}{
		{"routingStatus.status", `"OFF_QUEUE"`},
		{"presenceDefinition.systemPresence", `"Available"`},
		{"routingStatus", `{"status":"OFF_QUEUE","startTime":"x"}`},
		{"a.c", "2"},     // last duplicate wins
		{"a.b", "<nil>"}, // ... entirely
		{"n", "null"},    // present null
		{"n.x", "<nil>"}, // through a non-object
		{"arr.status", "<nil>"},
		{"state", `"escaped key"`},
		{"status", "<nil>"}, // only nested
		{"missing", "<nil>"},
		{"routingStatus.status.x", "<nil>"},
		{"", "<nil>"},
	} {
		v, err := GetPath(doc, tc.path)
		if err != nil {
			t.Fatalf("GetPath(%q): %v", tc.path, err)
		}
		got := string(v)
		if v == nil {
			got = "<nil>"
		}
		if got != tc.want {
			t.Errorf("GetPath(%q) = %s, want %s", tc.path, got, tc.want)
		}
		v2, _ := Get(doc, strings.Split(tc.path, ".")...)
		if !bytes.Equal(v, v2) {
			t.Errorf("Get(%q) = %s, GetPath = %s", tc.path, v2, v)
		}
	}
	if v, err := Get(doc); err != nil || !bytes.Equal(v, bytes.TrimSpace(doc)) {
		t.Errorf("Get(doc) = %q, %v", v, err)
	}
	// Errors in what is read are reported; what is not read is not.
	if _, err := GetPath([]byte(`{"a":1,"b":[1,}`), "a"); err == nil {
		t.Error("GetPath on a broken object: no error")
	}
	if v, err := GetPath([]byte(`{"a":{"b":2},"c":1} trailing`), "a.b"); err == nil {
		t.Errorf("GetPath with trailing garbage = %s, want an error", v)
	}
	if v, err := GetPath([]byte(`[1,`), "a"); v != nil || err != nil {
		t.Errorf("GetPath on a non-object = %s, %v", v, err)
	}
}

func TestEqualString(t *testing.T) {
	for _, tc := range []struct {
		tok, s string
		want   bool
	}{
		{`"topicName"`, "topicName", true},
		{`"topicname"`, "topicName", false},
		{`"topic\u004eame"`, "topicName", true},
		{`"topic\u004Eame"`, "topicName", true},
		{`"topicName "`, "topicName", false},
		{`"topicNam"`, "topicName", false},
		{`""`, "", true},
		{`"\ud83d\ude00"`, "😀", true},
		{`"\ud83d"`, "\uFFFD", true},
		{"\"\xff\"", "\uFFFD", true},
		{"\"\xff\"", "\xff", false},
		{`"a\/b"`, "a/b", true},
		{`"a\\b"`, `a\b`, true},
		{`"é"`, "é", true},
		{`"\u00e9"`, "é", true},
		{`topicName`, "topicName", false},
		{`"`, "", false},
	} {
		if got := EqualString([]byte(tc.tok), tc.s); got != tc.want {
			t.Errorf("EqualString(%s, %q) = %v", tc.tok, tc.s, got)
		}
	}
}

func TestKind(t *testing.T) {
	for in, want := range map[string]Kind{`{}`: Object, `[]`: Array, `"x"`: String, `-1`: Number,
		`7`: Number, `true`: Bool, `false`: Bool, `null`: Null, ``: Invalid, ` {}`: Invalid} {
		if got := KindOf([]byte(in)); got != want {
			t.Errorf("KindOf(%q) = %v, want %v", in, got, want)
		}
	}
	if Object.String() != "object" || Kind(99).String() != "invalid" {
		t.Error("Kind.String")
	}
}

func TestNoAllocs(t *testing.T) {
	doc := []byte(`{"topicName":"v2.users.x.presence","eventBody":{"presenceDefinition":
		{"id":"1","systemPresence":"Av\u0061ilable"},"deep":[[[[[[{"a":[1,2.5e3,true,null]}]]]]]]},
		"metadata":{"CorrelationId":"c"}}`)
	deep := []byte(strings.Repeat("[", 500) + strings.Repeat("]", 500))
	var buf []byte
	allocs := testing.AllocsPerRun(100, func() {
		if Validate(doc) != nil || Validate(deep) != nil {
			t.Fatal("invalid")
		}
		var m Members
		m.Reset(doc)
		for m.Next() {
			_ = EqualString(m.Key(), "eventBody")
		}
		v, _ := GetPath(doc, "eventBody.presenceDefinition.systemPresence")
		buf, _ = AppendUnquote(buf[:0], v)
		_, _ = Get(doc, "metadata", "CorrelationId")
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per run, want 0", allocs)
	}
	if string(buf) != "Available" {
		t.Fatalf("unquote = %q", buf)
	}
}

func BenchmarkValidate(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"participants":[`)
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"id":"6f2d3c1e-8a4b-4c2d-9e1f-0a1b2c3d4e5f","name":"Caller \u00e9 \"x\"","purpose":"customer",` +
			`"connectedTime":"2024-05-01T10:00:00.000Z","wrapupRequired":false,"alertingTimeoutMs":8000,"attributes":{}}`)
	}
	sb.WriteString(`]}`)
	doc := []byte(sb.String())
	b.SetBytes(int64(len(doc)))
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate(doc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestContents(t *testing.T) {
	for _, tc := range []struct {
		tok   string
		plain bool
	}{
		{`""`, true},
		{`"v2.routing.queues.8f0c1d2e-3a4b-4c5d-8e6f-7a8b9c0d1e2f.conversations"`, true},
		{`"0123456789abcdefé"`, true},
		{"\"0123456789abcdef\xff\"", false},
		{`"0123456789abcde\n"`, false},
		{`"0123456789abcdef\/"`, false},
		{"\"01234567\x01abcdef\"", false},
		{`"01234567日本語abcdef"`, true},
		{"\"01234567\xed\xa0\x80abcdef\"", false},
		{`x`, false},
	} {
		raw, plain := Contents([]byte(tc.tok))
		if plain != tc.plain {
			t.Errorf("Contents(%q) plain = %v, want %v", tc.tok, plain, tc.plain)
		}
		if len(tc.tok) >= 2 && tc.tok[0] == '"' && string(raw) != tc.tok[1:len(tc.tok)-1] {
			t.Errorf("Contents(%q) = %q", tc.tok, raw)
		}
	}
}
