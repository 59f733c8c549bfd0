// Package systemd holds the systemd unit and containerd drop-in that
// `make install` installs; its test checks what that installs.
package systemd

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is where the Makefile is, two levels up from this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatal(err)
	}
	return root
}

// makeIn runs make in the repository root with args and fails the test
// with make's output on error. The binary is built outside DESTDIR (BIN)
// so neither bin/ nor the staged tree gets anything extra.
func makeIn(t *testing.T, root string, args ...string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	cmd := exec.Command("make", append([]string{"-C", root, "--no-print-directory"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// tree lists every file and directory under dir with its permission bits.
func tree(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	got := map[string]fs.FileMode{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		m := info.Mode().Perm()
		if info.IsDir() {
			m |= fs.ModeDir
		}
		got["/"+rel] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func sameFile(t *testing.T, got, want string) {
	t.Helper()
	g, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g, w) {
		t.Errorf("%s differs from %s", got, want)
	}
}

var execStart = regexp.MustCompile(`(?m)^ExecStart=(\S+)(.*)$`)

func TestSystemdInstall(t *testing.T) {
	root := repoRoot(t)
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "flyio-image-manager")
	makeIn(t, root, "install", "DESTDIR="+dest, "PREFIX=/usr/local", "BIN="+bin)

	dir := fs.ModeDir | 0o755
	want := map[string]fs.FileMode{
		"/usr":                                 dir,
		"/usr/local":                           dir,
		"/usr/local/bin":                       dir,
		"/usr/local/bin/flyio-image-manager":   0o755,
		"/etc":                                 dir,
		"/etc/flyio-image-manager":             dir,
		"/etc/flyio-image-manager/config.toml": 0o600, // may get S3 credentials
		"/etc/flyio-image-manager/config.toml.example": 0o644,
		"/etc/systemd":        dir,
		"/etc/systemd/system": dir,
		"/etc/systemd/system/flyio-image-manager.service":                   0o644,
		"/etc/systemd/system/containerd.service.d":                          dir,
		"/etc/systemd/system/containerd.service.d/flyio-image-manager.conf": 0o644,
	}
	got := tree(t, dest)
	for p, m := range want {
		if g, ok := got[p]; !ok {
			t.Errorf("missing %s", p)
		} else if g != m {
			t.Errorf("%s: mode %v, want %v", p, g, m)
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("unexpected %s", p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// With the default PREFIX the files are the repository's, unchanged.
	unit := filepath.Join(dest, "etc/systemd/system/flyio-image-manager.service")
	sameFile(t, unit, filepath.Join(root, "contrib/systemd/flyio-image-manager.service"))
	sameFile(t, filepath.Join(dest, "etc/systemd/system/containerd.service.d/flyio-image-manager.conf"),
		filepath.Join(root, "contrib/systemd/containerd.service.d/flyio-image-manager.conf"))
	sameFile(t, filepath.Join(dest, "etc/flyio-image-manager/config.toml"), filepath.Join(root, "config.toml.example"))
	sameFile(t, filepath.Join(dest, "etc/flyio-image-manager/config.toml.example"), filepath.Join(root, "config.toml.example"))

	// The unit starts the binary that was installed, and that binary is
	// the Makefile's build (version from git, not the "dev" default).
	b, err := os.ReadFile(unit)
	if err != nil {
		t.Fatal(err)
	}
	m := execStart.FindStringSubmatch(string(b))
	if m == nil || m[1] != "/usr/local/bin/flyio-image-manager" || strings.TrimSpace(m[2]) != "daemon" {
		t.Fatalf("ExecStart line %q, want /usr/local/bin/flyio-image-manager daemon", m)
	}
	installed := filepath.Join(dest, m[1])
	out, err := exec.Command(installed, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s version: %v\n%s", installed, err, out)
	}
	if !strings.HasPrefix(string(out), "flyio-image-manager ") || strings.HasPrefix(string(out), "flyio-image-manager dev ") {
		t.Errorf("%s version printed %q, want the git version the Makefile stamps", installed, out)
	}
	verify(t, string(b), installed)

	// A second install keeps the operator's config.
	cfg := filepath.Join(dest, "etc/flyio-image-manager/config.toml")
	if err := os.WriteFile(cfg, []byte("# mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	makeIn(t, root, "install", "DESTDIR="+dest, "PREFIX=/usr/local", "BIN="+bin)
	if b, _ := os.ReadFile(cfg); string(b) != "# mine\n" {
		t.Errorf("make install overwrote config.toml: %q", b)
	}

	// uninstall removes what install put there except the config (and
	// the directories it may share with other packages).
	makeIn(t, root, "uninstall", "DESTDIR="+dest, "PREFIX=/usr/local")
	for p := range tree(t, dest) {
		if p != "/etc/flyio-image-manager/config.toml" && got[p]&fs.ModeDir == 0 {
			t.Errorf("uninstall left %s", p)
		}
	}
	if _, err := os.Stat(cfg); err != nil {
		t.Errorf("uninstall removed the operator's config: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dest, "etc/systemd/system/containerd.service.d")); err == nil {
		t.Errorf("uninstall left the empty containerd.service.d")
	}
}

// PREFIX moves the binary and the unit's ExecStart with it.
func TestSystemdInstallPrefix(t *testing.T) {
	root := repoRoot(t)
	dest := t.TempDir()
	bin := filepath.Join(t.TempDir(), "flyio-image-manager")
	makeIn(t, root, "install", "DESTDIR="+dest, "PREFIX=/opt/fim", "BIN="+bin)
	b, err := os.ReadFile(filepath.Join(dest, "etc/systemd/system/flyio-image-manager.service"))
	if err != nil {
		t.Fatal(err)
	}
	m := execStart.FindStringSubmatch(string(b))
	if m == nil || m[1] != "/opt/fim/bin/flyio-image-manager" {
		t.Fatalf("ExecStart line %q, want /opt/fim/bin/flyio-image-manager", m)
	}
	if fi, err := os.Stat(filepath.Join(dest, m[1])); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("ExecStart's binary under DESTDIR: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dest, "usr/local")); err == nil {
		t.Error("PREFIX=/opt/fim still installed under /usr/local")
	}
}

// verify runs systemd-analyze verify on the unit, with ExecStart pointed
// at the binary inside DESTDIR (verify checks that it is executable).
func verify(t *testing.T, unit, installed string) {
	t.Helper()
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed; not verifying the unit")
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "flyio-image-manager.service")
	unit = execStart.ReplaceAllString(unit, "ExecStart="+installed+"$2")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(sa, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
		return
	}
	t.Logf("systemd-analyze verify %s: no complaints", path)
}
