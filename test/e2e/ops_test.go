package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/snapshotter"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// fillDevice activates thin id under name, writes n bytes and syncs.
func fillDevice(t *testing.T, pool *dmpool.Pool, name string, id uint32, n int) {
	t.Helper()
	harness.WriteThin(t, pool, name, id, 64<<20, func(f *os.File) error {
		_, err := f.Write(bytes.Repeat([]byte{0xab}, n))
		return err
	})
}

// TestGCPlantedLeftovers plants one leftover of each kind next to a live
// container, checks that gc --dry-run lists exactly those with their
// space, that gc --force removes them, and that the container still runs.
func TestGCPlantedLeftovers(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t)
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	e.Ctr("run", "--snapshotter", "flyio", ref, "live1", "/bin/sh", "-c", "cat /data/kept 2>/dev/null; echo kept > /data/kept; sync")
	if out, _ := e.flyio("gc", "--dry-run", "--min-age", "0s"); !strings.Contains(out, "nothing to clean") {
		t.Fatalf("gc on a clean pool:\n%s", out)
	}

	// Plant with the daemon stopped: our own process holds the metadata.
	e.StopDaemon()
	ctx := context.Background()
	store, err := metadata.Open(service.MetadataPath(e.Cfg), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pool, _, err := service.OpenPool(ctx, e.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	sn, err := snapshotter.New(ctx, pool, store, snapshotter.Config{BaseSize: uint64(e.Cfg.Snapshotter.BaseSize)})
	if err != nil {
		t.Fatal(err)
	}
	// A snapshot containerd never recorded, in its key format.
	const forgotten, ghost = "test/999999/forgotten", "test/999998/ghost"
	if _, err := sn.Prepare(ctx, forgotten, ""); err != nil {
		t.Fatal(err)
	}
	var orphan, ghostID, unknown, quarantined uint32
	if err := store.Update(func(tx *metadata.Tx) (err error) {
		if orphan, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		if quarantined, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		if ghostID, err = tx.AllocateDeviceID(); err != nil {
			return err
		}
		unknown, err = tx.AllocateDeviceID()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []uint32{orphan, unknown, quarantined} {
		if err := pool.CreateThin(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	orphanName := fmt.Sprintf("%s-thin-%d", pool.Name(), orphan)
	quarantinedName := fmt.Sprintf("%s-thin-%d", pool.Name(), quarantined)
	for name, id := range map[string]uint32{orphanName: orphan, quarantinedName: quarantined} {
		fillDevice(t, pool, name, id, 8<<20)
		if err := pool.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// The unknown device stays active under a name of its own.
	fillDevice(t, pool, "planted-unknown", unknown, 4<<20)
	now := time.Now().UTC()
	if err := store.Update(func(tx *metadata.Tx) error {
		if err := tx.PutDevice(&metadata.Device{ID: orphan, Name: orphanName, Size: 64 << 20, State: metadata.DeviceOrphaned,
			Role: metadata.RoleSnapshot, Owner: "planted", Error: "planted by TestGCPlantedLeftovers"}); err != nil {
			return err
		}
		// Set aside by a reconcile that could not check it: its data
		// may be recoverable, so only an explicit flag removes it.
		if err := tx.PutDevice(&metadata.Device{ID: quarantined, Name: quarantinedName, Size: 64 << 20, State: metadata.DeviceQuarantined,
			Role: metadata.RoleSnapshot, Owner: "planted", Error: "quarantined by TestGCPlantedLeftovers"}); err != nil {
			return err
		}
		if err := tx.PutDevice(&metadata.Device{ID: ghostID, Name: fmt.Sprintf("%s-thin-%d", pool.Name(), ghostID), Size: 64 << 20,
			State: metadata.DeviceReady, Role: metadata.RoleSnapshot, Owner: ghost}); err != nil {
			return err
		}
		return tx.CreateSnapshot(&metadata.Snapshot{Key: ghost, Kind: snapshots.KindCommitted, State: metadata.SnapshotReady,
			DeviceID: ghostID, Size: 64 << 20, FSType: "ext4", Created: now, Updated: now})
	}); err != nil {
		t.Fatal(err)
	}
	sn.Close()
	store.Close()
	e.StartDaemon("daemon.log")
	e.WaitDaemon()
	// A process-image snapshot whose run left no record (abandoned).
	const importKey = "flyio-import-20250101-000000-0123456789ab"
	e.Ctr("snapshots", "--snapshotter", "flyio", "prepare", importKey)

	table, err := e.flyio("gc", "--dry-run", "--min-age", "0s")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc --dry-run:\n%s", table)
	rep := e.gcReport("--dry-run")
	byKind := map[gc.Kind][]gc.Item{}
	for _, it := range rep.Items {
		byKind[it.Kind] = append(byKind[it.Kind], it)
	}
	check := func(k gc.Kind, ok func(gc.Item) bool) {
		t.Helper()
		if len(byKind[k]) != 1 || !ok(byKind[k][0]) {
			t.Errorf("%s: got %+v", k, byKind[k])
		}
	}
	check(gc.KindOrphaned, func(it gc.Item) bool { return it.DeviceID == orphan && it.InPool && it.Bytes >= 8<<20 })
	check(gc.KindUnknownDevice, func(it gc.Item) bool { return it.DeviceID == unknown && it.InPool && it.Bytes >= 4<<20 })
	check(gc.KindMissingDevice, func(it gc.Item) bool { return it.Snapshot == ghost && !it.InPool })
	check(gc.KindFailedImport, func(it gc.Item) bool {
		return strings.HasSuffix(it.Snapshot, "/"+importKey) && it.Name == importKey && it.Namespace == namespace
	})
	check(gc.KindUnreferenced, func(it gc.Item) bool { return it.Snapshot == forgotten && it.InPool && it.Bytes > 0 })
	check(gc.KindQuarantined, func(it gc.Item) bool {
		return it.DeviceID == quarantined && it.InPool && it.Bytes >= 8<<20 && strings.Contains(it.Blocked, "--include-quarantined")
	})
	if len(rep.Items) != 6 {
		t.Errorf("gc --dry-run listed %d items, want exactly the 6 planted", len(rep.Items))
	}
	if !strings.HasPrefix(rep.Containerd, "checked") {
		t.Errorf("containerd was not asked: %s", rep.Containerd)
	}

	out, err := e.flyio("gc", "--force", "--min-age", "0s")
	t.Logf("gc --force:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	// Only the quarantined device is left, data and all.
	if rep := e.gcReport("--dry-run"); len(rep.Items) != 1 || rep.Items[0].DeviceID != quarantined || rep.Items[0].Bytes < 8<<20 {
		t.Errorf("after gc --force, listed: %+v; want only the quarantined device %d, with its data", rep.Items, quarantined)
	}
	out, err = e.flyio("gc", "--force", "--include-quarantined", "--min-age", "0s")
	t.Logf("gc --force --include-quarantined:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if rep := e.gcReport("--dry-run"); len(rep.Items) != 0 {
		t.Errorf("after gc --force --include-quarantined, still listed: %+v", rep.Items)
	}
	md, err := thinmeta.ReadPool(ctx, e.Cfg.Pool.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range md.Devices {
		if d.ID == orphan || d.ID == unknown || d.ID == quarantined {
			t.Errorf("thin id %d still in the pool", d.ID)
		}
	}
	if info, err := dmpool.GetDeviceInfo("planted-unknown"); err != nil || info.Exists {
		t.Errorf("planted-unknown still exists (%v)", err)
	}
	if ls := e.Ctr("snapshots", "--snapshotter", "flyio", "ls"); strings.Contains(ls, importKey) {
		t.Errorf("containerd still lists %s:\n%s", importKey, ls)
	}

	// The live container's snapshot survived with its data.
	if out := e.Ctr("tasks", "start", "live1"); !strings.Contains(out, "kept") {
		t.Errorf("live1 after gc printed %q, want its file", out)
	}
	if out := e.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "live2", "/bin/echo", "ok"); !strings.Contains(out, "ok") {
		t.Errorf("new container after gc printed %q", out)
	}

	// Offline: with the daemon stopped gc reads metadata and pool itself.
	e.StopDaemon()
	out, err = e.flyio("gc", "--dry-run", "--min-age", "0s")
	t.Logf("offline gc --dry-run:\n%s", out)
	if err != nil || !strings.Contains(out, "nothing to clean") {
		t.Errorf("offline gc --dry-run: %v\n%s", err, out)
	}
	e.StartDaemon("daemon.log")
	e.WaitDaemon()
}

// TestGCOfflineReleasesLeftoverHold: an offline gc killed inside its read
// of the pool leaves the pool's metadata snapshot held and its marker
// (root_dir/metadata-snap.reserved, written before the reserve, as the
// daemon's reads write it). The next gc --force, which holds the database
// alone, releases it and does its work, where it used to refuse until an
// operator ran 'pool release-metadata-snap'; a dry run, which shares the
// database with other dry runs, leaves it alone. A gc that finishes
// leaves no marker.
func TestGCOfflineReleasesLeftoverHold(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t, withSpares(0))
	e.StopDaemon()
	pool := e.Cfg.Pool.Name
	marker := filepath.Join(e.Cfg.RootDir, thinmeta.MarkerName)
	held := func() string {
		t.Helper()
		st, err := dmpool.TargetStatus(pool)
		if err != nil || len(st) != 1 {
			t.Fatalf("pool status: %v %v", st, err)
		}
		return strings.Fields(st[0].Params)[3]
	}

	if out, err := e.flyio("gc", "--dry-run", "--min-age", "0s"); err != nil {
		t.Fatalf("offline gc --dry-run: %v\n%s", err, out)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a finished offline gc left its marker: %v", err)
	}

	// What a gc killed between its reserve and its release leaves.
	if _, err := dmpool.Message(pool, "reserve_metadata_snap"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if held() != "-" {
			dmpool.Message(pool, "release_metadata_snap")
		}
	})
	writeFile(t, marker, fmt.Sprintf(`{"pool":%q,"pid":999999,"time":%q}`+"\n", pool, time.Now().UTC().Format(time.RFC3339)))

	out, err := e.flyio("gc", "--dry-run", "--min-age", "0s")
	t.Logf("offline gc --dry-run with a killed gc's hold: %v\n%s", err, out)
	if err == nil || held() == "-" {
		t.Errorf("a dry run used or released the hold (err %v, held %q)", err, held())
	}
	out, err = e.flyio("gc", "--force", "--min-age", "0s")
	t.Logf("offline gc --force with a killed gc's hold: %v\n%s", err, out)
	if err != nil {
		t.Errorf("offline gc --force did not release the killed gc's hold: %v", err)
	}
	if h := held(); h != "-" {
		t.Errorf("held metadata root after gc --force: %q, want none", h)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("marker after gc --force: %v, want gone", err)
	}
	e.StartDaemon("daemon.log")
	e.WaitDaemon()
}

// TestPoolFullThreshold fills the pool past [pool] full_threshold and
// checks that Prepare and process-image are refused with the pool-full
// message, that status says so, and that work resumes once space is freed.
func TestPoolFullThreshold(t *testing.T) {
	dmtest.Require(t)
	e := startEnv(t)
	// A 1GiB pool refusing at 20% (about 205MiB of data): the env's 64MiB
	// metadata is already ~10% used by the pool's own space maps. Nothing
	// is imported yet, so the pool can be made again from scratch.
	e.StopDaemon()
	if err := harness.RemovePool(context.Background(), service.PoolConfig(e.Cfg)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{e.Cfg.Pool.DataFile, e.Cfg.Pool.MetadataFile, service.MetadataPath(e.Cfg)} {
		if err := os.Remove(f); err != nil {
			t.Fatal(err)
		}
	}
	cfgText, err := os.ReadFile(e.CfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(cfgText), `data_size = "6GiB"`, `data_size = "1GiB"`, 1)
	writeFile(t, e.CfgPath, strings.Replace(text, "[pool]\n", "[pool]\nfull_threshold = 20\n", 1))
	if e.Cfg, err = config.Load(e.CfgPath, true); err != nil {
		t.Fatal(err)
	}
	e.StartDaemon("daemon.log")
	e.WaitDaemon()
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	t.Logf("status before filling:\n%s", e.status())

	e.Ctr("run", "--snapshotter", "flyio", ref, "big", "/bin/sh", "-c", "dd if=/dev/zero of=/data/big bs=1M count=200 && sync")
	time.Sleep(1500 * time.Millisecond) // the guard caches the pool status for a second
	st := e.status()
	t.Logf("status after filling:\n%s", st)
	if !strings.Contains(st, "REFUSED") {
		t.Errorf("status does not say new work is refused")
	}
	const msg = "devicemapper pool is full, cannot create device"
	out, err := e.CtrErr("run", "--rm", "--snapshotter", "flyio", ref, "small", "/bin/true")
	t.Logf("ctr run on a full pool: %v", err)
	if err == nil || !strings.Contains(out, msg) {
		t.Errorf("ctr run on a full pool: err %v, output %q; want %q", err, out, msg)
	}
	_, err = admin.NewClient(e.Cfg.AdminAddress).ProcessImage(context.Background(), admin.ProcessImageRequest{Key: "images/any.tar"})
	if err == nil || !strings.Contains(err.Error(), msg) {
		t.Errorf("process-image on a full pool: %v; want %q", err, msg)
	}

	e.Ctr("containers", "rm", "big")
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err = e.CtrErr("run", "--rm", "--snapshotter", "flyio", ref, "small", "/bin/echo", "resumed")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	if err != nil || !strings.Contains(out, "resumed") {
		t.Fatalf("after freeing space: %v %q", err, out)
	}
	t.Logf("status after freeing:\n%s", e.status())
}

// TestDeleteImage imports an image with process-image, checks that
// delete-image refuses while a container's snapshot depends on its base
// (naming it), and that it removes image and base once it is gone.
func TestDeleteImage(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t)
	const key = "images/busybox.tar"
	s.putBusybox(key, "hello\n")
	if _, err := s.processImage(cmdTimeout, "--s3-key", key); err != nil {
		t.Fatal(err)
	}
	const ref = "images.flyio.local/busybox:latest"
	s.Ctr("run", "--snapshotter", "flyio", ref, "dep1", "/bin/true")

	out, err := s.flyio("delete-image", "--image-id", "busybox")
	t.Logf("delete-image with a dependent container: %v", err)
	if err == nil || !strings.Contains(out, "FOREIGN KEY constraint failed") || !strings.Contains(out, "/dep1") {
		t.Fatalf("delete-image with a dependent: err %v, output %q", err, out)
	}
	if imgs := s.Ctr("images", "ls", "-q"); !strings.Contains(imgs, ref) {
		t.Fatalf("refused delete-image removed the image anyway")
	}

	s.Ctr("containers", "rm", "dep1")
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err = s.flyio("delete-image", "--image-id", "busybox")
		if err == nil || time.Now().After(deadline) || !strings.Contains(out, "FOREIGN KEY") {
			break
		}
		time.Sleep(2 * time.Second)
	}
	t.Logf("delete-image: %s", out)
	if err != nil {
		t.Fatal(err)
	}
	if imgs := s.Ctr("images", "ls", "-q"); strings.Contains(imgs, ref) {
		t.Errorf("image %s still in containerd", ref)
	}
	if ls := s.Ctr("snapshots", "--snapshotter", "flyio", "ls"); countLines(ls) != 1 {
		t.Errorf("snapshots left:\n%s", ls)
	}
	if rep := s.gcReport("--dry-run"); len(rep.Items) != 0 {
		t.Errorf("gc finds leftovers after delete-image: %+v", rep.Items)
	}
	st, err := admin.NewClient(s.Cfg.AdminAddress).Status(context.Background())
	if err != nil || st.Images != 0 {
		t.Errorf("status after delete-image: %d images (%v)", st.Images, err)
	}
	// Importing it again is a new run, not the finished one.
	if out, err := s.processImage(cmdTimeout, "--s3-key", key); err != nil || !strings.Contains(out, "done: image") {
		t.Errorf("process-image after delete-image: %v\n%s", err, out)
	}
}
