package crash

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/moby/sys/mountinfo"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	fp "github.com/superfly/flyio-image-manager/internal/failpoint"
)

// mountsOf lists what is mounted from the pool's thin devices, anywhere.
func mountsOf(t *testing.T, pool string) []*mountinfo.Info {
	t.Helper()
	ms, err := mountinfo.GetMounts(func(i *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(i.Source, "/dev/mapper/"+pool+"-"), false
	})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// TestCrashInMounts kills the daemon (kill -9, at a failpoint) while it
// has the template mounted, and in the two steps of a spare's creation.
// The mount must be under root_dir/mounts, not /tmp; after the restart
// nothing of the pool is mounted, the orphaned device is not busy (gc
// --force deletes it, nothing fails) and the next Prepare works.
func TestCrashInMounts(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()

	t.Run("template", func(t *testing.T) {
		e := newEnv(t, "", "spare_devices = 0")
		e.startDaemon(fp.TemplateMounted)
		e.WaitDaemon()
		if _, err := e.sn().Prepare(ctx, "tpl", ""); err == nil {
			t.Fatal("Prepare succeeded; the daemon should have died formatting the template")
		}
		e.waitKilled(fp.TemplateMounted, 120*time.Second)
		left := mountsOf(t, e.Cfg.Pool.Name)
		if len(left) != 1 {
			t.Fatalf("the killed daemon left %d mounts of the pool, want the template's", len(left))
		}
		dir := filepath.Join(e.Cfg.RootDir, "mounts")
		if !strings.HasPrefix(left[0].Mountpoint, dir+"/") {
			t.Errorf("the template was mounted on %s, not under %s", left[0].Mountpoint, dir)
		}
		dev := strings.TrimPrefix(left[0].Source, "/dev/mapper/")
		t.Logf("left mounted by the killed daemon: %s on %s", left[0].Source, left[0].Mountpoint)

		e.startDaemon("")
		e.WaitDaemon()
		if ms := mountsOf(t, e.Cfg.Pool.Name); len(ms) != 0 {
			t.Errorf("after the restart %s is still mounted on %s", ms[0].Source, ms[0].Mountpoint)
		}
		if info, err := dmpool.GetDeviceInfo(dev); err != nil || info.OpenCount != 0 {
			t.Errorf("device %s after the restart: %+v, %v; want not open", dev, info, err)
		}
		if !strings.Contains(e.DaemonLog(), "left mounted by a daemon that died") {
			t.Errorf("the restarted daemon did not report the mount it cleaned up")
		}
		m, err := e.sn().Prepare(ctx, "after", "")
		if err != nil {
			t.Fatalf("Prepare after the restart: %v", err)
		}
		writeVia(t, m, "file", "after")
		if got := readVia(t, m, "file"); got != "after" {
			t.Errorf("read back %q", got)
		}
		if err := e.sn().Remove(ctx, "after"); err != nil {
			t.Fatal(err)
		}
		e.collect(fp.TemplateMounted, []string{string(gc.KindOrphaned)})
		e.StopDaemon()
	})

	t.Run("spare", func(t *testing.T) {
		e := newEnv(t, "", "spare_devices = 1")
		for i, p := range []string{fp.SpareAfterCreateSnap, fp.SpareAfterActivate} {
			// The refill runs at start when no spare is ready (the first
			// start), and after a Prepare claims one: later, claim the
			// spare an earlier start left. A claim is one transaction,
			// done before the refill it triggers dies.
			claim := "claim-" + p
			e.startDaemon(p)
			for deadline := time.Now().Add(60 * time.Second); i > 0 && !e.Daemon.Exited() && time.Now().Before(deadline); {
				if c, err := net.Dial("unix", e.Cfg.Address); err == nil {
					c.Close()
					e.sn().Prepare(ctx, claim, "")
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			e.waitKilled(p, 120*time.Second)
			e.startDaemon("")
			e.WaitDaemon()
			if err := e.sn().Remove(ctx, claim); err != nil && !errdefs.IsNotFound(err) {
				t.Fatal(err)
			}
			m, err := e.sn().Prepare(ctx, "after-"+p, "")
			if err != nil {
				t.Fatalf("Prepare after a crash at %s: %v", p, err)
			}
			writeVia(t, m, "file", p)
			if err := e.sn().Remove(ctx, "after-"+p); err != nil {
				t.Fatal(err)
			}
			e.collect(p, []string{string(gc.KindOrphaned)})
			e.StopDaemon()
			e.checkMeta(0)
		}
	})
}
