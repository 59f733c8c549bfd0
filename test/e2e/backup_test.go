package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
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
	e.Ctr("run", "--snapshotter", "flyio", ref, "kept1", "/bin/sh", "-c", "cat /data/kept 2>/dev/null; echo kept > /data/kept; sync")

	backup := filepath.Join(e.Dir, "metadata.backup")
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
	e.StopDaemon()
	offline := filepath.Join(e.Dir, "metadata.offline")
	if out, err := e.flyio("backup", "--output", offline); err != nil || !strings.Contains(out, "with the daemon stopped") {
		t.Errorf("backup with the daemon stopped: %v\n%s", err, out)
	}
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	db := service.MetadataPath(e.Cfg)
	if err := os.Rename(db, db+".before-restore"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartDaemon("daemon.log")
	e.WaitDaemon()

	// Before any new container: containerd removes a --rm container's
	// snapshot from us only at its next garbage collection, and gc with
	// --min-age 0s would list it meanwhile.
	if rep := e.gcReport("--dry-run"); len(rep.Items) != 0 {
		t.Errorf("gc --dry-run after the restore lists %+v", rep.Items)
	}
	if out := e.Ctr("tasks", "start", "kept1"); !strings.Contains(out, "kept") {
		t.Errorf("kept1 after the restore printed %q, want its file", out)
	}
	if out := e.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "new1", "/bin/echo", "ok"); !strings.Contains(out, "ok") {
		t.Errorf("new container after the restore printed %q", out)
	}
}

// readySpares polls the daemon until it keeps n ready spare devices (none
// being made, so a backup catches no spare half-made) and returns them.
func (e *env) readySpares(n int) []uint32 {
	e.T.Helper()
	var ids []uint32
	deadline := time.Now().Add(60 * time.Second)
	for {
		tree, err := admin.NewClient(e.Cfg.AdminAddress).Snapshots(context.Background())
		ids = nil
		busy := false
		for _, d := range tree.Devices {
			if d.Role == string(metadata.RoleSpare) {
				if d.State == string(metadata.DeviceReady) {
					ids = append(ids, d.ID)
				} else {
					busy = true
				}
			}
		}
		if err == nil && !busy && len(ids) == n {
			slices.Sort(ids)
			return ids
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("waiting for %d ready spares: have %v (err %v)", n, ids, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// snapshotDevice returns the thin id of our snapshot named name.
func (e *env) snapshotDevice(name string) uint32 {
	e.T.Helper()
	tree, err := admin.NewClient(e.Cfg.AdminAddress).Snapshots(context.Background())
	if err != nil {
		e.T.Fatal(err)
	}
	var walk func([]*admin.SnapshotNode) uint32
	walk = func(ns []*admin.SnapshotNode) uint32 {
		for _, n := range ns {
			if n.Name == name {
				return n.DeviceID
			}
			if id := walk(n.Children); id != 0 {
				return id
			}
		}
		return 0
	}
	id := walk(tree.Roots)
	if id == 0 {
		e.T.Fatalf("no snapshot %q in the daemon's tree", name)
	}
	return id
}

// TestBackupRestoreSpares checks that a spare the backup listed, claimed
// by a snapshot after the backup, is never handed out again once the
// backup is restored: the copy leaves spares out, gc lists them (and the
// spares made since) as devices without a record, and a new parentless
// Prepare gets another device.
func TestBackupRestoreSpares(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t, withSpares(2))
	spares := e.readySpares(2)

	backup := filepath.Join(e.Dir, "metadata.backup")
	out, err := e.flyio("backup", "--output", backup)
	t.Logf("backup:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, fmt.Sprintf("left out 2 spare device record(s) (thin ids %v)", spares)) {
		t.Errorf("backup output does not name the spares %v:\n%s", spares, out)
	}

	// After the backup a parentless Prepare claims a spare.
	e.Ctr("snapshots", "--snapshotter", "flyio", "prepare", "post1")
	post1 := e.snapshotDevice("post1")
	if !slices.Contains(spares, post1) {
		t.Fatalf("post1 got device %d, not one of the spares %v", post1, spares)
	}

	// The daemon refills its spares: those devices are made after the
	// backup too.
	made := e.readySpares(2)

	e.StopDaemon()
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(service.MetadataPath(e.Cfg), b, 0o600); err != nil {
		t.Fatal(err)
	}
	e.StartDaemon("daemon.log")
	e.WaitDaemon()

	rep := e.gcReport("--dry-run")
	var unknown []uint32
	for _, it := range rep.Items {
		if it.Kind != gc.KindUnknownDevice {
			t.Errorf("gc --dry-run after the restore lists %+v", it)
			continue
		}
		unknown = append(unknown, it.DeviceID)
	}
	want := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(spares), made...))))
	slices.Sort(unknown)
	if !slices.Equal(unknown, want) {
		t.Errorf("gc lists devices without a record %v, want the left-out spares %v and the spares made since %v", unknown, spares, made)
	}

	e.readySpares(2)
	e.Ctr("snapshots", "--snapshotter", "flyio", "prepare", "post2")
	if post2 := e.snapshotDevice("post2"); slices.Contains(spares, post2) {
		t.Errorf("post2 was given device %d, one of the spares the backup listed %v", post2, spares)
	}
}
