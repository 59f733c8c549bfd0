package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/daemon"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestBackupRestore takes a backup from the running daemon, restores it
// (stop the daemon, put the copy at <root_dir>/metadata.db, start) and
// checks that the image and a container made before the backup still run
// and that gc finds nothing out of step. With spare devices off, so that
// every device in the pool is one the copy records.
func TestBackupRestore(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t, withSpares(0))
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	e.ctr("run", "--snapshotter", "flyio", ref, "kept1", "/bin/sh", "-c", "cat /data/kept 2>/dev/null; echo kept > /data/kept; sync")

	backup := filepath.Join(e.dir, "metadata.backup")
	out, err := e.flyio("backup", "--output", backup)
	t.Logf("backup:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "wrote "+backup) || !strings.Contains(out, "from the running daemon") {
		t.Errorf("backup output does not say it came from the daemon:\n%s", out)
	}
	if _, err := os.Stat(backup + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", backup, err)
	}
	if out, err := e.flyio("backup", "--output", backup); err == nil || !strings.Contains(out, backup+" already exists") {
		t.Errorf("backup over an existing file without --force: %v\n%s", err, out)
	}

	// Restore: the daemon stopped, containerd left running.
	e.stopDaemon()
	offline := filepath.Join(e.dir, "metadata.offline")
	if out, err := e.flyio("backup", "--output", offline); err != nil || !strings.Contains(out, "with the daemon stopped") {
		t.Errorf("backup with the daemon stopped: %v\n%s", err, out)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	db := daemon.MetadataPath(e.cfg)
	if err := os.Rename(db, db+".before-restore"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.startDaemon()

	// Before any new container: containerd removes a --rm container's
	// snapshot from us only at its next garbage collection, and gc with
	// --min-age 0s would list it meanwhile.
	if rep := e.gcReport("--dry-run"); len(rep.Items) != 0 {
		t.Errorf("gc --dry-run after the restore lists %+v", rep.Items)
	}
	if out := e.ctr("tasks", "start", "kept1"); !strings.Contains(out, "kept") {
		t.Errorf("kept1 after the restore printed %q, want its file", out)
	}
	if out := e.ctr("run", "--rm", "--snapshotter", "flyio", ref, "new1", "/bin/echo", "ok"); !strings.Contains(out, "ok") {
		t.Errorf("new container after the restore printed %q", out)
	}
}
