package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

// TestGCRemovesDevices removes a container and the image and checks that
// containerd's garbage collection reached the snapshotter: no snapshots
// left, no active thin devices, only the (inactive) template device in our
// metadata, and the pool's used blocks went down.
func TestGCRemovesDevices(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t)
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	e.Ctr("run", "--snapshotter", "flyio", ref, "gc1", "/bin/sh", "-c", "echo data > /data/new && sync")
	e.logTree()
	before := e.status()
	t.Logf("status with image and container:\n%s", before)
	spares := e.Cfg.Snapshotter.SpareDevices
	if n := len(activeThins(t, e.Cfg.Pool.Name)); n != 1+spares {
		t.Errorf("%d active thin devices with one container, want 1 + %d spares (committed layers stay inactive): %v", n, spares, activeThins(t, e.Cfg.Pool.Name))
	}

	e.Ctr("containers", "rm", "gc1")
	e.Ctr("images", "rm", "--sync", ref)

	// --sync waits for the GC; poll anyway in case the snapshot removal
	// is still finishing.
	deadline := time.Now().Add(60 * time.Second)
	var out string
	for {
		out = e.Ctr("snapshots", "--snapshotter", "flyio", "ls")
		if countLines(out) == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if countLines(out) != 1 {
		t.Fatalf("flyio snapshots left 60s after removing everything:\n%s", out)
	}
	e.logTree()
	if a := activeThins(t, e.Cfg.Pool.Name); len(a) != spares {
		t.Errorf("active thin devices left besides %d spares: %v", spares, a)
	}
	after := e.status()
	t.Logf("status after GC:\n%s", after)
	if b, a := usedBlocks(t, before), usedBlocks(t, after); a >= b {
		t.Errorf("pool data blocks used: %d before removal, %d after; deleting the thin devices freed nothing", b, a)
	}

	// Our own record: with the daemon stopped, the metadata must hold no
	// snapshot and no device but the template's and the spares.
	e.StopServices()
	store, err := metadata.Open(service.MetadataPath(e.Cfg), metadata.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.View(func(tx *metadata.Tx) error {
		if err := tx.Snapshots(func(key string, s *metadata.Snapshot, err error) error {
			t.Errorf("snapshot %q still in metadata (%v)", key, err)
			return nil
		}); err != nil {
			return err
		}
		return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
			if err != nil || (d.Role != metadata.RoleTemplate && d.Role != metadata.RoleSpare) {
				t.Errorf("device %d still in metadata: %+v (%v)", id, d, err)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func splitLines(s string) []string { return strings.Split(strings.TrimRight(s, "\n"), "\n") }
