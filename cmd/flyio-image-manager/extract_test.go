package main

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testArchive is a tar holding etc/ and etc/hostname; cut short, it
// ends in the middle of a second file, after the first was written.
func testArchive(t *testing.T, cut bool) string {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "etc/hostname", Typeflag: tar.TypeReg, Mode: 0o644, Size: 5})
	tw.Write([]byte("host\n"))
	tw.WriteHeader(&tar.Header{Name: "etc/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: 4096})
	tw.Write(make([]byte, 4096))
	tw.Close()
	data := b.Bytes()
	if cut {
		data = data[:3*512+1000]
	}
	p := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runExtractCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "config.toml")
	if err := os.WriteFile(cfg, []byte("root_dir = \"/nonexistent\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	app.ErrWriter = &out
	err := app.Run(append([]string{"flyio-image-manager", "--config", cfg, "extract"}, args...))
	return out.String(), err
}

// entries lists dir, failing the test if it cannot be read.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestExtractDestFailed: an archive that fails part way leaves nothing,
// neither at --dest (new, or an empty directory that keeps its mode) nor
// beside it, and the error says so.
func TestExtractDestFailed(t *testing.T) {
	bad := testArchive(t, true)
	parent := t.TempDir()
	newDest := filepath.Join(parent, "new")
	_, err := runExtractCmd(t, "--dest", newDest, bad)
	if err == nil || !strings.Contains(err.Error(), "nothing was written to "+newDest) {
		t.Errorf("extract of a cut archive into a new directory: %v", err)
	}
	if names := entries(t, parent); len(names) != 0 {
		t.Errorf("left in %s after the failure: %v", parent, names)
	}

	empty := filepath.Join(parent, "empty")
	if err := os.Mkdir(empty, 0o750); err != nil {
		t.Fatal(err)
	}
	os.Chmod(empty, 0o750)
	_, err = runExtractCmd(t, "--dest", empty, bad)
	if err == nil || !strings.Contains(err.Error(), "nothing was written to "+empty) {
		t.Errorf("extract of a cut archive into an empty directory: %v", err)
	}
	if names := entries(t, empty); len(names) != 0 {
		t.Errorf("left in %s after the failure: %v", empty, names)
	}
	if names := entries(t, parent); len(names) != 1 {
		t.Errorf("left in %s after the failure: %v", parent, names)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Mode().Perm() != 0o750 {
		t.Errorf("%s after the failure: %v, %v", empty, fi.Mode(), err)
	}
}

// TestExtractDestGood fills a new --dest and an empty one, which keeps its
// mode, and refuses one that holds something, changing nothing in it.
func TestExtractDestGood(t *testing.T) {
	good := testArchive(t, false)
	parent := t.TempDir()
	newDest := filepath.Join(parent, "new")
	if out, err := runExtractCmd(t, "--dest", newDest, good); err != nil || !strings.Contains(out, "ok: 3 entries") {
		t.Fatalf("extract into a new directory: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(newDest, "etc", "hostname")); err != nil || string(b) != "host\n" {
		t.Errorf("etc/hostname: %q, %v", b, err)
	}
	if fi, err := os.Stat(newDest); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: %v, %v; want mode 0755", newDest, fi.Mode(), err)
	}

	empty := filepath.Join(parent, "empty")
	os.Mkdir(empty, 0o700)
	os.Chmod(empty, 0o751)
	if _, err := runExtractCmd(t, "--dest", empty, good); err != nil {
		t.Fatalf("extract into an empty directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(empty, "etc", "big")); err != nil {
		t.Error(err)
	}
	if fi, err := os.Stat(empty); err != nil || fi.Mode().Perm() != 0o751 {
		t.Errorf("%s: %v, %v; want its mode kept, 0751", empty, fi.Mode(), err)
	}
	if names := entries(t, parent); len(names) != 2 {
		t.Errorf("%s holds %v, want only new and empty", parent, names)
	}

	// Now full: a second extract would replace what is there.
	os.WriteFile(filepath.Join(empty, "etc", "hostname"), []byte("mine\n"), 0o644)
	if _, err := runExtractCmd(t, "--dest", empty, good); err == nil || !strings.Contains(err.Error(), "directory is not empty") {
		t.Errorf("extract into a directory that holds files: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(empty, "etc", "hostname")); string(b) != "mine\n" {
		t.Errorf("etc/hostname of the refused directory: %q", b)
	}
}

// TestExtractLayerInPlace: a layer goes onto what --dest holds; when it
// fails, the message says the directory was changed.
func TestExtractLayerInPlace(t *testing.T) {
	dest := t.TempDir()
	os.WriteFile(filepath.Join(dest, "parent-file"), []byte("x"), 0o644)
	_, err := runExtractCmd(t, "--layer", "--dest", dest, testArchive(t, true))
	if err == nil || !strings.Contains(err.Error(), dest+" was changed in place before the failure") {
		t.Errorf("a cut layer onto a non-empty directory: %v", err)
	}
	if _, err := runExtractCmd(t, "--layer", "--dest", dest, testArchive(t, false)); err != nil {
		t.Errorf("a layer onto a non-empty directory: %v", err)
	}
}

// TestExtractDestMountPoint: a mount point cannot be renamed over, so the
// tree is built in it; a failure empties it again.
func TestExtractDestMountPoint(t *testing.T) {
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "mode=0711"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	os.Mkdir(filepath.Join(mnt, "lost+found"), 0o700)
	_, err := runExtractCmd(t, "--dest", mnt, testArchive(t, true))
	if err == nil || !strings.Contains(err.Error(), "nothing was written to "+mnt) {
		t.Errorf("a cut archive into a mount point: %v", err)
	}
	if names := entries(t, mnt); len(names) != 1 || names[0] != "lost+found" {
		t.Errorf("%s after the failure: %v", mnt, names)
	}
	if _, err := runExtractCmd(t, "--dest", mnt, testArchive(t, false)); err != nil {
		t.Fatalf("into a mount point: %v", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "etc", "hostname")); err != nil {
		t.Error(err)
	}
}
