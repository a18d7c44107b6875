package subjects

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads and parses the routes file at path; errors name path and line.
func Load(path, prefix string) (*Table, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read routes file: %w", err)
	}
	return Parse(path, data, prefix)
}

// Parse builds a table from the routes file contents data; name is the file
// name errors are reported against.
func Parse(name string, data []byte, prefix string) (*Table, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	p := &parser{name: name, t: &Table{prefix: prefix, file: name}}
	if err := p.parse(data); err != nil {
		return nil, err
	}
	if err := p.t.buildGroups(); err != nil {
		return nil, err
	}
	return p.t, nil
}

type parser struct {
	name string
	t    *Table
}

// lineError is an error at a line of the routes file.
type lineError struct {
	file string
	line int
	msg  string
}

func (e *lineError) Error() string { return e.file + ":" + strconv.Itoa(e.line) + ": " + e.msg }

func (p *parser) errorf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return &lineError{file: p.name, line: line, msg: fmt.Sprintf(format, args...)}
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (p *parser) parse(data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			line, _ := strconv.Atoi(m[1])
			return &lineError{file: p.name, line: line, msg: "invalid YAML: " + m[2]}
		}
		return fmt.Errorf("%s: invalid YAML: %w", p.name, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return fmt.Errorf("%s: empty routes file: want a mapping with a routes list", p.name)
	}
	top := resolve(doc.Content[0])
	if top.Kind != yaml.MappingNode {
		return p.errorf(top, "want a mapping with a routes list, got %s", kindName(top))
	}
	var routes *yaml.Node
	err := p.mapping(top, "", func(key string, k, v *yaml.Node) error {
		if key != "routes" {
			return p.errorf(k, "unknown key %q (want routes)", key)
		}
		routes = v
		return nil
	})
	if err != nil {
		return err
	}
	if routes == nil {
		return p.errorf(top, "no routes key")
	}
	if routes.Kind == yaml.ScalarNode && routes.Tag == "!!null" {
		return nil // "routes:" with nothing: the default mapping
	}
	if routes.Kind != yaml.SequenceNode {
		return p.errorf(routes, "routes must be a list, got %s", kindName(routes))
	}
	for i, n := range routes.Content {
		r, err := p.route(i+1, resolve(n))
		if err != nil {
			return err
		}
		p.t.routes = append(p.t.routes, r)
	}
	return nil
}

// mapping calls fn for each key of the mapping n, rejecting duplicate and
// non-scalar keys.
func (p *parser) mapping(n *yaml.Node, ctx string, fn func(key string, k, v *yaml.Node) error) error {
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := resolve(n.Content[i]), resolve(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			return p.errorf(k, "%skeys must be plain names", ctx)
		}
		if seen[k.Value] {
			return p.errorf(k, "%sduplicate key %q", ctx, k.Value)
		}
		seen[k.Value] = true
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

func (p *parser) route(index int, n *yaml.Node) (route, error) {
	r := route{index: index, line: n.Line}
	ctx := fmt.Sprintf("route %d: ", index)
	if n.Kind != yaml.MappingNode {
		return r, p.errorf(n, "%swant a mapping with topic, subject, stream, filter or drop, got %s", ctx, kindName(n))
	}
	var topic, subject, stream, filters, drop *yaml.Node
	err := p.mapping(n, ctx, func(key string, k, v *yaml.Node) error {
		switch key {
		case "topic":
			topic = v
		case "subject":
			subject = v
		case "stream":
			stream = v
		case "filter":
			filters = v
		case "drop":
			drop = v
		default:
			return p.errorf(k, "%sunknown key %q (want topic, subject, stream, filter or drop)", ctx, key)
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	if topic == nil {
		return r, p.errorf(n, "%smissing topic", ctx)
	}
	text, err := p.str(topic, ctx, "topic")
	if err != nil {
		return r, err
	}
	if r.pattern, err = parsePattern(text); err != nil {
		return r, p.errorf(topic, "%s%v", ctx, err)
	}
	r.lit = literalStart(r.pattern)
	for _, prev := range p.t.routes {
		if covers(prev.pattern, r.pattern) {
			return r, p.errorf(topic, "%stopic %s can never match: route %d's topic %s (line %d) matches it first",
				ctx, text, prev.index, patternString(prev.pattern), prev.line)
		}
	}

	if drop != nil {
		b, err := p.boolean(drop, ctx, "drop")
		if err != nil {
			return r, err
		}
		if b && (subject != nil || stream != nil || filters != nil) {
			return r, p.errorf(drop, "%sa drop route takes no subject, stream or filter", ctx)
		}
		r.drop = b
	}

	tmpl := "{prefix}.{topic}"
	if subject != nil {
		if tmpl, err = p.str(subject, ctx, "subject"); err != nil {
			return r, err
		}
	}
	where := topic
	if subject != nil {
		where = subject
	}
	if r.template, err = parseTemplate(tmpl, p.t.prefix, r.pattern); err != nil {
		return r, p.errorf(where, "%s%v", ctx, err)
	}
	r.subject = deriveWildcard(r.template, r.pattern)

	if stream != nil {
		if r.stream, err = p.str(stream, ctx, "stream"); err != nil {
			return r, err
		}
		if reason := checkStreamName(r.stream); reason != "" {
			return r, p.errorf(stream, "%sstream %q: %s", ctx, r.stream, reason)
		}
	}

	if filters != nil {
		if filters.Kind != yaml.SequenceNode {
			return r, p.errorf(filters, "%sfilter must be a list of conditions, got %s", ctx, kindName(filters))
		}
		for i, fn := range filters.Content {
			f, err := p.filter(resolve(fn), fmt.Sprintf("%sfilter %d: ", ctx, i+1))
			if err != nil {
				return r, err
			}
			r.filters = append(r.filters, f)
		}
	}
	return r, nil
}

var operators = []string{"equals", "not_equals", "one_of", "exists"}

func (p *parser) filter(n *yaml.Node, ctx string) (filter, error) {
	var f filter
	if n.Kind != yaml.MappingNode {
		return f, p.errorf(n, "%swant a mapping with field and one of %s, got %s", ctx, strings.Join(operators, ", "), kindName(n))
	}
	var field *yaml.Node
	var opKey string
	var opNode *yaml.Node
	err := p.mapping(n, ctx, func(key string, k, v *yaml.Node) error {
		switch key {
		case "field":
			field = v
			return nil
		case "equals", "not_equals", "one_of", "exists":
			if opKey != "" {
				return p.errorf(k, "%stwo operators, %s and %s: use one per condition", ctx, opKey, key)
			}
			opKey, opNode = key, v
			return nil
		}
		return p.errorf(k, "%sunknown key %q (want field and one of %s)", ctx, key, strings.Join(operators, ", "))
	})
	if err != nil {
		return f, err
	}
	if field == nil {
		return f, p.errorf(n, "%smissing field", ctx)
	}
	if f.field, err = p.str(field, ctx, "field"); err != nil {
		return f, err
	}
	f.keys = strings.Split(f.field, ".")
	for _, k := range f.keys {
		if k == "" {
			return f, p.errorf(field, "%sfield %q has an empty key", ctx, f.field)
		}
	}
	if opKey == "" {
		return f, p.errorf(n, "%sno operator: want one of %s", ctx, strings.Join(operators, ", "))
	}
	switch opKey {
	case "equals", "not_equals":
		f.op = opEquals
		if opKey == "not_equals" {
			f.op = opNotEquals
		}
		v, err := p.scalar(opNode, ctx, opKey)
		if err != nil {
			return f, err
		}
		f.values = []string{v}
	case "one_of":
		f.op = opOneOf
		if opNode.Kind != yaml.SequenceNode || len(opNode.Content) == 0 {
			return f, p.errorf(opNode, "%sone_of wants a non-empty list of values", ctx)
		}
		for _, vn := range opNode.Content {
			v, err := p.scalar(resolve(vn), ctx, "one_of")
			if err != nil {
				return f, err
			}
			f.values = append(f.values, v)
		}
	case "exists":
		f.op = opExists
		if f.exists, err = p.boolean(opNode, ctx, "exists"); err != nil {
			return f, err
		}
	}
	return f, nil
}

// str returns a non-empty scalar string.
func (p *parser) str(n *yaml.Node, ctx, key string) (string, error) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" || n.Value == "" {
		hint := ""
		if n.Style&(yaml.FoldedStyle|yaml.LiteralStyle) != 0 {
			hint = " (in YAML, quote a value that starts with '>', '*' or '|')"
		}
		return "", p.errorf(n, "%s%s wants a non-empty string, got %s%s", ctx, key, kindName(n), hint)
	}
	return n.Value, nil
}

// scalar returns a comparison value as the JSON text it matches: null and
// booleans in JSON spelling (YAML also writes them ~, True, ...), anything
// else as written.
func (p *parser) scalar(n *yaml.Node, ctx, key string) (string, error) {
	if n.Kind != yaml.ScalarNode {
		return "", p.errorf(n, "%s%s wants a value (string, number, true, false or null), got %s", ctx, key, kindName(n))
	}
	switch n.ShortTag() {
	case "!!null":
		return "null", nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return "", p.errorf(n, "%s%s: %v", ctx, key, err)
		}
		return strconv.FormatBool(b), nil
	}
	return n.Value, nil
}

func (p *parser) boolean(n *yaml.Node, ctx, key string) (bool, error) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return false, p.errorf(n, "%s%s wants true or false, got %s", ctx, key, kindName(n))
	}
	return b, nil
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return "nothing"
		}
		return strconv.Quote(n.Value)
	}
	return "something else"
}

// parsePattern splits a topic pattern into tokens.
func parsePattern(text string) ([]ptoken, error) {
	var toks []ptoken
	wild := 0
	parts := strings.Split(text, ".")
	for i, part := range parts {
		switch {
		case part == "":
			return nil, fmt.Errorf("topic %q has an empty token", text)
		case part == "*":
			toks = append(toks, ptoken{kind: tokOne})
			wild++
		case part == ">":
			if i != len(parts)-1 {
				return nil, fmt.Errorf("topic %q: '>' must be the last token", text)
			}
			toks = append(toks, ptoken{kind: tokRest})
			wild++
		case strings.ContainsAny(part, "*>"):
			return nil, fmt.Errorf("topic %q: a wildcard must be a whole token, not part of %q", text, part)
		default:
			for _, c := range []byte(part) {
				if unsafeByte(c) {
					return nil, fmt.Errorf("topic %q: token %q holds %q, which no topic token can", text, part, c)
				}
			}
			toks = append(toks, ptoken{kind: tokLiteral, text: part})
		}
	}
	if wild > maxWildcards {
		return nil, fmt.Errorf("topic %q has %d wildcards, at most %d are supported", text, wild, maxWildcards)
	}
	return toks, nil
}

func literalStart(pat []ptoken) string {
	var b strings.Builder
	for i, t := range pat {
		if t.kind != tokLiteral {
			break
		}
		b.WriteString(t.text)
		if i < len(pat)-1 {
			b.WriteByte('.')
		}
	}
	return b.String()
}

func patternString(pat []ptoken) string {
	parts := make([]string, len(pat))
	for i, t := range pat {
		switch t.kind {
		case tokOne:
			parts[i] = "*"
		case tokRest:
			parts[i] = ">"
		default:
			parts[i] = t.text
		}
	}
	return strings.Join(parts, ".")
}

// covers reports whether every topic b matches also matches a.
func covers(a, b []ptoken) bool {
	for i, ta := range a {
		if i >= len(b) {
			return false
		}
		tb := b[i]
		switch ta.kind {
		case tokRest:
			return true
		case tokOne:
			if tb.kind == tokRest {
				return false
			}
		default:
			if tb.kind != tokLiteral || tb.text != ta.text {
				return false
			}
		}
	}
	return len(a) == len(b)
}

func wildcards(pat []ptoken) int {
	n := 0
	for _, t := range pat {
		if t.kind != tokLiteral {
			n++
		}
	}
	return n
}

// parseTemplate compiles a subject template against its pattern.
func parseTemplate(tmpl, prefix string, pat []ptoken) ([]piece, error) {
	var pieces []piece
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			pieces = append(pieces, piece{kind: pieceLiteral, text: lit.String()})
			lit.Reset()
		}
	}
	nwild := wildcards(pat)
	for rest := tmpl; rest != ""; {
		i := strings.IndexAny(rest, "{}")
		if i < 0 {
			lit.WriteString(rest)
			break
		}
		lit.WriteString(rest[:i])
		if rest[i] == '}' {
			return nil, fmt.Errorf("subject %q: '}' without '{'", tmpl)
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("subject %q: '{' without '}'", tmpl)
		}
		name := rest[i+1 : i+j]
		rest = rest[i+j+1:]
		switch name {
		case "prefix":
			lit.WriteString(prefix)
		case "topic":
			flush()
			pieces = append(pieces, piece{kind: pieceTopic})
		default:
			n, err := strconv.Atoi(name)
			if err != nil || n < 1 || strconv.Itoa(n) != name {
				return nil, fmt.Errorf("subject %q: unknown placeholder {%s} (want {prefix}, {topic} or {1}..{N} for the N wildcards)", tmpl, name)
			}
			if n > nwild {
				return nil, fmt.Errorf("template uses {%d} but the pattern has %s", n, plural(nwild, "wildcard"))
			}
			flush()
			pieces = append(pieces, piece{kind: pieceCapture, n: n - 1})
		}
	}
	flush()
	if err := checkTemplate(tmpl, pieces); err != nil {
		return nil, err
	}
	return pieces, nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// checkTemplate checks that the template's literal text, with every
// substitution standing for a non-empty token part, forms a valid literal
// subject.
func checkTemplate(tmpl string, pieces []piece) error {
	var b strings.Builder
	for _, p := range pieces {
		if p.kind == pieceLiteral {
			b.WriteString(p.text)
		} else {
			b.WriteString("x")
		}
	}
	if reason := checkLiteralSubject(b.String()); reason != "" {
		return fmt.Errorf("subject %q: %s", tmpl, reason)
	}
	return nil
}

// checkLiteralSubject returns why s is not a valid subject without
// wildcards, or "".
func checkLiteralSubject(s string) string {
	for _, tok := range strings.Split(s, ".") {
		if tok == "" {
			return "empty token (a subject may not start or end with '.' or hold '..')"
		}
		for _, c := range []byte(tok) {
			switch {
			case c == '*' || c == '>':
				return fmt.Sprintf("%q is a wildcard character, not allowed in a published subject", c)
			case unsafeByte(c):
				return fmt.Sprintf("%q is not allowed in a subject", c)
			}
		}
	}
	return ""
}

// checkStreamName returns why name is not a valid JetStream stream name,
// or "".
func checkStreamName(name string) string {
	for _, c := range []byte(name) {
		if c <= ' ' || c == 0x7f || strings.IndexByte(".*>/\\", c) >= 0 {
			return fmt.Sprintf("%q is not allowed in a stream name", c)
		}
	}
	return ""
}
