package e2e

import (
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestImportAndRun imports a Go-built image whose layers hold a whiteout,
// an opaque directory, a hardlink and a setuid file, runs it with runc on
// our snapshots and checks that the unpacked view is exactly the image's.
// Then it checks that what one container writes stays in its own snapshot.
func TestImportAndRun(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t)
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	e.logTree()

	got := e.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "check", "/bin/sh", "-c", ociarchive.CheckScript)
	if got != ociarchive.CheckWant {
		t.Errorf("container view of the image:\n%s\nwant:\n%s", got, ociarchive.CheckWant)
	}

	// The writer is kept (no --rm) while the reader runs, so its snapshot
	// still exists when the second container is made from the image.
	out := e.Ctr("run", "--snapshotter", "flyio", ref, "writer", "/bin/sh", "-c",
		"echo written > /written.txt && echo more >> /hello.txt && sync && cat /written.txt")
	if strings.TrimSpace(out) != "written" {
		t.Errorf("writer printed %q, want \"written\"", out)
	}
	e.logTree()
	out = e.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "reader", "/bin/sh", "-c",
		"test -e /written.txt && echo present || echo absent; cat /hello.txt")
	if want := "absent\nhello from a dm-thin snapshot\n"; out != want {
		t.Errorf("second container sees the first one's writes:\n%s\nwant:\n%s", out, want)
	}
	e.Ctr("containers", "rm", "writer")
	t.Logf("flyio-image-manager status:\n%s", e.status())
}
