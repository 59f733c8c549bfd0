package main

// These tests keep the documentation true: every flyio-image-manager
// command line in README.md and docs/*.md must name a command and flags the
// binary has, every `make` target must exist, and every configuration key
// must be described in docs/CONFIG.md. Operators copy lines out of docs;
// a renamed flag that the docs still name is a bug.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"unicode"

	"github.com/urfave/cli/v2"

	"github.com/superfly/flyio-image-manager/config"
)

// repoRoot is where README.md lives, relative to this package.
const repoRoot = "../.."

const binName = "flyio-image-manager"

// docLine is one line of a doc that may hold a command: a line of a fenced
// code block, or an inline code span of prose.
type docLine struct {
	file string
	line int
	text string
}

func (d docLine) String() string { return fmt.Sprintf("%s:%d: %s", d.file, d.line, d.text) }

// docFiles lists README.md and docs/*.md.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append([]string{filepath.Join(repoRoot, "README.md")}, files...)
	sort.Strings(files[1:])
	return files
}

var inlineCode = regexp.MustCompile("`([^`]+)`")

// codeLines returns the lines of fenced code blocks (continuation lines
// ending in a backslash joined) and the inline code spans of the other lines.
// In a block that shows a session ("$ command" lines followed by output),
// only the "$ " lines are commands.
func codeLines(t *testing.T, path string) []docLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(repoRoot, path)
	var out, block []docLine
	inFence := false
	fence := ""
	pending := ""
	pendingLine := 0
	endBlock := func() {
		session := false
		for _, l := range block {
			if strings.HasPrefix(strings.TrimSpace(l.text), "$ ") {
				session = true
			}
		}
		for _, l := range block {
			if !session || strings.HasPrefix(strings.TrimSpace(l.text), "$ ") {
				out = append(out, l)
			}
		}
		block = nil
	}
	for i, l := range strings.Split(string(data), "\n") {
		n := i + 1
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			marker := trimmed[:3]
			if !inFence {
				inFence, fence = true, marker
				continue
			}
			if marker == fence {
				inFence = false
				if pending != "" {
					block = append(block, docLine{rel, pendingLine, pending})
					pending = ""
				}
				endBlock()
				continue
			}
		}
		if !inFence {
			for _, m := range inlineCode.FindAllStringSubmatch(l, -1) {
				out = append(out, docLine{rel, n, m[1]})
			}
			continue
		}
		if pending == "" {
			pendingLine = n
		}
		if strings.HasSuffix(trimmed, "\\") {
			pending += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		block = append(block, docLine{rel, pendingLine, pending + l})
		pending = ""
	}
	endBlock()
	return out
}

// shellStops end a command: what follows is another command, a redirect or
// a comment.
var shellStops = map[string]bool{"|": true, "||": true, "&&": true, ";": true, "&": true, ">": true, ">>": true, "2>": true, "2>&1": true, "<": true, "#": true}

var envAssign = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*=`)

// invocations finds the flyio-image-manager command lines in a doc line:
// the binary in command position (first word, after a prompt, sudo, env
// assignments, ExecStart=, or after a shell separator), by name or path
// (./bin/flyio-image-manager). It returns the words after the binary, up to
// the end of that command.
func invocations(text string) [][]string { return commandLines(text, binName) }

// commandLines finds the command lines of the program bin in text, as
// invocations does for flyio-image-manager.
func commandLines(text, bin string) [][]string {
	words := strings.Fields(text)
	var out [][]string
	cmdPos := true
	for i := 0; i < len(words); i++ {
		w := words[i]
		if strings.HasPrefix(w, "#") {
			break // a comment: what follows is prose
		}
		if shellStops[w] || strings.HasSuffix(w, ";") {
			cmdPos = true
			continue
		}
		if !cmdPos {
			continue
		}
		switch {
		case w == "$" || w == "sudo" || w == "env" || w == "exec" || w == "time" || w == "(":
			continue
		case strings.HasPrefix(w, "-") && i > 0 && (words[i-1] == "sudo" || words[i-1] == "env"):
			continue // sudo -E, env -i
		case envAssign.MatchString(w):
			continue // VAR=value
		}
		w = strings.TrimPrefix(w, "ExecStart=")
		w = strings.TrimPrefix(w, "ExecStartPre=")
		w = strings.TrimPrefix(w, "$(")
		if filepath.Base(w) == bin {
			var args []string
			for _, a := range words[i+1:] {
				if shellStops[a] || strings.HasPrefix(a, "#") {
					break
				}
				end := strings.HasSuffix(a, ";") || strings.HasSuffix(a, ")")
				a = strings.TrimRight(a, ";)")
				args = append(args, a)
				if end {
					break
				}
			}
			out = append(out, args)
		}
		cmdPos = false
	}
	return out
}

// flagNames indexes flags by every name and alias, and says whether each
// takes a value.
func flagNames(flags []cli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	return m
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// checkInvocation returns why args cannot work with app, or "".
//
// urfave/cli v2 parses global flags before the command name and the
// command's own flags after it; newApp gives every command a copy of the
// global flags too, so those also pass after the command.
func checkInvocation(app *cli.App, args []string) string {
	global := flagNames(app.Flags)
	global["help"], global["h"], global["version"], global["v"] = false, false, false, false
	clean := func(a string) string { return strings.Trim(a, "[]\"'") }
	i := 0
	for ; i < len(args); i++ {
		a := clean(args[i])
		if a == "" || a == "..." {
			continue
		}
		if !strings.HasPrefix(a, "-") {
			break
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		takes, ok := global[name]
		if !ok {
			return fmt.Sprintf("global flag %q does not exist (global flags go before the command)", a)
		}
		if takes && !hasValue {
			i++
		}
	}
	if i >= len(args) {
		return "" // the bare binary, or only global flags: prints help
	}
	name := clean(args[i])
	if strings.ContainsAny(name, "<>|{}$") || strings.ToUpper(name) == name || name == "help" || name == "h" {
		return "" // a placeholder such as <command> or COMMAND, or cli's own help
	}
	cmds := app.Commands
	var cmd *cli.Command
	for {
		cmd = findCommand(cmds, name)
		if cmd == nil {
			return fmt.Sprintf("command %q does not exist", name)
		}
		if len(cmd.Subcommands) == 0 || i+1 >= len(args) || strings.HasPrefix(args[i+1], "-") {
			break
		}
		i++
		name, cmds = clean(args[i]), cmd.Subcommands
	}
	own := flagNames(cmd.Flags)
	own["help"], own["h"] = false, false
	for _, raw := range args[i+1:] {
		// Usage lines write alternatives as "--a|--b" inside brackets.
		for _, a := range strings.Split(clean(raw), "|") {
			a = clean(a)
			if !strings.HasPrefix(a, "-") || a == "-" || a == "--" {
				continue
			}
			fname, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
			if _, ok := own[fname]; ok {
				continue
			}
			if _, ok := global[fname]; ok {
				return fmt.Sprintf("%q is a global flag: it must come before the command %q", a, cmd.Name)
			}
			return fmt.Sprintf("command %q has no flag %q", cmd.Name, a)
		}
	}
	return ""
}

// TestDocsCommandsExist checks every flyio-image-manager command line in
// README.md and docs/*.md against the command tree the binary runs.
func TestDocsCommandsExist(t *testing.T) {
	app := newApp()
	checked := 0
	for _, f := range docFiles(t) {
		for _, l := range codeLines(t, f) {
			for _, args := range invocations(l.text) {
				checked++
				if why := checkInvocation(app, args); why != "" {
					t.Errorf("%s:%d: %s\n\t%s", l.file, l.line, why, strings.TrimSpace(l.text))
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d command lines found in the docs: is the parser broken?", checked)
	}
	t.Logf("%d flyio-image-manager command lines checked", checked)
}

// TestDocsCheckerRejects proves the checker fails on what it must catch, so
// a passing TestDocsCommandsExist means something.
func TestDocsCheckerRejects(t *testing.T) {
	app := newApp()
	for _, tc := range []struct {
		line string
		bad  bool
	}{
		{"flyio-image-manager status", false},
		{"$ sudo ./bin/flyio-image-manager --config /etc/x.toml gc --dry-run --min-age 0s", false},
		{"flyio-image-manager gc --dry-run [--json] [--min-age 5m]", false},
		{"ExecStart=/usr/local/bin/flyio-image-manager --config /etc/flyio-image-manager/config.toml daemon", false},
		{"echo flyio-image-manager nosuch", false}, // not in command position
		{"flyio-image-manager nosuch-command", true},
		{"sudo flyio-image-manager gc --no-such-flag", true},
		{"flyio-image-manager --nope status", true},
		{"flyio-image-manager gc --dry-run | flyio-image-manager frobnicate", true},
		{"systemctl restart x   # then flyio-image-manager nosuch", false}, // prose in a comment
	} {
		bad := false
		for _, args := range invocations(tc.line) {
			if checkInvocation(app, args) != "" {
				bad = true
			}
		}
		if bad != tc.bad {
			t.Errorf("%q: rejected=%v, want %v", tc.line, bad, tc.bad)
		}
	}
}

// TestDocsMakeTargetsExist checks that every `make TARGET` in the docs
// names a target of the Makefile or a file it includes.
func TestDocsMakeTargetsExist(t *testing.T) {
	targets := makeTargets(t)
	for _, f := range docFiles(t) {
		for _, l := range codeLines(t, f) {
			for _, args := range commandLines(l.text, "make") {
				for _, a := range args {
					a = strings.Trim(a, "[]")
					if a == "" || strings.HasPrefix(a, "-") || strings.Contains(a, "=") || a == "..." {
						continue // flags, VAR=value
					}
					if !targets[a] {
						t.Errorf("%s:%d: make target %q does not exist in the Makefile\n\t%s", l.file, l.line, a, strings.TrimSpace(l.text))
					}
				}
			}
		}
	}
}

var ruleLine = regexp.MustCompile(`^([A-Za-z0-9_. -]+?)\s*:([^=]|$)`)

func makeTargets(t *testing.T) map[string]bool {
	t.Helper()
	targets := map[string]bool{}
	files := []string{filepath.Join(repoRoot, "Makefile")}
	for len(files) > 0 {
		f := files[0]
		files = files[1:]
		data, err := os.ReadFile(f)
		if err != nil {
			if strings.HasSuffix(f, "Makefile") {
				t.Fatal(err)
			}
			continue // -include of an optional file
		}
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		for sc.Scan() {
			l := sc.Text()
			if inc, ok := strings.CutPrefix(strings.TrimPrefix(l, "-"), "include "); ok {
				for _, p := range strings.Fields(inc) {
					files = append(files, filepath.Join(repoRoot, p))
				}
				continue
			}
			if m := ruleLine.FindStringSubmatch(l); m != nil && !strings.HasPrefix(l, "\t") {
				for _, name := range strings.Fields(m[1]) {
					targets[name] = true
				}
			}
		}
	}
	if len(targets) < 5 {
		t.Fatalf("found only %d make targets: is the parser broken?", len(targets))
	}
	return targets
}

// configKey is a key as written in config.toml: "log_level" or
// "pool.block_size".
type configKey struct{ section, key string }

func (k configKey) String() string {
	if k.section == "" {
		return k.key
	}
	return "[" + k.section + "] " + k.key
}

// exampleKeys parses config.toml.example's key = value lines.
func exampleKeys(t *testing.T) []configKey {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "config.toml.example"))
	if err != nil {
		t.Fatal(err)
	}
	section := ""
	kv := regexp.MustCompile(`^([a-z0-9_]+)\s*=`)
	var keys []configKey
	for _, l := range strings.Split(string(data), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			section = strings.Trim(l, "[]")
			continue
		}
		if m := kv.FindStringSubmatch(l); m != nil {
			keys = append(keys, configKey{section, m[1]})
		}
	}
	return keys
}

// structKeys lists every key the config decoder accepts, from the toml
// tags of config.Config, so a key added to the code but not to the example
// is caught too.
func structKeys() []configKey {
	var keys []configKey
	top := reflect.TypeOf(config.Config{})
	for i := 0; i < top.NumField(); i++ {
		f := top.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" {
			continue
		}
		if f.Type.Kind() == reflect.Struct {
			for j := 0; j < f.Type.NumField(); j++ {
				sub, _, _ := strings.Cut(f.Type.Field(j).Tag.Get("toml"), ",")
				if sub != "" && sub != "-" {
					keys = append(keys, configKey{name, sub})
				}
			}
			continue
		}
		keys = append(keys, configKey{"", name})
	}
	return keys
}

// configSections splits docs/CONFIG.md at its "## " headings; a heading
// naming "[pool]" holds that section's keys, and the heading with "top-level"
// holds the keys outside any section.
func configSections(t *testing.T) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, "docs", "CONFIG.md"))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	current := "\x00"
	heading := regexp.MustCompile(`\[([a-z0-9_]+)\]`)
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "## ") {
			current = "\x00"
			if m := heading.FindStringSubmatch(l); m != nil {
				current = m[1]
			} else if strings.Contains(strings.ToLower(l), "top-level") {
				current = ""
			}
			continue
		}
		sections[current] += l + "\n"
	}
	return sections
}

// TestConfigKeysDocumented checks that every key of config.toml.example
// and of the decoder is described, as `key`, under its section's heading in
// docs/CONFIG.md, and that the example itself has every key.
func TestConfigKeysDocumented(t *testing.T) {
	sections := configSections(t)
	example := exampleKeys(t)
	if len(example) < 30 {
		t.Fatalf("only %d keys parsed from config.toml.example: is the parser broken?", len(example))
	}
	inExample := map[configKey]bool{}
	for _, k := range example {
		inExample[k] = true
	}
	check := func(k configKey, from string) {
		body, ok := sections[k.section]
		if !ok {
			t.Errorf("docs/CONFIG.md has no \"## ...[%s]...\" section for %s (from %s)", k.section, k, from)
			return
		}
		if !strings.Contains(body, "`"+k.key+"`") {
			t.Errorf("docs/CONFIG.md does not describe %s (from %s): want `%s` in its section", k, from, k.key)
		}
	}
	for _, k := range example {
		check(k, "config.toml.example")
	}
	for _, k := range structKeys() {
		check(k, "package config")
		if !inExample[k] {
			t.Errorf("config.toml.example lacks %s, which the config decoder accepts", k)
		}
	}
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// TestDocsLinksResolve checks that every relative link in README.md and
// docs/*.md names a file that exists and, with a #fragment, a heading of
// that file (GitHub's anchor rules), so renaming a doc or a section
// cannot leave a dead link behind.
func TestDocsLinksResolve(t *testing.T) {
	anchors := map[string]map[string]bool{}
	anchorsOf := func(path string) map[string]bool {
		if a, ok := anchors[path]; ok {
			return a
		}
		a := map[string]bool{}
		data, _ := os.ReadFile(path)
		inFence := false
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(strings.TrimSpace(l), "```") {
				inFence = !inFence
			}
			if inFence || !strings.HasPrefix(l, "#") {
				continue
			}
			a[githubAnchor(strings.TrimLeft(l, "# "))] = true
		}
		anchors[path] = a
		return a
	}
	for _, f := range docFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(repoRoot, f)
		for i, l := range strings.Split(string(data), "\n") {
			for _, m := range mdLink.FindAllStringSubmatch(l, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				file, frag, _ := strings.Cut(target, "#")
				path := f
				if file != "" {
					path = filepath.Join(filepath.Dir(f), file)
					if _, err := os.Stat(path); err != nil {
						t.Errorf("%s:%d: link to %s: no such file", rel, i+1, target)
						continue
					}
				}
				if frag != "" && strings.HasSuffix(path, ".md") && !anchorsOf(path)[frag] {
					t.Errorf("%s:%d: link to %s: no heading with anchor #%s", rel, i+1, target, frag)
				}
			}
		}
	}
}

// githubAnchor is the id GitHub gives a heading: lower case, punctuation
// other than '-' and '_' dropped, spaces turned into '-'.
func githubAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestCodeLines pins what the doc parser treats as a command: lines of
// plain blocks, only the "$ " lines of a session block, joined
// continuation lines and inline code spans.
func TestCodeLines(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.md")
	doc := "Run `flyio-image-manager status` first.\n" +
		"```sh\nflyio-image-manager gc \\\n  --dry-run\n```\n" +
		"```\n$ flyio-image-manager version\nflyio-image-manager dev (go1.26)\n```\n"
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range codeLines(t, path) {
		got = append(got, fmt.Sprintf("%d:%s", l.line, strings.Join(strings.Fields(l.text), " ")))
	}
	want := []string{"1:flyio-image-manager status", "3:flyio-image-manager gc --dry-run", "7:$ flyio-image-manager version"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("codeLines = %q, want %q", got, want)
	}
}
