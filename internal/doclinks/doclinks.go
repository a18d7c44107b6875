// Package doclinks checks the links of the repository's Markdown: its
// test fails on a relative link to a file that does not exist, or to a
// heading that is not in its page.
package doclinks

import (
	"bufio"
	"bytes"
	"regexp"
	"strings"
	"unicode"
)

// Link is one link of a Markdown page.
type Link struct {
	Line   int
	Target string // as written: path, path#anchor or #anchor
}

var (
	inlineLink = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	refLink    = regexp.MustCompile(`^\s*\[[^\]]+\]:\s+(\S+)`)
	htmlAnchor = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	inlineCode = regexp.MustCompile("`[^`]*`")
)

// Parse returns a page's links, outside code blocks and code spans, and
// the anchors of its headings as GitHub makes them.
func Parse(page []byte) (links []Link, anchors map[string]bool) {
	anchors = map[string]bool{}
	seen := map[string]int{}
	fenced := false
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			anchors[m[1]] = true
		}
		if strings.HasPrefix(line, "#") {
			if text, ok := headingText(line); ok {
				slug := Slug(text)
				if k := seen[slug]; k > 0 {
					anchors[slug+"-"+itoa(k)] = true
				} else {
					anchors[slug] = true
				}
				seen[slug]++
			}
		}
		if strings.HasPrefix(line, "    ") || strings.HasPrefix(line, "\t") {
			continue // an indented code block
		}
		plain := inlineCode.ReplaceAllString(line, "")
		for _, m := range inlineLink.FindAllStringSubmatch(plain, -1) {
			links = append(links, Link{Line: n, Target: m[1]})
		}
		if m := refLink.FindStringSubmatch(plain); m != nil {
			links = append(links, Link{Line: n, Target: m[1]})
		}
	}
	return links, anchors
}

func headingText(line string) (string, bool) {
	level := 0
	for level < len(line) && line[level] == '#' {
		level++
	}
	if level == 0 || level > 6 || level == len(line) || line[level] != ' ' {
		return "", false
	}
	return strings.TrimSpace(strings.TrimRight(strings.TrimSpace(line[level:]), "#")), true
}

// Slug is GitHub's anchor for a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces made '-'.
func Slug(heading string) string {
	heading = inlineLinkText(heading)
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// inlineLinkText keeps a link's text in a heading: [text](url) is text.
func inlineLinkText(s string) string {
	return regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`).ReplaceAllString(s, "$1")
}

// External reports whether a target leaves the repository.
func External(target string) bool {
	for _, p := range []string{"http://", "https://", "mailto:", "ftp://"} {
		if strings.HasPrefix(target, p) {
			return true
		}
	}
	return false
}

func itoa(n int) string {
	const digits = "0123456789"
	if n < 10 {
		return digits[n : n+1]
	}
	return itoa(n/10) + digits[n%10:n%10+1]
}
