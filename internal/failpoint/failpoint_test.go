package failpoint

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestParse(t *testing.T) {
	if m := parse(""); m != nil {
		t.Errorf("parse(\"\") = %v, want nil (Hit must cost a nil check when unset)", m)
	}
	m := parse(" prepare/after-reserve, ,import/after-commit")
	if len(m) != 2 || !m[PrepareAfterReserve] || !m[ImportAfterCommit] {
		t.Errorf("parse of a comma list = %v", m)
	}
}

func TestHitUnarmedIsNoop(t *testing.T) {
	old := armed
	defer func() { armed = old }()
	armed = nil
	for _, n := range All {
		Hit(n)
	}
	armed = map[string]bool{ImportAfterCommit: true}
	Hit(PrepareAfterReserve) // armed, but another name
}

// TestHitKills re-runs the test binary with a failpoint armed and checks
// that it dies of SIGKILL at once, saying which point it hit.
func TestHitKills(t *testing.T) {
	if os.Getenv("FAILPOINT_CHILD") == "1" {
		Hit(CommitBeforeRename)
		os.Stdout.WriteString("survived\n")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHitKills$")
	cmd.Env = append(os.Environ(), "FAILPOINT_CHILD=1", EnvVar+"=bogus,"+CommitBeforeRename)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: %v\n%s", err, out)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Errorf("child exit: %v, want killed by SIGKILL", ws)
	}
	for _, want := range []string{"failpoint commit/before-rename hit", `unknown failpoint "bogus"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("child output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "survived") {
		t.Errorf("child ran on after the failpoint:\n%s", out)
	}
}

// TestEveryPointIsPlaced checks points.go against the code: All lists
// every constant, and each constant is hit exactly once in snapshotter/
// and importer/, so the crash matrix covers what the code does.
func TestEveryPointIsPlaced(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "points.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	consts := map[string]string{}
	for _, d := range f.Decls {
		gd, ok := d.(*ast.GenDecl)
		if !ok || gd.Tok != token.CONST {
			continue
		}
		for _, sp := range gd.Specs {
			vs := sp.(*ast.ValueSpec)
			for i, n := range vs.Names {
				v, _ := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				consts[n.Name] = v
			}
		}
	}
	var values []string
	for _, v := range consts {
		values = append(values, v)
	}
	slices.Sort(values)
	all := slices.Clone(All)
	slices.Sort(all)
	if !slices.Equal(values, all) {
		t.Errorf("All = %v\nconstants = %v", all, values)
	}
	if len(All) < 20 {
		t.Errorf("only %d failpoints", len(All))
	}

	hit := regexp.MustCompile(`failpoint\.Hit\(failpoint\.(\w+)\)`)
	count := map[string]int{}
	for _, dir := range []string{"../../snapshotter", "../../importer"} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range hit.FindAllStringSubmatch(string(b), -1) {
				if _, ok := consts[m[1]]; !ok {
					t.Errorf("%s hits failpoint.%s, which points.go does not define", path, m[1])
				}
				count[m[1]]++
			}
		}
	}
	for name := range consts {
		if count[name] != 1 {
			t.Errorf("failpoint.%s (%q) is hit %d times in snapshotter/ and importer/, want once", name, consts[name], count[name])
		}
	}
}
