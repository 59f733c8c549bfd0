package layering

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// docPath is the document that states the rules, relative to the module
// root. The test reads the fenced block "```layering" in it, so the
// document and the rule it enforces cannot drift apart.
const docPath = "docs/ARCHITECTURE.md"

// allowed lists the imports that break the rules today and are being
// fixed on other branches of issue 14 right now. Each entry is one
// import "from -> to" with the reason it is tolerated. An entry that no
// longer occurs fails the test ("stale"), so the list empties itself:
// whoever merges the fix deletes the entry.
//
// NOT an import rule, so not listed: "daemon holds domain logic" (the
// pool-full guard, delete-image, the inventory). The daemon may import
// everything below it; moving that logic out is checked by review.
var allowed = []allowance{}

type allowance struct{ from, to, why string }

// rule is one line of the doc's block: packages matching pattern may
// import the module packages matching any of may.
type rule struct {
	pattern string
	may     []string // patterns; "*" is any package of the module
	except  []string // patterns excluded from may (for "*")
	line    int
}

// pkg is what the test needs of `go list -json`: the package and its
// non-test imports.
type pkg struct {
	ImportPath string
	Imports    []string
}

// parseRules reads the first "```layering" fenced block of doc. Each
// line is
//
//	PATTERN: MAY MAY ... [-EXCEPT ...]
//
// where patterns are package paths relative to the module ("dmpool",
// "internal/..." for a subtree, "*" for any package), "-" alone means
// nothing, and # starts a comment.
func parseRules(doc string) ([]rule, error) {
	sc := bufio.NewScanner(strings.NewReader(doc))
	in, found := false, false
	var rules []rule
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if !in {
			if l == "```layering" && !found {
				in, found = true, true
			}
			continue
		}
		if l == "```" {
			in = false
			break
		}
		if i := strings.Index(l, "#"); i >= 0 {
			l = strings.TrimSpace(l[:i])
		}
		if l == "" {
			continue
		}
		pat, rest, ok := strings.Cut(l, ":")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want \"PACKAGE: IMPORTS\", got %q", docPath, n, l)
		}
		r := rule{pattern: strings.TrimSpace(pat), line: n}
		for _, f := range strings.Fields(rest) {
			switch {
			case f == "-":
			case strings.HasPrefix(f, "-"):
				r.except = append(r.except, f[1:])
			default:
				r.may = append(r.may, f)
			}
		}
		rules = append(rules, r)
	}
	if !found {
		return nil, fmt.Errorf("%s has no ```layering block", docPath)
	}
	if in {
		return nil, fmt.Errorf("%s: the ```layering block is not closed", docPath)
	}
	if len(rules) == 0 {
		return nil, fmt.Errorf("%s: the ```layering block is empty", docPath)
	}
	return rules, nil
}

// match says whether package p (relative to the module) matches pattern.
func match(pattern, p string) bool {
	if pattern == "*" {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return p == base || strings.HasPrefix(p, base+"/")
	}
	return p == pattern
}

// specificity orders patterns so that the most specific rule of a
// package wins: an exact path beats a subtree, a longer subtree a
// shorter one, and "*" comes last.
func specificity(pattern string) int {
	if pattern == "*" {
		return 0
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return 1 + 2*len(base)
	}
	return 2 + 2*len(pattern)
}

// ruleFor returns the most specific rule matching p, or nil.
func ruleFor(rules []rule, p string) *rule {
	var best *rule
	for i := range rules {
		r := &rules[i]
		if match(r.pattern, p) && (best == nil || specificity(r.pattern) > specificity(best.pattern)) {
			best = r
		}
	}
	return best
}

func (r *rule) allows(p string) bool {
	for _, e := range r.except {
		if match(e, p) {
			return false
		}
	}
	for _, m := range r.may {
		if match(m, p) {
			return true
		}
	}
	return false
}

// check returns every violation of rules in pkgs (paths relative to
// module), less those allow lists, plus every allow entry that no
// longer occurs.
func check(module string, rules []rule, pkgs []pkg, allow []allowance) []string {
	var bad []string
	used := map[allowance]bool{}
	rel := func(p string) (string, bool) {
		if p == module {
			return ".", true
		}
		r, ok := strings.CutPrefix(p, module+"/")
		return r, ok
	}
	for _, p := range pkgs {
		from, ok := rel(p.ImportPath)
		if !ok {
			continue
		}
		r := ruleFor(rules, from)
		if r == nil {
			bad = append(bad, fmt.Sprintf("%s: no rule in %s's ```layering block says what it may import; add one", from, docPath))
			continue
		}
		for _, imp := range p.Imports {
			to, ok := rel(imp)
			if !ok || r.allows(to) {
				continue
			}
			if a, ok := find(allow, from, to); ok {
				used[a] = true
				continue
			}
			bad = append(bad, fmt.Sprintf("%s imports %s: not allowed by %s:%d (%q)", from, to, docPath, r.line, r.pattern))
		}
	}
	for _, a := range allow {
		if !used[a] {
			bad = append(bad, fmt.Sprintf("allow-list entry %s -> %s (%s) no longer occurs: delete it from internal/layering", a.from, a.to, a.why))
		}
	}
	sort.Strings(bad)
	return bad
}

func find(allow []allowance, from, to string) (allowance, bool) {
	for _, a := range allow {
		if a.from == from && a.to == to {
			return a, true
		}
	}
	return allowance{}, false
}

// moduleRoot is the directory of go.mod above this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// listPackages runs `go list -json ./...` in root: non-test imports only
// (Imports; TestImports and XTestImports are not read, a test may reach
// across layers to check them).
func listPackages(t *testing.T, root string) (module string, pkgs []pkg) {
	t.Helper()
	out, err := runGo(root, "list", "-m")
	if err != nil {
		t.Fatal(err)
	}
	module = strings.TrimSpace(string(out))
	out, err = runGo(root, "list", "-json=ImportPath,Imports", "./...")
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	if len(pkgs) == 0 {
		t.Fatal("go list found no packages")
	}
	return module, pkgs
}

func runGo(dir string, args ...string) ([]byte, error) {
	cmd := exec.Command(goTool(), args...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func readRules(t *testing.T, root string) []rule {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(root, docPath))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := parseRules(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	return rules
}

// TestLayering is the check itself: the module's import graph against
// the rules of docs/ARCHITECTURE.md.
func TestLayering(t *testing.T) {
	root := moduleRoot(t)
	rules := readRules(t, root)
	module, pkgs := listPackages(t, root)
	for _, v := range check(module, rules, pkgs, allowed) {
		t.Error(v)
	}
}

// TestLayeringAllowListIsExplained keeps the allow-list honest: every
// entry names a reason, and is needed against the doc's rules (an entry
// the rules already allow would hide nothing and never go stale).
func TestLayeringAllowListIsExplained(t *testing.T) {
	rules := readRules(t, moduleRoot(t))
	for _, a := range allowed {
		if strings.TrimSpace(a.why) == "" {
			t.Errorf("allow-list entry %s -> %s has no reason", a.from, a.to)
		}
		if r := ruleFor(rules, a.from); r != nil && r.allows(a.to) {
			t.Errorf("allow-list entry %s -> %s is allowed by the rules anyway: delete it", a.from, a.to)
		}
	}
}

// TestCheckCatchesViolations proves the checker on a synthetic graph:
// a forbidden import, a package no rule covers, a subtree rule, an
// except, the most specific rule winning, an allowed import and a stale
// allow entry.
func TestCheckCatchesViolations(t *testing.T) {
	rules, err := parseRules("intro\n```layering\n" +
		"internal/...: -            # leaves\n" +
		"config: internal/...\n" +
		"dmpool: internal/...\n" +
		"dmpool/thinmeta: dmpool internal/...\n" +
		"cmd/...: * -test/...\n" +
		"test/...: *\n" +
		"```\n" +
		"```layering\nignored: *\n```\n")
	if err != nil {
		t.Fatal(err)
	}
	const m = "example.com/mod"
	graph := []pkg{
		{m + "/internal/units", nil},
		{m + "/internal/loopdev", []string{m + "/dmpool"}}, // a leaf importing the module
		{m + "/config", []string{m + "/internal/units", m + "/dmpool", "fmt", "github.com/x/y"}},
		{m + "/dmpool", []string{m + "/internal/loopdev"}},
		{m + "/dmpool/thinmeta", []string{m + "/dmpool", m + "/config"}}, // the specific rule wins over none
		{m + "/cmd/tool", []string{m + "/config", m + "/test/e2e"}},
		{m + "/test/e2e", []string{m + "/cmd/tool", m + "/dmpool"}},
		{m + "/gc", []string{m + "/dmpool"}}, // no rule
		{"other.org/dep", []string{m + "/dmpool"}},
	}
	allow := []allowance{
		{"config", "dmpool", "being fixed"},
		{"dmpool", "config", "fixed already"},
	}
	got := check(m, rules, graph, allow)
	want := []string{
		`allow-list entry dmpool -> config (fixed already) no longer occurs: delete it from internal/layering`,
		`cmd/tool imports test/e2e: not allowed by docs/ARCHITECTURE.md:7 ("cmd/...")`,
		`dmpool/thinmeta imports config: not allowed by docs/ARCHITECTURE.md:6 ("dmpool/thinmeta")`,
		"gc: no rule in docs/ARCHITECTURE.md's ```layering block says what it may import; add one",
		`internal/loopdev imports dmpool: not allowed by docs/ARCHITECTURE.md:3 ("internal/...")`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("violations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Without the allow-list, config -> dmpool is reported.
	got = check(m, rules, graph, nil)
	if !contains(got, `config imports dmpool: not allowed by docs/ARCHITECTURE.md:4 ("config")`) {
		t.Fatalf("config -> dmpool not reported without the allow-list: %q", got)
	}
}

func TestParseRulesErrors(t *testing.T) {
	for _, doc := range []string{
		"no block here",
		"```layering\nconfig: internal/...\n",   // not closed
		"```layering\n```\n",                    // empty
		"```layering\nconfig internal/...\n```", // no colon
	} {
		if _, err := parseRules(doc); err == nil {
			t.Errorf("parseRules(%q) succeeded", doc)
		}
	}
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
