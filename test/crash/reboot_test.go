package crash

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestReboot kills the daemon and containerd, then does what a reboot
// does to the kernel side: every dm table of the pool (thin devices and
// the pool) and its loop devices are gone, and containerd's state
// directory (a tmpfs) is empty. Only the files remain. The daemon must
// re-create the pool from its files and re-activate the active snapshots,
// so a stopped container starts again with what it wrote, and new
// containers start from both images.
func TestReboot(t *testing.T) {
	dmtest.Require(t)
	e := newEnv(t, "")
	base := makeImage(t, "images/reboot-base.tar", "reboot base", 7)
	e.put(base)
	const ociRef = "docker.io/flyio/reboot:1"
	e.startDaemon("")
	e.WaitDaemon()
	e.StartContainerd()
	if _, err := e.processImage(base); err != nil {
		t.Fatal(err)
	}
	e.importOCI(ociRef)
	// A container that outlives its task: its active snapshot must survive
	// the reboot with its content.
	script := "cat /kept.txt 2>/dev/null || echo none; echo kept >> /kept.txt; sync"
	if out := e.Ctr("run", "--snapshotter", "flyio", base.ref(), "keep", "/bin/sh", "-c", script); strings.TrimSpace(out) != "none" {
		t.Fatalf("first run of keep printed %q", out)
	}
	// ctr run (without -d) deletes the task when it exits; the container
	// and its snapshot stay.
	before := activeThins(t, e.Cfg.Pool.Name)
	t.Logf("active thin devices before the reboot: %v", before)

	// Power cut.
	e.Ctrd.Kill()
	e.Daemon.Kill()
	t0 := time.Now()
	e.TearDownPool()
	if err := os.RemoveAll(e.ContainerdState()); err != nil {
		t.Fatal(err)
	}
	if a := activeThins(t, e.Cfg.Pool.Name); len(a) != 0 {
		t.Fatalf("thin devices left after tear-down: %v", a)
	}

	e.startDaemon("")
	e.WaitDaemon()
	t.Logf("daemon up %s after the reboot", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(e.DaemonLog(), "recreated") && !strings.Contains(e.DaemonLog(), "re-created") {
		t.Logf("daemon log does not say the pool was re-created:\n%s", tail(e.DaemonLog(), 20))
	}
	after := activeThins(t, e.Cfg.Pool.Name)
	if strings.Join(after, ",") != strings.Join(before, ",") {
		t.Errorf("active thin devices after the reboot: %v, before: %v", after, before)
	}
	e.StartContainerd()
	out := e.Ctr("tasks", "start", "keep")
	if strings.TrimSpace(out) != "kept" {
		t.Errorf("keep after the reboot printed %q, want \"kept\" (what it wrote before)", out)
	}
	e.CtrErr("tasks", "rm", "keep") // gone already if ctr deleted it
	e.Ctr("containers", "rm", "keep")
	e.checkImage(base, "base-after-reboot")
	if got := e.Ctr("run", "--rm", "--snapshotter", "flyio", ociRef, "oci-after-reboot", "/bin/sh", "-c", ociarchive.CheckScript); got != ociarchive.CheckWant {
		t.Errorf("container of %s after the reboot:\n%s\nwant:\n%s", ociRef, got, ociarchive.CheckWant)
	}
	e.StopDaemon()
	e.checkMeta(0)
}

// activeThins lists the active dm devices of the pool by name.
func activeThins(t *testing.T, pool string) []string {
	t.Helper()
	devs, err := dmpool.ListDevices()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range devs {
		if strings.HasPrefix(d.Name, pool+"-thin-") {
			out = append(out, d.Name)
		}
	}
	return out
}
