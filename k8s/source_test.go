package k8s

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The gcnats source the manifests must agree with. The tests parse it
// rather than import package main, so this module takes on none of the
// sidecar's dependencies and the sidecar none of Kubernetes'.
const (
	settingsFile = "../settings.go"
	metricsFile  = "../metrics.go"
)

var (
	settingsOnce sync.Once
	settingsSet  map[string]bool // true: the value is a file to read (the env tag's "file" option)
	settingsErr  string
)

// settingsEnv returns the variable names in the env tags of the Settings
// struct in settings.go; a name maps to true when gcnats reads the file the
// variable names (a secret's _FILE variant).
func settingsEnv(t *testing.T) map[string]bool {
	t.Helper()
	settingsOnce.Do(func() {
		f, err := parser.ParseFile(token.NewFileSet(), settingsFile, nil, parser.SkipObjectResolution)
		if err != nil {
			settingsErr = err.Error()
			return
		}
		settingsSet = map[string]bool{}
		ast.Inspect(f, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok || ts.Name.Name != "Settings" {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return false
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				tag, err := strconv.Unquote(field.Tag.Value)
				if err != nil {
					continue
				}
				name, opts, _ := strings.Cut(reflect.StructTag(tag).Get("env"), ",")
				if name != "" {
					settingsSet[name] = slices.Contains(strings.Split(opts, ","), "file")
				}
			}
			return false
		})
		if len(settingsSet) == 0 {
			settingsErr = "no env tags on a Settings struct in " + settingsFile
		}
	})
	if settingsErr != "" {
		t.Fatal(settingsErr)
	}
	return settingsSet
}

func TestSettingsParsed(t *testing.T) {
	set := settingsEnv(t)
	// A few every deployment relies on: if these vanish, the parse broke,
	// not the manifests.
	for _, name := range []string{"GENESYSCLOUD_REGION", "NATS_URL", "GCNATS_STORE_DIR", "GCNATS_ROUTES_FILE", "GCNATS_SHUTDOWN_TIMEOUT"} {
		if file, ok := set[name]; !ok || file {
			t.Errorf("%s not found in %s as a plain setting", name, settingsFile)
		}
	}
	for _, name := range []string{"GENESYSCLOUD_OAUTHCLIENT_ID_FILE", "GENESYSCLOUD_OAUTHCLIENT_SECRET_FILE"} {
		if !set[name] {
			t.Errorf("%s not found in %s as a file setting", name, settingsFile)
		}
	}
}

// metric is one Prometheus metric gcnats exports.
type metric struct {
	histogram bool
	labels    []string
}

// gcnatsMetrics finds the metrics in metrics.go: the Name of each
// prometheus.*Opts literal passed to a prometheus.New* constructor, with
// the label names passed beside it, and the name of each prometheus.NewDesc.
func gcnatsMetrics(t *testing.T) map[string]metric {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), metricsFile, nil, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	metrics := map[string]metric{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || !isIdent(sel.X, "prometheus") || !strings.HasPrefix(sel.Sel.Name, "New") {
			return true
		}
		var name string
		var labels []string
		switch sel.Sel.Name {
		case "NewDesc":
			name = stringLit(call.Args[0])
			if len(call.Args) > 2 {
				labels = stringList(call.Args[2])
			}
		default:
			opts, ok := call.Args[0].(*ast.CompositeLit)
			if !ok {
				return true
			}
			for _, e := range opts.Elts {
				if kv, ok := e.(*ast.KeyValueExpr); ok && isIdent(kv.Key, "Name") {
					name = stringLit(kv.Value)
				}
			}
			if len(call.Args) > 1 {
				labels = stringList(call.Args[1])
			}
		}
		if strings.HasPrefix(name, "gcnats_") {
			metrics[name] = metric{histogram: strings.Contains(sel.Sel.Name, "Histogram"), labels: labels}
		}
		return true
	})
	if len(metrics) == 0 {
		t.Fatalf("no gcnats_ metrics found in %s", metricsFile)
	}
	return metrics
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func stringLit(e ast.Expr) string {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return ""
	}
	s, err := strconv.Unquote(lit.Value)
	if err != nil {
		return ""
	}
	return s
}

func stringList(e ast.Expr) []string {
	cl, ok := e.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	var out []string
	for _, el := range cl.Elts {
		if s := stringLit(el); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// targetLabels are added by Prometheus' scrape (the annotation-driven
// kubernetes-pods job), not by gcnats.
var targetLabels = []string{"namespace", "pod", "instance", "job"}

var (
	metricRef = regexp.MustCompile(`\bgcnats_[a-zA-Z0-9_]+`)
	byClause  = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// dashboardQueries returns every "expr" and variable query in the
// dashboard, by panel title.
func dashboardQueries(t *testing.T, dash map[string]any) map[string][]string {
	t.Helper()
	queries := map[string][]string{}
	var panels func([]any)
	panels = func(list []any) {
		for _, p := range list {
			panel, _ := p.(map[string]any)
			title, _ := panel["title"].(string)
			if ds, ok := panel["datasource"].(map[string]any); ok && ds["uid"] != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %v, want uid ${DS_PROMETHEUS}", title, ds)
			}
			targets, _ := panel["targets"].([]any)
			for _, tg := range targets {
				target, _ := tg.(map[string]any)
				if ds, ok := target["datasource"].(map[string]any); !ok || ds["uid"] != "${DS_PROMETHEUS}" {
					t.Errorf("panel %q: target datasource %v, want uid ${DS_PROMETHEUS}", title, target["datasource"])
				}
				if expr, _ := target["expr"].(string); expr != "" {
					queries[title] = append(queries[title], expr)
				}
			}
			if nested, ok := panel["panels"].([]any); ok {
				panels(nested)
			}
		}
	}
	list, _ := dash["panels"].([]any)
	panels(list)
	templating, _ := dash["templating"].(map[string]any)
	vars, _ := templating["list"].([]any)
	for _, v := range vars {
		variable, _ := v.(map[string]any)
		if q, ok := variable["definition"].(string); ok {
			queries["variable "+variable["name"].(string)] = append(queries["variable "+variable["name"].(string)], q)
		}
	}
	return queries
}

func TestGrafanaDashboard(t *testing.T) {
	data, err := os.ReadFile("grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	inputs, _ := dash["__inputs"].([]any)
	if !slices.ContainsFunc(inputs, func(in any) bool {
		m, _ := in.(map[string]any)
		return m["name"] == "DS_PROMETHEUS" && m["type"] == "datasource" && m["pluginId"] == "prometheus"
	}) {
		t.Error("no DS_PROMETHEUS datasource input")
	}

	metrics := gcnatsMetrics(t)
	used := map[string]bool{}
	queries := dashboardQueries(t, dash)
	if len(queries) == 0 {
		t.Fatal("the dashboard has no queries")
	}
	for title, exprs := range queries {
		for _, expr := range exprs {
			var labels []string
			for _, ref := range metricRef.FindAllString(expr, -1) {
				name, m, ok := ref, metric{}, false
				if m, ok = metrics[name]; !ok {
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						if base, cut := strings.CutSuffix(ref, suffix); cut && metrics[base].histogram {
							name, m, ok = base, metrics[base], true
							if suffix == "_bucket" {
								m.labels = append(slices.Clone(m.labels), "le")
							}
						}
					}
				}
				if !ok {
					t.Errorf("panel %q: %s is not a metric in %s: %s", title, ref, metricsFile, expr)
					continue
				}
				used[name] = true
				labels = append(labels, m.labels...)
			}
			// Aggregations group by labels the metrics have or Prometheus adds.
			for _, by := range byClause.FindAllStringSubmatch(expr, -1) {
				for l := range strings.SplitSeq(by[1], ",") {
					l = strings.TrimSpace(l)
					if !slices.Contains(labels, l) && !slices.Contains(targetLabels, l) {
						t.Errorf("panel %q: groups by %q, which its metrics do not have: %s", title, l, expr)
					}
				}
			}
		}
	}
	for name := range metrics {
		if !used[name] {
			t.Errorf("metric %s has no panel", name)
		}
	}
}
