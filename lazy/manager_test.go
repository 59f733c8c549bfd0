package lazy_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/lazy"
)

// The prefetch completes the cache; OnSwitch gets the file device over
// the cache file, and the served device is closed after it.
func TestPrefetchSwitches(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 5)
	dir := t.TempDir()
	m := openManager(t, a.config(dir, st))
	if err := m.Create(context.Background(), "base-5", img.man); err != nil {
		t.Fatal(err)
	}
	servedPath, _ := m.DevicePath("base-5")
	newPath := <-a.switched
	waitFor(t, "local", func() bool { return statusOf(t, m, "base-5").State == lazy.StateLocal })
	if p, _ := m.DevicePath("base-5"); p != newPath || p == servedPath {
		t.Errorf("DevicePath = %s after the switch to %s", p, newPath)
	}
	want := []string{
		"served " + servedPath,
		"file " + newPath + " " + filepath.Join(dir, "base-5", "cache"),
		"switch base-5 " + newPath,
		"close " + servedPath,
	}
	if ev := a.eventList(); !slices.Equal(ev, want) {
		t.Errorf("events %q, want %q", ev, want)
	}
	s := statusOf(t, m, "base-5")
	if s.ChunksPresent != len(img.man.Chunks) || s.BytesPresent != img.man.Bytes() || s.Prefetched+s.OnDemand != int64(len(img.man.Chunks)) {
		t.Errorf("status %+v", s)
	}
	got, err := os.ReadFile(filepath.Join(dir, "base-5", "cache"))
	if err != nil {
		t.Fatal(err)
	}
	sameBytes(t, got, img.data)
}

// An OnSwitch error keeps the served device, closes the file device and
// is retried.
func TestSwitchErrorRetries(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 6)
	var fails atomic.Int32
	a.switchFn = func(name, path string) error {
		if fails.Add(1) <= 2 {
			return errors.New("reload failed")
		}
		return nil
	}
	m := openManager(t, a.config(t.TempDir(), st))
	if err := m.Create(context.Background(), "base-6", img.man); err != nil {
		t.Fatal(err)
	}
	servedPath, _ := m.DevicePath("base-6")
	newPath := <-a.switched
	waitFor(t, "local", func() bool { return statusOf(t, m, "base-6").State == lazy.StateLocal })
	ev := a.eventList()
	closeAt := slices.Index(ev, "close "+servedPath)
	if closeAt < 0 || closeAt < slices.Index(ev, "switch base-6 "+newPath) {
		t.Fatalf("served device closed before the switch succeeded: %q", ev)
	}
	if n := strings.Count(strings.Join(ev, "\n"), "switch failed"); n != 2 || a.fileCount() != 3 {
		t.Errorf("%d failed switches, %d file devices: %q", n, a.fileCount(), ev)
	}
	for _, e := range ev {
		if strings.HasPrefix(e, "switch failed ") && !slices.Contains(ev, "close "+strings.TrimPrefix(e, "switch failed ")) {
			t.Errorf("file device of a failed switch left attached: %q", ev)
		}
	}
	if s := statusOf(t, m, "base-6"); !strings.Contains(s.LastError, "reload failed") {
		t.Errorf("status %+v", s)
	}
}

// A restart resumes a partial origin from its bitmap, and attaches a
// complete one as a file device without the store.
func TestRestart(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 7)
	dir := t.TempDir()
	bad := blockimage.ChunkKey(prefix, img.man.Chunks[2].Digest)
	st.setFail(func(key string) error {
		if key == bad {
			return errors.New("not today")
		}
		return nil
	})
	m, err := lazy.Open(context.Background(), a.config(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Create(context.Background(), "base-7", img.man); err != nil {
		t.Fatal(err)
	}
	n := len(img.man.Chunks)
	// The fetch error is counted before the prefetch pass ends and marks
	// the origin failed, so wait for the state, not just the chunks.
	waitFor(t, "all but one chunk, and the pass failed", func() bool {
		s := statusOf(t, m, "base-7")
		return s.ChunksPresent == n-1 && s.State == lazy.StateFailed
	})
	if s := statusOf(t, m, "base-7"); !strings.Contains(s.LastError, "not today") {
		t.Errorf("status with a chunk failing %+v", s)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	st.setFail(nil)
	before := st.totalGets()
	badBefore := st.getsOf(bad)

	m = openManager(t, a.config(dir, st))
	if s := statusOf(t, m, "base-7"); s.ChunksPresent != n-1 {
		t.Errorf("reopened: %+v", s)
	}
	<-a.switched
	waitFor(t, "local", func() bool { return statusOf(t, m, "base-7").State == lazy.StateLocal })
	if got := st.totalGets() - before; got != 1 || st.getsOf(bad) != badBefore+1 {
		t.Errorf("resume fetched %d objects, want only the missing chunk", got)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}

	st.setFail(func(string) error { return errors.New("the store must not be used") })
	before = st.totalGets()
	files := a.fileCount()
	m = openManager(t, a.config(dir, st))
	s := statusOf(t, m, "base-7")
	p, err := m.DevicePath("base-7")
	if s.State != lazy.StateLocal || err != nil || a.fileCount() != files+1 || !strings.HasPrefix(p, "/dev/loop") {
		t.Errorf("complete origin reopened: %+v, %s, %v", s, p, err)
	}
	if st.totalGets() != before {
		t.Errorf("the store was read")
	}
}

// Hostile directory contents are reported as broken, are not fatal and
// are left in place.
func TestHostileDir(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 8)
	dir := t.TempDir()
	m, err := lazy.Open(context.Background(), a.config(dir, st))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"good", "short-bitmap", "bad-manifest", "big-cache"} {
		if err := m.Create(context.Background(), name, img.man); err != nil {
			t.Fatal(err)
		}
	}
	m.Close()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Truncate(filepath.Join(dir, "short-bitmap", "present"), 0))
	must(os.WriteFile(filepath.Join(dir, "bad-manifest", "manifest.json"), []byte(`{"format":"flyio-block-image","version":1,"device_size":-1}`), 0o600))
	must(os.Truncate(filepath.Join(dir, "big-cache", "cache"), 1<<40))
	must(os.Mkdir(filepath.Join(dir, "Bad_Name"), 0o700))
	must(os.Symlink(filepath.Join(dir, "good"), filepath.Join(dir, "link")))
	must(os.WriteFile(filepath.Join(dir, "plainfile"), nil, 0o600))

	m = openManager(t, a.config(dir, st))
	want := map[string]lazy.State{"good": lazy.StateFetching, "short-bitmap": lazy.StateBroken, "bad-manifest": lazy.StateBroken,
		"big-cache": lazy.StateBroken, "Bad_Name": lazy.StateBroken, "link": lazy.StateBroken, "plainfile": lazy.StateBroken}
	for name, state := range want {
		s := statusOf(t, m, name)
		if state == lazy.StateFetching {
			if s.State == lazy.StateBroken {
				t.Errorf("%s: %+v", name, s)
			}
			continue
		}
		if s.State != state || s.LastError == "" {
			t.Errorf("%s: %+v", name, s)
		}
		if _, err := os.Lstat(filepath.Join(dir, name)); err != nil {
			t.Errorf("%s was removed: %v", name, err)
		}
	}
	if _, err := m.DevicePath("short-bitmap"); !errors.Is(err, errdefs.ErrUnavailable) {
		t.Errorf("DevicePath of a broken origin: %v", err)
	}
	if err := m.Create(context.Background(), "short-bitmap", img.man); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Errorf("Create over a broken origin: %v", err)
	}
	if _, err := m.DevicePath("../good"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("DevicePath of a bad name: %v", err)
	}
}

// Create is idempotent for the same image, refuses another and bad names;
// Remove closes and deletes.
func TestCreateRemove(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 9)
	other := publishImage(t, st, 8*MiB, 10, ext(0, MiB))
	dir := t.TempDir()
	m := openManager(t, a.config(dir, st))
	ctx := context.Background()
	if err := m.Create(ctx, "base-9", img.man); err != nil {
		t.Fatal(err)
	}
	p, _ := m.DevicePath("base-9")
	if err := m.Create(ctx, "base-9", img.man); err != nil {
		t.Errorf("Create again: %v", err)
	}
	if err := m.Create(ctx, "base-9", other.man); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Errorf("Create for another image: %v", err)
	}
	for _, bad := range []string{"", "-x", "A", "a/b", "..", strings.Repeat("a", 65)} {
		if err := m.Create(ctx, bad, img.man); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("Create(%q): %v", bad, err)
		}
	}
	if err := m.Remove(ctx, "base-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "base-9")); !os.IsNotExist(err) {
		t.Errorf("directory left: %v", err)
	}
	if d := a.servedDev(p); !d.closed.Load() {
		t.Errorf("served device not closed")
	}
	if _, err := m.DevicePath("base-9"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("DevicePath after Remove: %v", err)
	}
	if err := m.Remove(ctx, "base-9"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("Remove again: %v", err)
	}
}

// During the switch, DevicePath already names the file device (a table
// made meanwhile must not get the served device, which is about to be
// closed), but the origin is not local until the switch is done.
func TestDuringTheSwitch(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 7)
	m := openManager(t, a.config(t.TempDir(), st))
	type seen struct {
		path  string
		state lazy.State
	}
	inSwitch := make(chan seen, 1)
	a.switchFn = func(name, path string) error {
		p, _ := m.DevicePath(name)
		inSwitch <- seen{p, statusOf(t, m, name).State}
		return nil
	}
	if err := m.Create(context.Background(), "base-7", img.man); err != nil {
		t.Fatal(err)
	}
	newPath := <-a.switched
	got := <-inSwitch
	if got.path != newPath {
		t.Errorf("DevicePath during the switch = %s, want the file device %s", got.path, newPath)
	}
	if got.state == lazy.StateLocal {
		t.Errorf("status during the switch says local")
	}
}
