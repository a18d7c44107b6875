package doclinks

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// root is the repository, two levels up from this package.
const root = "../.."

// TestLinksResolve checks every relative link of README.md and docs/: the
// file or directory exists, and an #anchor names a heading of its page.
func TestLinksResolve(t *testing.T) {
	pages, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	pages = append([]string{filepath.Join(root, "README.md")}, pages...)
	if len(pages) < 2 {
		t.Fatalf("no pages under docs/")
	}
	anchorsOf := map[string]map[string]bool{}
	anchors := func(page string) map[string]bool {
		if a, ok := anchorsOf[page]; ok {
			return a
		}
		body, err := os.ReadFile(page)
		if err != nil {
			return nil
		}
		_, a := Parse(body)
		anchorsOf[page] = a
		return a
	}
	checked := 0
	for _, page := range pages {
		body, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		links, _ := Parse(body)
		rel, _ := filepath.Rel(root, page)
		for _, l := range links {
			if External(l.Target) {
				continue
			}
			checked++
			path, anchor, _ := strings.Cut(l.Target, "#")
			target := page
			if path != "" {
				target = filepath.Join(filepath.Dir(page), path)
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s:%d: %s: no such file", rel, l.Line, l.Target)
					continue
				}
			}
			if anchor == "" || !strings.HasSuffix(target, ".md") {
				continue
			}
			if !anchors(target)[anchor] {
				t.Errorf("%s:%d: %s: no heading with the anchor #%s", rel, l.Line, l.Target, anchor)
			}
		}
	}
	t.Logf("%d relative links in %d pages resolve", checked, len(pages))
}

func TestSlug(t *testing.T) {
	for heading, want := range map[string]string{
		"Running past one server":                         "running-past-one-server",
		"At the edge: the embedded server as a leaf node": "at-the-edge-the-embedded-server-as-a-leaf-node",
		"The `Nats-Msg-Id` dedup id":                      "the-nats-msg-id-dedup-id",
		"Memory and the duplicate window":                 "memory-and-the-duplicate-window",
		"See [the budget](x.md)":                          "see-the-budget",
	} {
		if got := Slug(heading); got != want {
			t.Errorf("Slug(%q) = %q, want %q", heading, got, want)
		}
	}
}

func TestParseSkipsCode(t *testing.T) {
	page := "# Title\n\n[a](a.md) `[b](b.md)`\n\n```\n[c](c.md)\n```\n    [d](d.md)\n## Title\n"
	links, anchors := Parse([]byte(page))
	if len(links) != 1 || links[0].Target != "a.md" || links[0].Line != 3 {
		t.Fatalf("links %+v", links)
	}
	if !anchors["title"] || !anchors["title-1"] {
		t.Fatalf("anchors %v", anchors)
	}
}
