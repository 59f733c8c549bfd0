package snapshotter

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestXFSOnDMThin makes the template with mkfs.xfs and checks that every
// snapshot of it mounts (xfs refuses a second mount of the same UUID
// without nouuid) and that a child sees its parent's files.
func TestXFSOnDMThin(t *testing.T) {
	dmtest.Require(t)
	if _, err := exec.LookPath("mkfs.xfs"); err != nil {
		t.Fatalf("mkfs.xfs: %v (test/tools.sh installs xfsprogs)", err)
	}
	ctx := context.Background()
	sn, cleanup, err := realSnapshotterWith(ctx, t.TempDir(), Config{BaseSize: 320 << 20, FSType: "xfs"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	withMount := func(m []mount.Mount, fn func(dir string)) {
		t.Helper()
		if m[0].Type != "xfs" || !slices.Contains(m[0].Options, "nouuid") {
			t.Fatalf("xfs mount without nouuid: %+v", m)
		}
		dir := t.TempDir()
		if err := mount.All(m, dir); err != nil {
			t.Fatal(err)
		}
		defer mount.UnmountAll(dir, 0)
		fn(dir)
	}
	m, err := sn.Prepare(ctx, "base-active", "")
	if err != nil {
		t.Fatal(err)
	}
	withMount(m, func(dir string) {
		if err := os.WriteFile(filepath.Join(dir, "hello"), []byte("xfs\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	if err := sn.Commit(ctx, "base", "base-active"); err != nil {
		t.Fatal(err)
	}
	// Two children mounted at once: same filesystem UUID on both.
	a, err := sn.Prepare(ctx, "a", "base")
	if err != nil {
		t.Fatal(err)
	}
	b, err := sn.Prepare(ctx, "b", "base")
	if err != nil {
		t.Fatal(err)
	}
	withMount(a, func(da string) {
		withMount(b, func(db string) {
			for _, d := range []string{da, db} {
				if got, err := os.ReadFile(filepath.Join(d, "hello")); err != nil || string(got) != "xfs\n" {
					t.Errorf("child of the xfs base reads %q, %v", got, err)
				}
			}
		})
	})
	for _, k := range []string{"a", "b", "base"} {
		if err := sn.Remove(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
}
