package main

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/metadata"
)

// backupEnv is a config with root_dir and admin_address in a temporary
// directory, and a metadata database holding one image.
func backupEnv(t *testing.T) (dir, cfgPath, sock string) {
	dir = t.TempDir()
	cfgPath = filepath.Join(dir, "config.toml")
	sock = filepath.Join(dir, "admin.sock")
	root := filepath.Join(dir, "root")
	if err := os.WriteFile(cfgPath, []byte("root_dir = \""+root+"\"\nadmin_address = \""+sock+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := metadata.Open(filepath.Join(root, "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *metadata.Tx) error {
		if err := tx.PutDevice(&metadata.Device{ID: 7, State: metadata.DeviceReady, Role: metadata.RoleSpare}); err != nil {
			return err
		}
		return tx.PutImage(&metadata.Image{ID: "img-1"})
	}); err != nil {
		t.Fatal(err)
	}
	return dir, cfgPath, sock
}

func runBackup(t *testing.T, cfgPath string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	app := newApp()
	app.Writer = &out
	err := app.Run(append([]string{"flyio-image-manager", "--config", cfgPath, "backup"}, args...))
	return out.String(), err
}

func checkBackupHolds(t *testing.T, path, image string) {
	t.Helper()
	s, err := metadata.Open(path, metadata.Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the backup: %v", err)
	}
	defer s.Close()
	if err := s.View(func(tx *metadata.Tx) error { _, err := tx.Image(image); return err }); err != nil {
		t.Errorf("backup %s: %v", path, err)
	}
	s.View(func(tx *metadata.Tx) error {
		if _, err := tx.Device(7); err == nil {
			t.Errorf("backup %s still records spare device 7", path)
		}
		return nil
	})
}

// TestBackupOffline backs up with no daemon answering: the command opens
// the database read-only itself.
func TestBackupOffline(t *testing.T) {
	dir, cfgPath, _ := backupEnv(t)
	out := filepath.Join(dir, "meta.backup")
	msg, err := runBackup(t, cfgPath, "--output", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "wrote "+out) || !strings.Contains(msg, "with the daemon stopped") || !strings.Contains(msg, "To restore") ||
		!strings.Contains(msg, "left out 1 spare device record(s) (thin ids [7])") {
		t.Errorf("output:\n%s", msg)
	}
	checkBackupHolds(t, out, "img-1")
	if left, _ := filepath.Glob(filepath.Join(dir, ".meta.backup.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left behind: %v", left)
	}

	// An existing file is kept unless --force.
	if _, err := runBackup(t, cfgPath, "--output", out); err == nil || !strings.Contains(err.Error(), out+" already exists") {
		t.Errorf("second backup without --force: %v", err)
	}
	if _, err := runBackup(t, cfgPath, "--output", out, "--force"); err != nil {
		t.Errorf("backup --force: %v", err)
	}
	checkBackupHolds(t, out, "img-1")
}

// TestBackupFromDaemon takes the copy from what answers on the admin
// socket, and leaves no FILE when that copy is cut short.
func TestBackupFromDaemon(t *testing.T) {
	dir, cfgPath, sock := backupEnv(t)
	s, err := metadata.Open(filepath.Join(dir, "root", "metadata.db"), metadata.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var db bytes.Buffer
	if _, err := s.Backup(&db); err != nil {
		t.Fatal(err)
	}
	s.Close()
	short := false
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/backup" {
			http.NotFound(w, r)
			return
		}
		if short {
			w.Header().Set("Content-Length", "999999999")
		}
		w.Write(db.Bytes())
	})}
	go srv.Serve(l)
	defer srv.Close()

	out := filepath.Join(dir, "from-daemon.db")
	msg, err := runBackup(t, cfgPath, "--output", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, "from the running daemon") {
		t.Errorf("output:\n%s", msg)
	}
	checkBackupHolds(t, out, "img-1")

	short = true
	cut := filepath.Join(dir, "cut.db")
	if _, err := runBackup(t, cfgPath, "--output", cut); err == nil {
		t.Errorf("a copy cut short was accepted")
	}
	if _, err := os.Stat(cut); !os.IsNotExist(err) {
		t.Errorf("%s after a failed backup: %v", cut, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".cut.db.tmp*")); len(left) > 0 {
		t.Errorf("temporary files left after a failed backup: %v", left)
	}
}

// TestBackupPlantedSymlinks plants symlinks where a backup into a shared
// directory could be tricked: at the FILE.tmp name older versions wrote
// through (following the link and then renaming the link over FILE), and
// at FILE itself. Neither link is followed or installed, and the file they
// point to is unchanged.
func TestBackupPlantedSymlinks(t *testing.T) {
	dir, cfgPath, _ := backupEnv(t)
	victim := filepath.Join(dir, "victim")
	const content = "not yours to overwrite\n"
	if err := os.WriteFile(victim, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	spool := filepath.Join(dir, "spool")
	if err := os.Mkdir(spool, 0o1777); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(spool, "meta.backup")
	if err := os.Symlink(victim, out+".tmp"); err != nil {
		t.Fatal(err)
	}
	if _, err := runBackup(t, cfgPath, "--output", out); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(out); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s is not a regular file of mode 0600: %v, %v", out, fi, err)
	}
	checkBackupHolds(t, out, "img-1")
	if link, err := os.Readlink(out + ".tmp"); err != nil || link != victim {
		t.Errorf("the planted %s.tmp -> %s was touched: %q, %v", out, victim, link, err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != content {
		t.Errorf("the symlink's target was written: %.60q, %v", b, err)
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 2 {
		t.Errorf("%s holds %d entries, want the copy and the planted link: %v", spool, len(ents), ents)
	}

	// A symlink at FILE is refused, even with --force.
	os.Remove(out)
	if err := os.Symlink(victim, out); err != nil {
		t.Fatal(err)
	}
	if _, err := runBackup(t, cfgPath, "--output", out, "--force"); err == nil || !strings.Contains(err.Error(), "is a symbolic link") {
		t.Errorf("backup onto a symlink: %v", err)
	}
	if link, err := os.Readlink(out); err != nil || link != victim {
		t.Errorf("the planted %s -> %s was touched: %q, %v", out, victim, link, err)
	}
	if b, err := os.ReadFile(victim); err != nil || string(b) != content {
		t.Errorf("the symlink's target was written: %.60q, %v", b, err)
	}
}
