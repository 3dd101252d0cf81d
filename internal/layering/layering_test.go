// Package layering holds one test: the import rules between clawd's
// packages (the tailscale way: narrow packages, rules checked by a test).
// A new import that breaks a rule is a design change: change the rule here,
// in the same commit, and say why.
package layering

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/clawd-dev/clawd/"

// allowed lists, for each package, the project packages its non-test code
// may import. A name ending in "/" stands for every package below it
// ("internal/": every internal package); an exact name wins over a prefix.
var allowed = map[string][]string{
	"internal/":             {},                                               // plumbing: imports nothing of clawd
	"bpf":                   {},                                               // programs and their loaders only
	"audit":                 {"internal/"},                                    // the sink knows no decision logic
	"audit/otlp":            {"audit", "internal/atomicfile"},                 // OTLP export of audit lines (the OpenTelemetry SDK): lines in, records out
	"policy":                {"internal/"},                                    // pure decisions
	"policy/suggest":        {"audit", "policy", "internal/"},                 // audit lines in, a proposed policy out
	"secrets":               {"internal/"},                                    // the store knows no proxy
	"approval":              {"audit", "policy", "internal/"},                 // the core knows no proxy, no daemon, no platform
	"approval/":             {"approval", "internal/"},                        // one package per channel (and the API, summarisers): the core's types only, never each other
	"approval/approvaltest": {"approval", "audit", "policy"},                  // shared test helpers (fake clock, recording channel)
	"approval/channels":     {"approval", "approval/", "policy", "internal/"}, // the registry: builds channels by type from clawd.yaml
	"proxy/ca":              {"internal/"},
	"proxy/dns":             {"audit", "policy", "internal/"},
	"proxy/usage":           {"policy", "internal/"},                                                            // LLM usage: meter and budget ledger
	"proxy":                 {"approval", "audit", "policy", "secrets", "proxy/ca", "proxy/usage", "internal/"}, // knows no daemon, no YAML loading, no platform
	"daemon/nsenter":        {},
	"daemon/procid":         {"policy", "internal/"}, // which program a PID runs: /proc only, policy.Program the result (internal/progtext writes its command line)
	"daemon/enforce":        {"bpf", "daemon/nsenter", "internal/"},
	"daemon/runtime":        {"policy", "internal/"},
	"daemon/admission":      {"proxy/ca"}, // the Kubernetes webhook: env and CA paths only, no daemon state
	"daemon":                {"approval", "approval/", "audit", "audit/", "bpf", "daemon/", "fleet", "internal/", "policy", "proxy", "proxy/", "secrets"},
	"cmd/":                  {"approval", "approval/", "daemon", "policy", "policy/suggest", "secrets", "internal/", "audit"},
	"fleet":                 {"approval", "audit", "internal/"}, // the shared PostgreSQL store: implements approval's store, knows no daemon or proxy
	"scripts/":              {},
}

func TestImportRules(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if strings.HasPrefix(d.Name(), ".") || rel == "e2e" || d.Name() == "testdata" || d.Name() == "node_modules" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		pkg := filepath.ToSlash(filepath.Dir(rel))
		rules, ok := rulesFor(pkg)
		if !ok {
			t.Errorf("%s: package %s has no import rule; add one to internal/layering", rel, pkg)
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if !strings.HasPrefix(p, module) {
				continue
			}
			dep := strings.TrimPrefix(p, module)
			if dep == pkg {
				continue
			}
			if !permitted(rules, dep) {
				t.Errorf("%s imports %s: package %s may import only %v", rel, dep, pkg, rules)
			}
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 20 {
		t.Fatalf("checked only %d files: is the walk rooted at the module?", checked)
	}
}

func rulesFor(pkg string) ([]string, bool) {
	if r, ok := allowed[pkg]; ok {
		return r, true
	}
	best := ""
	for p := range allowed {
		if strings.HasSuffix(p, "/") && strings.HasPrefix(pkg, p) && len(p) > len(best) {
			best = p
		}
	}
	r, ok := allowed[best]
	return r, ok && best != ""
}

func permitted(rules []string, dep string) bool {
	for _, r := range rules {
		if dep == r || strings.HasSuffix(r, "/") && strings.HasPrefix(dep, r) {
			return true
		}
	}
	return false
}
