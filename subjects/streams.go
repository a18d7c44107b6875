package subjects

import (
	"fmt"
	"strings"
)

// Streams returns the streams to create and the subjects each captures.
// The default stream, named defaultStream, takes "{prefix}.>" (where the
// default mapping lands) and the subjects of routes without a stream (or
// naming defaultStream); each other stream the subjects of its routes.
// Subjects are NATS wildcards derived from the routes' templates, reduced so
// that none overlaps another of the same stream, as JetStream requires.
// Parse has already made sure no two streams overlap. The default stream
// comes first; it is left out only when it would capture nothing.
func (t *Table) Streams(defaultStream string) []Stream {
	def := Stream{Name: defaultStream}
	var named []Stream
	for _, g := range t.groups {
		if g.stream == "" || g.stream == defaultStream {
			def.Subjects = append(def.Subjects, g.subjects...)
			continue
		}
		named = append(named, Stream{Name: g.stream, Subjects: append([]string(nil), g.subjects...)})
	}
	def.Subjects = reduce(def.Subjects)
	if len(def.Subjects) == 0 {
		return named
	}
	return append([]Stream{def}, named...)
}

// buildGroups gathers the subject wildcards of each stream and rejects
// overlaps between streams, which JetStream would refuse at stream creation
// with a far less helpful message.
func (t *Table) buildGroups() error {
	type member struct {
		subject string
		r       *route // nil for the default mapping
	}
	type raw struct {
		stream  string
		members []member
	}
	groups := []*raw{{}}
	find := func(stream string) *raw {
		for _, g := range groups {
			if g.stream == stream {
				return g
			}
		}
		g := &raw{stream: stream}
		groups = append(groups, g)
		return g
	}
	defaultReachable := true
	for i := range t.routes {
		r := &t.routes[i]
		if len(r.pattern) == 1 && r.pattern[0].kind == tokRest {
			defaultReachable = false // a catch-all route: no topic is left unmatched
		}
		if !r.drop {
			g := find(r.stream)
			g.members = append(g.members, member{r.subject, r})
		}
	}
	if defaultReachable {
		groups[0].members = append([]member{{subject: t.prefix + ".>"}}, groups[0].members...)
	}

	t.groups = make([]group, len(groups))
	for i, g := range groups {
		subs := make([]string, len(g.members))
		for j, m := range g.members {
			subs[j] = m.subject
		}
		t.groups[i] = group{stream: g.stream, subjects: reduce(subs)}
	}

	streamName := func(s string) string {
		if s == "" {
			return "the default stream"
		}
		return "stream " + s
	}
	for i := range t.groups {
		for j := i + 1; j < len(t.groups); j++ {
			a, b := &t.groups[i], &t.groups[j]
			for _, sa := range a.subjects {
				for _, sb := range b.subjects {
					if !collide(sa, sb) {
						continue
					}
					// Blame a route of the later stream whose own subject
					// overlaps; the earlier stream's subject is the context.
					for _, m := range groups[j].members {
						if collide(m.subject, sa) {
							r := m.r
							return &lineError{file: t.file, line: r.line, msg: fmt.Sprintf(
								"route %d: its subjects %s (%s) overlap %s of %s; JetStream lets a subject belong to one stream only%s",
								r.index, m.subject, streamName(b.stream), sa, streamName(a.stream), overlapHint(sa, t.prefix))}
						}
					}
					return fmt.Errorf("%s: subjects %s of %s and %s of %s overlap; JetStream lets a subject belong to one stream only",
						t.file, sa, streamName(a.stream), sb, streamName(b.stream))
				}
			}
		}
	}
	return nil
}

func overlapHint(other, prefix string) string {
	if other == prefix+".>" {
		return " (the default stream takes " + other + " for the default mapping, so give the route a subject outside {prefix}.)"
	}
	return ""
}

// deriveWildcard returns the NATS wildcard that covers every subject the
// template renders for topics matching pat.
func deriveWildcard(tmpl []piece, pat []ptoken) string {
	const (
		unitLit = iota
		unitOne
		unitRest
	)
	type unit struct {
		kind int
		text string
	}
	var units []unit
	for _, p := range tmpl {
		switch p.kind {
		case pieceLiteral:
			units = append(units, unit{unitLit, p.text})
		case pieceCapture:
			kind := unitOne
			if nthWildcard(pat, p.n).kind == tokRest {
				kind = unitRest
			}
			units = append(units, unit{kind: kind})
		case pieceTopic:
			for i, t := range pat {
				if i > 0 {
					units = append(units, unit{unitLit, "."})
				}
				switch t.kind {
				case tokOne:
					units = append(units, unit{kind: unitOne})
				case tokRest:
					units = append(units, unit{kind: unitRest})
				default:
					units = append(units, unit{unitLit, t.text})
				}
			}
		}
	}
	var toks []string
	var cur strings.Builder
	one, rest := false, false
	// end closes the current token; a token holding a '>' match spans one
	// or more tokens, so it and all after it become '>'.
	end := func() bool {
		switch {
		case rest:
			toks = append(toks, ">")
			return true
		case one:
			toks = append(toks, "*")
		default:
			toks = append(toks, cur.String())
		}
		cur.Reset()
		one = false
		return false
	}
	for _, u := range units {
		switch u.kind {
		case unitOne:
			one = true
		case unitRest:
			rest = true
		default:
			for _, c := range []byte(u.text) {
				if c != '.' {
					cur.WriteByte(c)
				} else if end() {
					return strings.Join(toks, ".")
				}
			}
		}
	}
	end()
	return strings.Join(toks, ".")
}

func nthWildcard(pat []ptoken, n int) ptoken {
	for _, t := range pat {
		if t.kind != tokLiteral {
			if n == 0 {
				return t
			}
			n--
		}
	}
	return ptoken{}
}

// collide reports whether some subject matches both wildcards a and b.
func collide(a, b string) bool {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; ; i++ {
		if i == len(ta) || i == len(tb) {
			return len(ta) == len(tb)
		}
		x, y := ta[i], tb[i]
		if x == ">" || y == ">" {
			return true
		}
		if x != "*" && y != "*" && x != y {
			return false
		}
	}
}

// merge returns a wildcard covering both a and b.
func merge(a, b string) string {
	ta, tb := strings.Split(a, "."), strings.Split(b, ".")
	n := min(len(ta), len(tb))
	out := make([]string, 0, n)
	for i := range n {
		x, y := ta[i], tb[i]
		switch {
		case x == ">" || y == ">":
			return strings.Join(append(out, ">"), ".")
		case x == y:
			out = append(out, x)
		default:
			out = append(out, "*")
		}
	}
	if len(ta) == len(tb) {
		return strings.Join(out, ".")
	}
	// Different lengths: '>' from the last common token takes both.
	return strings.Join(append(out[:n-1], ">"), ".")
}

// reduce removes duplicates and merges overlapping wildcards until none of
// subs overlaps another.
func reduce(subs []string) []string {
	out := append([]string(nil), subs...)
	for changed := true; changed; {
		changed = false
	scan:
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if collide(out[i], out[j]) {
					out[i] = merge(out[i], out[j])
					out = append(out[:j], out[j+1:]...)
					changed = true
					break scan
				}
			}
		}
	}
	return out
}
