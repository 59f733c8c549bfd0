package daemon

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// withUmask runs the test with the given umask: 0 is the worst case, in
// which bind(2) alone makes a socket anyone can connect to.
func withUmask(t *testing.T, mask int) {
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// TestListenNeverReachable checks the socket at the moment bind(2)
// created it: only its owner can reach it then (it sits in a directory of
// mode 0700, path does not name it yet), and once listen returns it is at
// path with its mode, with nothing left beside it.
func TestListenNeverReachable(t *testing.T) {
	withUmask(t, 0)
	for _, mode := range []os.FileMode{0o600, 0o660} {
		dir := filepath.Join(t.TempDir(), "run")
		path := filepath.Join(dir, "admin.sock")
		bound := ""
		testHookBound = func(b string) {
			bound = b
			if b == path {
				t.Errorf("the socket was bound at %s itself, before it has its mode", path)
			}
			fi, err := os.Lstat(b)
			if err != nil {
				t.Fatalf("the socket just bound: %v", err)
			}
			if fi.Mode().Perm()&^mode == 0 {
				return
			}
			// More open than it will be: only a private directory may hide it.
			d := filepath.Dir(b)
			di, err := os.Stat(d)
			if err != nil {
				t.Fatal(err)
			}
			if d == dir || di.Mode().Perm() != 0o700 {
				t.Errorf("the socket was bound with mode %v in %s (mode %v): others could connect before it got mode %v",
					fi.Mode().Perm(), d, di.Mode().Perm(), mode)
			}
		}
		l, err := listen(path, mode)
		testHookBound = nil
		if err != nil {
			t.Fatal(err)
		}
		if bound == "" {
			t.Fatal("listen never bound a socket")
		}
		fi, err := os.Lstat(path)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, %v; want a socket of mode %v", path, fi.Mode(), err, mode)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("%s holds %v, want only the socket", dir, ents)
		}
		if a := l.Addr().String(); a != path {
			t.Errorf("Addr() = %s, want %s", a, path)
		}
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatalf("connecting to %s: %v", path, err)
		}
		c.Close()
		l.Close()
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s after Close: %v", path, err)
		}
	}
}

// TestListenStale replaces a socket left by a dead daemon, and refuses
// anything else at the socket path without following or removing it.
func TestListenStale(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "snapshotter.sock")

	// A socket nothing accepts on any more.
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	l, err := listen(path, 0o660)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}

	// A socket something answers on.
	if _, err := listen(path, 0o660); err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Errorf("over a live socket: %v", err)
	}
	l.Close()

	victim := filepath.Join(dir, "victim")
	if err := os.WriteFile(victim, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A regular file (a mistyped address naming a real file).
	if err := os.WriteFile(path, []byte("keep me too"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen(path, 0o660); err == nil || !strings.Contains(err.Error(), "a regular file is there, not a socket") {
		t.Errorf("over a regular file: %v", err)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "keep me too" {
		t.Errorf("the regular file at the socket path: %q, %v", b, err)
	}
	os.Remove(path)

	// A planted symlink, to a file and to a live socket elsewhere.
	other := filepath.Join(dir, "other.sock")
	ol, err := net.Listen("unix", other)
	if err != nil {
		t.Fatal(err)
	}
	defer ol.Close()
	for _, target := range []string{victim, other} {
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if _, err := listen(path, 0o660); err == nil || !strings.Contains(err.Error(), "a symlink to "+target+" is there") {
			t.Errorf("over a symlink to %s: %v", target, err)
		}
		if got, err := os.Readlink(path); err != nil || got != target {
			t.Errorf("the planted symlink: %q, %v", got, err)
		}
		if _, err := os.Lstat(target); err != nil {
			t.Errorf("the symlink's target: %v", err)
		}
		os.Remove(path)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%s holds %v, want only victim and other.sock", dir, ents)
	}
}

// TestListenNeverReplacesWhatWasPlanted: the check that the socket path
// is free (or holds a stale socket) and the rename that installs the
// socket are two steps; a file put at the path between them (here, once
// the socket is bound) is kept and listen fails, where rename(2)
// replaced it. A stale socket is replaced only if it is the one checked.
func TestListenNeverReplacesWhatWasPlanted(t *testing.T) {
	for _, stale := range []bool{false, true} {
		dir := t.TempDir()
		path := filepath.Join(dir, "admin.sock")
		if stale {
			old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			old.SetUnlinkOnClose(false)
			old.Close()
		}
		testHookBound = func(string) {
			os.Remove(path)
			if err := os.WriteFile(path, []byte("planted"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		l, err := listen(path, 0o600)
		testHookBound = nil
		if err == nil {
			l.Close()
			t.Errorf("stale %v: listen replaced a file planted at %s", stale, path)
		}
		if b, rerr := os.ReadFile(path); rerr != nil || string(b) != "planted" {
			t.Errorf("stale %v: the planted file: %q, %v (listen: %v)", stale, b, rerr, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("stale %v: %s holds %v, want only the planted file", stale, dir, ents)
		}
	}
}
