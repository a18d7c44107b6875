// Package subjects is gcnats' routing table: it maps a Genesys topic to the
// NATS subject its events are published on and decides, by filters on the
// event body, whether an event is published at all.
//
// # Default mapping
//
// Without a routes file, or for a topic no route matches, the subject is
// "{prefix}.{topic}": genesys.v2.routing.queues.8f0c….conversations. A
// topic's dot-separated tokens stay tokens. Bytes a NATS subject token may
// not hold (space, tab, CR, LF, other control characters, DEL) and the
// wildcard characters '*' and '>' are each replaced by '_', and an empty
// token becomes "_", so nothing is dropped silently and nothing published
// can act as a wildcard. Other bytes, non-ASCII UTF-8 included, pass
// through.
//
// # Routes file
//
// The routes file (GCNATS_ROUTES_FILE) is YAML:
//
//	routes:
//	  # Queue conversations, split by media type, on their own stream.
//	  - topic: v2.routing.queues.*.conversations.>   # '*' one token, '>' one or more (last only)
//	    subject: "queues.{1}.{2}"                     # {N}: what the N-th wildcard matched
//	    stream: QUEUES
//	  # Only agents going off queue, under the default stream.
//	  - topic: v2.users.*.routingStatus
//	    subject: "{prefix}.routing.{1}"
//	    filter:                                       # all must hold
//	      - field: routingStatus.status               # dotted path into eventBody
//	        equals: OFF_QUEUE
//	  - topic: v2.users.*.presence
//	    filter:
//	      - field: presenceDefinition.systemPresence
//	        one_of: [AVAILABLE, BUSY]
//	      - field: presenceMessage
//	        exists: false
//	  # Never publish these.
//	  - topic: v2.users.*.conversations.>
//	    drop: true
//
// A route has these keys:
//
//   - topic (required): a pattern over topic tokens: a literal token, '*'
//     for exactly one token, or '>' for one or more tokens as the last
//     token, as in NATS subjects. Quote a pattern that starts with '*' or
//     '>': YAML reads those as an alias or a folded block.
//   - subject: the subject template; default "{prefix}.{topic}". {prefix}
//     is the configured prefix, {topic} the whole topic, {N} the text the
//     N-th wildcard of the pattern matched (a '>' match spans tokens).
//     Substituted text is made safe as in the default mapping; literal text
//     must form a valid subject without wildcards.
//   - stream: the JetStream stream for the route's subjects; default the
//     default stream (GCNATS_STREAM).
//   - filter: conditions on the event body, all of which must hold for the
//     event to be published; otherwise it is counted as filtered. Each has
//     a field (a dotted path of object keys into eventBody, compared
//     exactly) and one operator: equals: V, not_equals: V, one_of: [V, ...]
//     or exists: true|false. A value compares with a JSON string's decoded
//     contents or with a number's, true's, false's or null's literal text
//     (so equals: 2 matches 2 and "2" but not 2.0); an object or array
//     equals nothing. not_equals holds whenever equals does not, a missing
//     field included. exists holds for any value, null included.
//   - drop: true drops every event of matching topics (counted as
//     filtered); such a route has no other keys but topic.
//
// Routes are tried in order and the first whose pattern matches decides;
// topics no route matches follow the default mapping. A route that an
// earlier route's pattern already covers can never match and is an error,
// as is any unknown key, bad pattern or template, a filter without an
// operator or with two, or a stream whose subjects would overlap another
// stream's (JetStream lets a subject belong to one stream only, and the
// default stream takes "{prefix}.>"). Errors name the file and line:
//
//	routes.yaml:12: route 3: template uses {3} but the pattern has 2 wildcards
//
// # Concurrency and cost
//
// A Table is read-only once built and safe for concurrent use. Route
// appends to a caller's buffer and never allocates; filters read only the
// fields they test.
package subjects

import (
	"fmt"

	"github.com/gcnats/gcnats/internal/jsonscan"
)

// DefaultPrefix is the subject prefix when none is configured.
const DefaultPrefix = "genesys"

// Table maps topics to subjects. Build it with New, Parse or Load.
type Table struct {
	prefix string
	file   string
	routes []route
	// groups are the subject wildcards of each stream, by stream name ("" is
	// the default stream), in order of first appearance.
	groups []group
}

type group struct {
	stream   string
	subjects []string
}

// Stream is a JetStream stream the table publishes into, with the subjects
// it must capture.
type Stream struct {
	Name     string
	Subjects []string
}

// maxWildcards bounds a pattern's wildcards so that matching needs no
// allocation.
const maxWildcards = 16

type route struct {
	index int // 1-based, as in errors
	line  int
	// lit is the pattern's literal start (tokens before the first wildcard,
	// with their dots): a cheap first test.
	lit      string
	pattern  []ptoken
	template []piece // the subject template; never empty
	stream   string
	filters  []filter
	drop     bool
	// subject is the NATS wildcard covering every subject the route
	// produces.
	subject string
}

const (
	tokLiteral = iota
	tokOne     // '*'
	tokRest    // '>'
)

type ptoken struct {
	kind int
	text string
}

const (
	pieceLiteral = iota
	pieceCapture
	pieceTopic
)

type piece struct {
	kind int
	text string // pieceLiteral
	n    int    // pieceCapture: 0-based wildcard index
}

type span struct{ start, end int }

// New returns a table with the default mapping only.
func New(prefix string) (*Table, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	t := &Table{prefix: prefix}
	t.groups = []group{{subjects: []string{prefix + ".>"}}}
	return t, nil
}

func checkPrefix(prefix string) error {
	if prefix == "" {
		return fmt.Errorf("invalid subject prefix %q: empty", prefix)
	}
	if reason := checkLiteralSubject(prefix); reason != "" {
		return fmt.Errorf("invalid subject prefix %q: %s", prefix, reason)
	}
	return nil
}

// Prefix returns the table's subject prefix.
func (t *Table) Prefix() string { return t.prefix }

// Route appends to dst the subject for an event of topic with eventBody
// body and reports whether the event passes the filters of the route that
// matched (a drop route never passes and appends nothing). Topics no route
// matches take the default mapping and pass. A body that is not valid JSON
// where a filter reads it fails that filter. Route never allocates beyond
// growing dst.
func (t *Table) Route(dst, topic, body []byte) (subject []byte, pass bool) {
	var caps [maxWildcards]span
	for i := range t.routes {
		r := &t.routes[i]
		if !r.match(topic, &caps) {
			continue
		}
		if r.drop {
			return dst, false
		}
		dst = r.render(dst, topic, &caps)
		for j := range r.filters {
			if !r.filters[j].holds(body) {
				return dst, false
			}
		}
		return dst, true
	}
	return t.appendDefault(dst, topic), true
}

func (t *Table) appendDefault(dst, topic []byte) []byte {
	dst = append(dst, t.prefix...)
	dst = append(dst, '.')
	return appendSafe(dst, topic)
}

// match reports whether topic matches the route's pattern, recording what
// each wildcard matched.
func (r *route) match(topic []byte, caps *[maxWildcards]span) bool {
	if len(topic) < len(r.lit) || string(topic[:len(r.lit)]) != r.lit {
		return false
	}
	pos, n := 0, 0
	for _, pt := range r.pattern {
		if pos > len(topic) {
			return false // the topic has fewer tokens
		}
		end := pos
		for end < len(topic) && topic[end] != '.' {
			end++
		}
		switch pt.kind {
		case tokRest:
			caps[n] = span{pos, len(topic)}
			return true
		case tokOne:
			caps[n] = span{pos, end}
			n++
		default:
			if string(topic[pos:end]) != pt.text {
				return false
			}
		}
		pos = end + 1
	}
	return pos == len(topic)+1
}

func (r *route) render(dst, topic []byte, caps *[maxWildcards]span) []byte {
	for _, p := range r.template {
		switch p.kind {
		case pieceLiteral:
			dst = append(dst, p.text...)
		case pieceCapture:
			c := caps[p.n]
			dst = appendSafe(dst, topic[c.start:c.end])
		case pieceTopic:
			dst = appendSafe(dst, topic)
		}
	}
	return dst
}

// appendSafe appends s with every byte a subject token may not hold
// replaced by '_' and every empty token by "_".
func appendSafe(dst, s []byte) []byte {
	if safe(s) {
		return append(dst, s...)
	}
	tokenStart := true
	for _, c := range s {
		if c == '.' {
			if tokenStart {
				dst = append(dst, '_')
			}
			dst = append(dst, '.')
			tokenStart = true
			continue
		}
		if unsafeByte(c) {
			c = '_'
		}
		dst = append(dst, c)
		tokenStart = false
	}
	if tokenStart {
		dst = append(dst, '_')
	}
	return dst
}

// safe reports whether s needs no replacement: the common case, copied in
// one go.
func safe(s []byte) bool {
	if len(s) == 0 || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prev := byte(0)
	for _, c := range s {
		if unsafeByte(c) || c == '.' && prev == '.' {
			return false
		}
		prev = c
	}
	return true
}

// unsafeByte reports bytes that NATS forbids in a subject token (whitespace)
// or that would be wildcards or invisible trouble (other controls, DEL).
func unsafeByte(c byte) bool { return c <= ' ' || c == 0x7f || c == '*' || c == '>' }

const (
	opEquals = iota
	opNotEquals
	opOneOf
	opExists
)

type filter struct {
	field  string
	keys   []string
	op     int
	values []string // opEquals, opNotEquals (one), opOneOf
	exists bool     // opExists
}

func (f *filter) holds(body []byte) bool {
	v, err := jsonscan.Get(body, f.keys...)
	if err != nil {
		return false
	}
	switch f.op {
	case opExists:
		return (v != nil) == f.exists
	case opNotEquals:
		return !f.equals(v)
	}
	return f.equals(v)
}

// equals reports whether the raw value v equals one of the filter's values.
func (f *filter) equals(v []byte) bool {
	switch jsonscan.KindOf(v) {
	case jsonscan.String:
		for _, s := range f.values {
			if jsonscan.EqualString(v, s) {
				return true
			}
		}
	case jsonscan.Number, jsonscan.Bool, jsonscan.Null:
		for _, s := range f.values {
			if string(v) == s {
				return true
			}
		}
	}
	return false
}
