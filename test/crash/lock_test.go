package crash

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
)

// TestSecondDaemonRefused starts two daemons on one root_dir: the second
// must fail fast saying the database is locked, and the first must go on
// serving.
func TestSecondDaemonRefused(t *testing.T) {
	dmtest.Require(t)
	e := newEnv(t, "")
	e.startDaemon("")
	e.WaitDaemon()
	out, err := runDaemonOnce(t, e.Bin, e.CfgPath, 30*time.Second)
	if err == nil {
		t.Fatalf("a second daemon on the same root_dir started:\n%s", out)
	}
	if !strings.Contains(out, "database is locked") {
		t.Errorf("second daemon failed (%v) without saying \"database is locked\":\n%s", err, out)
	}
	if e.Daemon.Exited() {
		t.Fatalf("the first daemon died:\n%s", e.DaemonLog())
	}
	for _, sock := range []string{e.Cfg.Address, e.Cfg.AdminAddress} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Errorf("the first daemon's socket %s no longer answers: %v", sock, err)
			continue
		}
		c.Close()
	}
	t.Logf("second daemon: %v\n%s", err, out)
}

// TestLockedDatabaseRefused holds the metadata database open in this
// process (no device-mapper needed) and starts the daemon binary on it.
func TestLockedDatabaseRefused(t *testing.T) {
	bin, cfgPath, root := plainConfig(t)
	st, err := metadata.Open(filepath.Join(root, "metadata.db"), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	out, err := runDaemonOnce(t, bin, cfgPath, 30*time.Second)
	if err == nil || !strings.Contains(out, "database is locked") || !strings.Contains(out, "another flyio-image-manager daemon") {
		t.Errorf("daemon on a locked database: %v, want a failure naming the lock and its likely holder:\n%s", err, out)
	}
}

// TestCorruptDatabaseRefused writes garbage over metadata.db, or over
// the meta pages of a real database, and starts the daemon: it must refuse
// with a message saying how to recover and leave the file as it was.
func TestCorruptDatabaseRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(t *testing.T, path string)
	}{
		{"garbage", func(t *testing.T, path string) {
			b := make([]byte, 64<<10)
			rand.Read(b)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"meta pages", func(t *testing.T, path string) {
			st, err := metadata.Open(path, metadata.Options{})
			if err != nil {
				t.Fatal(err)
			}
			st.Close()
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Both meta pages (page 0 and 1); bbolt's page size is at
			// least 4096.
			junk := bytes.Repeat([]byte{0xa5}, 64)
			for _, off := range []int64{16, 4096 + 16} {
				if _, err := f.WriteAt(junk, off); err != nil {
					t.Fatal(err)
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bin, cfgPath, root := plainConfig(t)
			if err := os.MkdirAll(root, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(root, "metadata.db")
			tc.corrupt(t, path)
			before, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			out, err := runDaemonOnce(t, bin, cfgPath, 30*time.Second)
			if err == nil {
				t.Fatalf("the daemon started on a corrupt database:\n%s", out)
			}
			for _, want := range []string{"corrupt", "will not reset", "mv " + path + " " + path + ".corrupt", "gc --dry-run"} {
				if !strings.Contains(out, want) {
					t.Errorf("message lacks %q:\n%s", want, out)
				}
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Errorf("the daemon changed the corrupt database (%d bytes before, %d after)", len(before), len(after))
			}
			if ents, _ := os.ReadDir(root); len(ents) != 1 {
				t.Errorf("root_dir holds %d entries, want only metadata.db (nothing created, no pool): %v", len(ents), ents)
			}
			t.Logf("%s", strings.TrimSpace(out))
		})
	}
}

// plainConfig writes a configuration whose pool is never reached: these
// tests fail before the pool is opened. It skips without the binary
// unless device-mapper tests are required (the VM).
func plainConfig(t *testing.T) (bin, cfgPath, root string) {
	t.Helper()
	p := os.Getenv("FLYIO_BIN")
	if p == "" {
		p = "../../bin/flyio-image-manager"
	}
	if _, err := os.Stat(p); err != nil && !dmtest.Required() {
		t.Skipf("no flyio-image-manager binary at %s (go build -o bin/flyio-image-manager ./cmd/flyio-image-manager)", p)
	}
	bin = flyioBin(t)
	dir := t.TempDir()
	root = filepath.Join(dir, "root")
	cfgPath = filepath.Join(dir, "flyio.toml")
	writeFile(t, cfgPath, fmt.Sprintf("root_dir = %q\naddress = %q\nadmin_address = %q\n[pool]\nname = \"fim-never-made\"\n",
		root, filepath.Join(dir, "s.sock"), filepath.Join(dir, "a.sock")))
	return bin, cfgPath, root
}

// runDaemonOnce runs `flyio-image-manager daemon` and expects it to exit.
func runDaemonOnce(t *testing.T, bin, cfgPath string, timeout time.Duration) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, "--config", cfgPath, "daemon")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("daemon still running after %s:\n%s", timeout, out.String())
		return "", nil
	}
}
