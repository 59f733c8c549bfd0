package main

// What a new operator meets first, with no daemon, no device-mapper and
// no credentials: every message names what is wrong and what to do.

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// runApp runs the command line args (without the binary name) and returns
// what it printed and the error main would print.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.RunContext(context.Background(), append([]string{binName}, args...))
	return out.String(), err
}

// emptyConfig writes a config whose sockets are in a fresh directory, so
// no daemon answers.
func emptyConfig(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.toml")
	toml := "root_dir = \"" + dir + "\"\nadmin_address = \"" + filepath.Join(dir, "admin.sock") + "\"\n"
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func wantErr(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one saying %q", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q lacks %q", err, p)
		}
	}
}

// TestGlobalFlagAfterCommand: --config works after the command name too.
func TestGlobalFlagAfterCommand(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.toml")
	for _, args := range [][]string{
		{"--config", missing, "images"},
		{"images", "--config", missing},
		{"gc", "--dry-run", "--config", missing},
	} {
		_, err := runApp(t, args...)
		wantErr(t, err, missing)
	}
	cfg := emptyConfig(t)
	_, err := runApp(t, "images", "--config", cfg)
	wantErr(t, err, "daemon is not running", filepath.Dir(cfg))
}

// TestUnknownCommand: an unknown command is an error naming it, not cli's
// "No help topic" with exit status 3.
func TestUnknownCommand(t *testing.T) {
	_, err := runApp(t, "bogus")
	wantErr(t, err, `unknown command "bogus"`, "flyio-image-manager help")
	if ec, ok := err.(cli.ExitCoder); ok {
		t.Errorf("exit code %d from cli, want main's 1", ec.ExitCode())
	}
}

// TestNegativeNumbersRefused: flags that count or bound refuse negative
// values before doing anything.
func TestNegativeNumbersRefused(t *testing.T) {
	cfg := emptyConfig(t)
	tarball := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(tarball, nil, 0o600)
	_, err := runApp(t, "--config", cfg, "validate", "--max-entries", "-5", tarball)
	wantErr(t, err, "--max-entries -5: want a positive number")
	_, err = runApp(t, "--config", cfg, "validate", "--max-file-size", "-1GiB", tarball)
	wantErr(t, err, `--max-file-size: invalid size "-1GiB"`)
	_, err = runApp(t, "--config", cfg, "gc", "--dry-run", "--min-age", "-5m")
	wantErr(t, err, `--min-age: invalid duration "-5m": negative`)
}

// TestMinAgeTakesWhatConfigTakes: gc --min-age reads durations as the
// config does, seconds included (it used to take only Go durations).
func TestMinAgeTakesWhatConfigTakes(t *testing.T) {
	cfg := emptyConfig(t)
	for _, v := range []string{"300", "0.5", "5m", "1h30m"} {
		_, err := runApp(t, "--config", cfg, "gc", "--dry-run", "--min-age", v)
		if err != nil && strings.Contains(err.Error(), "min-age") {
			t.Errorf("--min-age %s refused: %v", v, err)
		}
	}
	_, err := runApp(t, "--config", cfg, "gc", "--dry-run", "--min-age", "5x")
	wantErr(t, err, `--min-age: invalid duration "5x": want a number of seconds or a duration`)
}

// TestSizeFlagsTakeWhatConfigTakes: one codec for flags and config.
func TestSizeFlagsTakeWhatConfigTakes(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.toml")
	os.WriteFile(cfg, []byte("[extract]\nmax_file_size = \"1PiB\"\n"), 0o600)
	tarball := filepath.Join(t.TempDir(), "x.tar")
	os.WriteFile(tarball, make([]byte, 1024), 0o600) // an empty tar: two zero blocks
	for _, args := range [][]string{
		{"--config", cfg, "validate", tarball},
		{"--config", cfg, "validate", "--max-file-size", "1PiB", "--max-total-size", "1.5 TiB", tarball},
	} {
		out, err := runApp(t, args...)
		if err != nil || !strings.Contains(out, "ok: 0 entries, 1 KiB uncompressed") {
			t.Errorf("%q: %q, %v", args, out, err)
		}
	}
}

// TestValidateNotATar: a text file is "not a tar archive".
func TestValidateNotATar(t *testing.T) {
	txt := filepath.Join(t.TempDir(), "notatar.txt")
	os.WriteFile(txt, []byte("hello\n"), 0o600)
	_, err := runApp(t, "--config", emptyConfig(t), "validate", txt)
	wantErr(t, err, "not a tar archive")
	if strings.Contains(err.Error(), "truncated") {
		t.Errorf("%q still says truncated", err)
	}
}

// TestProcessImageBadKeyRefusedLocally: a hostile key is refused before
// the daemon is asked (none runs here).
func TestProcessImageBadKeyRefusedLocally(t *testing.T) {
	_, err := runApp(t, "--config", emptyConfig(t), "process-image", "--s3-key", "../x")
	wantErr(t, err, "path traversal", "../x")
	if strings.Contains(err.Error(), "not running") {
		t.Errorf("%q: asked the daemon first", err)
	}
}

// TestHelpText: one default per flag, and every command has a description
// or a usage line that explains it.
func TestHelpText(t *testing.T) {
	out, err := runApp(t, "validate", "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Count(l, "(default:") > 1 {
			t.Errorf("two defaults: %q", l)
		}
	}
	if !strings.Contains(out, "(default: [extract] max_entries)") {
		t.Errorf("validate --help does not say where --max-entries defaults from:\n%s", out)
	}
	for _, cmd := range newApp().Commands {
		if cmd.Description == "" && cmd.Name != "version" {
			t.Errorf("command %s has no description", cmd.Name)
		}
	}
}

// TestMakeHelp: `make help` lists the targets the Makefile's header names.
func TestMakeHelp(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make")
	}
	out, err := exec.Command("make", "-s", "-C", repoRoot, "help").CombinedOutput()
	if err != nil {
		t.Fatalf("make help: %v\n%s", err, out)
	}
	for _, target := range []string{"demo", "test", "unit", "lint", "build", "install", "bench", "help"} {
		if !strings.Contains(string(out), "make "+target) {
			t.Errorf("make help does not list %s:\n%s", target, out)
		}
	}
}

// TestOtherUsageErrors: the rest of the CLI's own checks name the bad
// thing and what is wanted, without errdefs' kind text tacked on.
func TestOtherUsageErrors(t *testing.T) {
	cfg := emptyConfig(t)
	_, err := runApp(t, "--config", cfg, "queue-status", "--queue", "x")
	wantErr(t, err, `unknown queue "x" (--queue): want downloads or unpacks`)
	if strings.HasSuffix(err.Error(), "invalid argument") {
		t.Errorf("%q ends in errdefs' kind", err)
	}
	_, err = runApp(t, "--config", cfg, "validate")
	wantErr(t, err, "validate takes one archive", "got 0 arguments")
	_, err = runApp(t, "--config", cfg, "push-layers", "docker.io/library/alpine:3.20")
	wantErr(t, err, "layer_prefix is empty", "set it")
}
