package dmpool

// Tests against real dm-thin. They skip without device-mapper and run
// in the VM (test/vm) with FLYIO_REQUIRE_DM=1.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

const mib = 1 << 20

func randName(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// newTestPool creates a fresh file-backed pool with a unique name and
// registers a cleanup that removes every device of it.
func newTestPool(t *testing.T, dataSize int64) (*Pool, Config) {
	t.Helper()
	return newTestPoolWith(t, dataSize, func(*Config) {})
}

// newTestPoolWith is newTestPool with the Config adjusted by tweak first.
func newTestPoolWith(t *testing.T, dataSize int64, tweak func(*Config)) (*Pool, Config) {
	t.Helper()
	dmtest.Require(t)
	if v, err := DriverVersion(); err == nil {
		t.Logf("device-mapper %s, kernel %s", v, dmtest.KernelRelease())
	}
	dir := t.TempDir()
	cfg := Config{
		Name:         randName("fimt"),
		DataFile:     filepath.Join(dir, "data"),
		MetadataFile: filepath.Join(dir, "meta"),
		DataSize:     dataSize,
		MetadataSize: 8 * mib,
	}
	tweak(&cfg)
	p, res, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if res != Created {
		t.Fatalf("Open of new files: %s, want %s", res, Created)
	}
	t.Cleanup(func() { teardown(t, cfg, false) })
	return p, cfg
}

// teardown removes every thin device that refers to the pool, then the
// pool, then any loop still bound to its files: what a reboot does.
func teardown(t *testing.T, cfg Config, strict bool) {
	t.Helper()
	report := t.Logf
	if strict {
		report = t.Fatalf
	}
	info, err := GetDeviceInfo(cfg.Name)
	if err != nil {
		report("teardown %s: %v", cfg.Name, err)
		return
	}
	if info.Exists {
		poolDev := devString(info.Major, info.Minor)
		names, _ := ListDevices()
		for _, n := range names {
			ts, err := Table(n.Name)
			if err != nil || len(ts) != 1 || ts[0].Type != "thin" {
				continue
			}
			if tt, err := parseThinTable(ts[0].Params); err == nil && tt.PoolDev == poolDev {
				_ = Resume(n.Name)
				if err := removeWithRetry(context.Background(), n.Name, false); err != nil {
					report("teardown: %v", err)
				}
			}
		}
		if info.Suspended {
			_ = Resume(cfg.Name)
		}
		if err := removeWithRetry(context.Background(), cfg.Name, false); err != nil {
			report("teardown: %v", err)
		}
	}
	for _, f := range []string{cfg.MetadataFile, cfg.DataFile} {
		if d, err := loopdev.Find(f); err == nil && d != nil {
			d.Close()
			_ = loopdev.Detach(d.Path)
		}
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func mount(t *testing.T, dev string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount(dev, dir, "ext4", 0, ""); err != nil {
		t.Fatalf("mount %s: %v", dev, err)
	}
	return dir
}

func umount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatalf("umount %s: %v", dir, err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(content); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	f.Close()
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// writeDev writes data at off and syncs, returning the first error.
func writeDev(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		return err
	}
	return f.Sync()
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i/4096)
	}
	return b
}

func mustStatus(t *testing.T, p *Pool) Status {
	t.Helper()
	s, err := p.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVMLifecycle(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 256*mib)
	base := mustStatus(t, p)
	if base.TotalDataBlocks != 256*mib/(128<<10) || base.DataBlockSize != 128<<10 {
		t.Fatalf("unexpected fresh status %+v", base)
	}

	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateThin(ctx, 1); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("second create_thin 1: %v, want ErrDeviceExists", err)
	}
	origin := randName("fimt-origin")
	dev, err := p.Activate(ctx, origin, 1, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := p.Activate(ctx, origin, 1, 64*mib); err != nil || again != dev {
		t.Fatalf("idempotent activate: %q %v", again, err)
	}
	if _, err := p.Activate(ctx, origin, 1, 32*mib); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("activate with other size: %v", err)
	}
	run(t, "mkfs.ext4", "-q", "-F", dev)
	odir := mount(t, dev)
	writeFile(t, filepath.Join(odir, "f"), "origin-v1")

	// Snapshot while the origin is mounted: it is suspended (fs frozen)
	// and must be running again afterwards.
	if err := p.CreateSnapshot(ctx, 2, 1); err != nil {
		t.Fatal(err)
	}
	if info, _ := GetDeviceInfo(origin); info.Suspended {
		t.Fatal("origin left suspended after snapshot")
	}
	if err := p.CreateSnapshot(ctx, 2, 1); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("duplicate snapshot id: %v", err)
	}
	if info, _ := GetDeviceInfo(origin); info.Suspended {
		t.Fatal("origin left suspended after failed snapshot")
	}
	if err := p.CreateSnapshot(ctx, 3, 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("snapshot of missing origin: %v", err)
	}

	snap := randName("fimt-snap")
	sdev, err := p.Activate(ctx, snap, 2, 64*mib)
	if err != nil {
		t.Fatal(err)
	}
	sdir := mount(t, sdev)
	if got := readFile(t, filepath.Join(sdir, "f")); got != "origin-v1" {
		t.Fatalf("snapshot sees %q", got)
	}
	writeFile(t, filepath.Join(sdir, "f"), "snap-v2")
	writeFile(t, filepath.Join(sdir, "big"), strings.Repeat("s", 4*mib))
	writeFile(t, filepath.Join(odir, "f"), "origin-v3")
	if got := readFile(t, filepath.Join(odir, "f")); got != "origin-v3" {
		t.Fatalf("origin sees %q", got)
	}
	if got := readFile(t, filepath.Join(sdir, "f")); got != "snap-v2" {
		t.Fatalf("snapshot sees %q after origin write", got)
	}
	if _, err := os.Stat(filepath.Join(odir, "big")); !os.IsNotExist(err) {
		t.Fatalf("snapshot file visible in origin: %v", err)
	}

	act, err := p.ListActive(ctx)
	if err != nil || len(act) != 2 {
		t.Fatalf("ListActive: %+v %v", act, err)
	}
	ts, err := p.ThinStatus(ctx, snap)
	if err != nil || ts.MappedBytes < 4*mib {
		t.Fatalf("snapshot status %+v %v", ts, err)
	}

	// Busy: mounted devices cannot be deactivated, deleted or the pool removed.
	if err := p.Deactivate(ctx, snap); !errors.Is(err, ErrDeviceBusy) || !strings.Contains(err.Error(), snap) {
		t.Fatalf("deactivate mounted: %v", err)
	}
	if err := p.Delete(ctx, 2); !errors.Is(err, ErrDeviceBusy) {
		t.Fatalf("delete active: %v", err)
	}
	if err := p.Remove(ctx); !errors.Is(err, ErrDeviceBusy) {
		t.Fatalf("remove pool with active thins: %v", err)
	}

	umount(t, sdir)
	umount(t, odir)
	if err := p.Deactivate(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sdev); !os.IsNotExist(err) {
		t.Fatalf("node %s left after deactivate: %v", sdev, err)
	}
	if err := p.Deactivate(ctx, snap); err != nil {
		t.Fatalf("deactivate twice: %v", err)
	}
	before := mustStatus(t, p)
	if err := p.Delete(ctx, 2); err != nil {
		t.Fatal(err)
	}
	after := mustStatus(t, p)
	if after.UsedDataBlocks >= before.UsedDataBlocks {
		t.Fatalf("delete of snapshot returned no space: %d -> %d blocks", before.UsedDataBlocks, after.UsedDataBlocks)
	}
	if err := p.Delete(ctx, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
	if err := p.Deactivate(ctx, origin); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if s := mustStatus(t, p); s.UsedDataBlocks != base.UsedDataBlocks {
		t.Fatalf("used data blocks %d, want baseline %d", s.UsedDataBlocks, base.UsedDataBlocks)
	}
	if err := p.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Status(ctx); !errors.Is(err, ErrPoolMissing) {
		t.Fatalf("status of removed pool: %v", err)
	}
}

func TestVMPoolFull(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 64*mib)
	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	name := randName("fimt-fill")
	dev, err := p.Activate(ctx, name, 1, 128*mib)
	if err != nil {
		t.Fatal(err)
	}
	chunk := pattern(1, mib)
	var werr error
	for off := int64(0); off < 128*mib; off += mib {
		if werr = writeDev(dev, off, chunk); werr != nil {
			break
		}
	}
	if werr == nil {
		t.Fatal("wrote 128 MiB into a 64 MiB pool")
	}
	t.Logf("fill stopped with %v", werr)
	s := mustStatus(t, p)
	if !s.Full() || !s.ErrorIfNoSpace {
		t.Fatalf("pool not reported full: %+v", s)
	}
	if err := p.CreateThin(ctx, 2); !errors.Is(err, ErrPoolFull) || !strings.Contains(err.Error(), "devicemapper pool is full, cannot create device") {
		t.Fatalf("CreateThin on full pool: %v", err)
	}
	if err := p.CreateSnapshot(ctx, 3, 1); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("CreateSnapshot on full pool: %v", err)
	}
	if info, _ := GetDeviceInfo(name); info.Suspended {
		t.Fatal("origin suspended after refused snapshot")
	}
	if err := p.Deactivate(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := p.Delete(ctx, 1); err != nil {
		t.Fatal(err)
	}
	// The kernel leaves out-of-data-space mode on the next commit that
	// finds free blocks.
	deadline := time.Now().Add(10 * time.Second)
	for s = mustStatus(t, p); s.Full() && time.Now().Before(deadline); s = mustStatus(t, p) {
		time.Sleep(100 * time.Millisecond)
	}
	if s.Full() {
		t.Fatalf("pool still full after delete: %+v", s)
	}
	if err := p.CreateThin(ctx, 4); err != nil {
		t.Fatal(err)
	}
	dev, err = p.Activate(ctx, name, 4, 16*mib)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeDev(dev, 0, chunk); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
}

func TestVMReboot(t *testing.T) {
	ctx := context.Background()
	p, cfg := newTestPool(t, 128*mib)
	data := pattern(7, 2*mib)
	if err := p.CreateThin(ctx, 10); err != nil {
		t.Fatal(err)
	}
	name := randName("fimt-keep")
	dev, err := p.Activate(ctx, name, 10, 32*mib)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeDev(dev, 3*mib, data); err != nil {
		t.Fatal(err)
	}
	if err := p.CreateSnapshot(ctx, 11, 10); err != nil {
		t.Fatal(err)
	}

	// Opening the live pool again verifies it.
	if _, res, err := Open(ctx, cfg); err != nil || res != Found {
		t.Fatalf("reopen live pool: %s %v", res, err)
	}
	other := cfg
	other.MetadataFile = filepath.Join(t.TempDir(), "other-meta")
	if _, _, err := Open(ctx, other); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open with other metadata file: %v", err)
	}
	other = cfg
	other.BlockSize = 256 << 10
	if _, _, err := Open(ctx, other); !errors.Is(err, ErrMismatch) {
		t.Fatalf("open with other block size: %v", err)
	}

	// "Reboot": all dm tables and loops go away, the files stay.
	teardown(t, cfg, true)
	if info, _ := GetDeviceInfo(cfg.Name); info.Exists {
		t.Fatal("pool survived teardown")
	}
	for _, f := range []string{cfg.MetadataFile, cfg.DataFile} {
		if d, _ := loopdev.Find(f); d != nil {
			d.Close()
			t.Fatalf("loop %s still bound to %s", d.Path, f)
		}
	}

	// A data file missing after the reboot (its disk not mounted yet)
	// is refused, naming it, and nothing is created: no empty data file,
	// no pool device.
	moved := cfg.DataFile + ".elsewhere"
	if err := os.Rename(cfg.DataFile, moved); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(ctx, cfg); !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), cfg.DataFile) {
		t.Fatalf("Open with the data file missing: %v, want ErrMismatch naming %s", err, cfg.DataFile)
	}
	if _, err := os.Stat(cfg.DataFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open created %s: %v", cfg.DataFile, err)
	}
	if info, _ := GetDeviceInfo(cfg.Name); info.Exists {
		t.Fatal("Open made a pool device with the data file missing")
	}
	if err := os.Rename(moved, cfg.DataFile); err != nil {
		t.Fatal(err)
	}

	p2, res, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res != Recreated {
		t.Fatalf("Open after reboot: %s, want %s", res, Recreated)
	}
	for _, id := range []uint32{10, 11} {
		n := fmt.Sprintf("%s-%d", name, id)
		dev, err := p2.Activate(ctx, n, id, 32*mib)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(data))
		f, err := os.Open(dev)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.ReadAt(got, 3*mib)
		f.Close()
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("thin %d lost its data after reboot (err %v)", id, err)
		}
	}
	if err := p2.CreateThin(ctx, 10); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("thin 10 should still exist: %v", err)
	}

	// Remove with nothing active detaches the loops (autoclear).
	for _, id := range []uint32{10, 11} {
		if err := p2.Deactivate(ctx, fmt.Sprintf("%s-%d", name, id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := p2.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{cfg.MetadataFile, cfg.DataFile} {
		if d, _ := loopdev.Find(f); d != nil {
			d.Close()
			t.Fatalf("loop %s still bound to %s after Remove", d.Path, f)
		}
	}
	if _, res, err := Open(ctx, cfg); err != nil || res != Recreated {
		t.Fatalf("Open after Remove: %s %v", res, err)
	}
}

func TestVMConcurrent(t *testing.T) {
	ctx := context.Background()
	p, _ := newTestPool(t, 256*mib)
	base := mustStatus(t, p)
	var next atomic.Uint32
	next.Store(1)
	// create takes fresh ids until the kernel accepts one, as the
	// snapshotter does (its ids come from metadata.Tx.AllocateDeviceID).
	create := func(f func(id uint32) error) (uint32, error) {
		for {
			id := next.Add(1) - 1
			err := f(id)
			if errors.Is(err, ErrDeviceExists) {
				continue
			}
			return id, err
		}
	}
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			err := func() error {
				id, err := create(func(id uint32) error { return p.CreateThin(ctx, id) })
				if err != nil {
					return err
				}
				name := fmt.Sprintf("%s-w%d", p.Name(), w)
				dev, err := p.Activate(ctx, name, id, 8*mib)
				if err != nil {
					return err
				}
				if err := writeDev(dev, 0, pattern(byte(w), 256<<10)); err != nil {
					return err
				}
				sid, err := create(func(sid uint32) error { return p.CreateSnapshot(ctx, sid, id) })
				if err != nil {
					return err
				}
				sname := name + "-s"
				sdev, err := p.Activate(ctx, sname, sid, 8*mib)
				if err != nil {
					return err
				}
				if err := writeDev(sdev, 1*mib, pattern(byte(w+1), 128<<10)); err != nil {
					return err
				}
				for _, n := range []string{sname, name} {
					if err := p.Deactivate(ctx, n); err != nil {
						return err
					}
				}
				for _, i := range []uint32{sid, id} {
					if err := p.Delete(ctx, i); err != nil {
						return err
					}
				}
				return nil
			}()
			if err != nil {
				errs <- fmt.Errorf("worker %d: %w", w, err)
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	act, err := p.ListActive(ctx)
	if err != nil || len(act) != 0 {
		t.Fatalf("leaked active devices: %+v %v", act, err)
	}
	if s := mustStatus(t, p); s.UsedDataBlocks != base.UsedDataBlocks {
		t.Fatalf("used data blocks %d, baseline %d", s.UsedDataBlocks, base.UsedDataBlocks)
	}
}

// TestVMCrashLeftovers covers what a crash in the middle of an operation
// leaves behind: a device without a table, a suspended device, a stale
// /dev/mapper node, a suspended pool, a pool device without a table.
// None of them may wedge the next call.
func TestVMCrashLeftovers(t *testing.T) {
	ctx := context.Background()
	p, cfg := newTestPool(t, 64*mib)
	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	name := randName("fimt-left")

	// Created but never loaded: Activate reuses the device.
	if _, err := CreateDevice(name); err != nil {
		t.Fatal(err)
	}
	dev, err := p.Activate(ctx, name, 1, 8*mib)
	if err != nil {
		t.Fatalf("activate over a table-less device: %v", err)
	}

	// Left suspended: Activate resumes it, Deactivate removes it.
	if err := Suspend(name); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Activate(ctx, name, 1, 8*mib); err != nil {
		t.Fatal(err)
	}
	if info, _ := GetDeviceInfo(name); info.Suspended {
		t.Fatal("Activate left the device suspended")
	}
	if err := writeDev(dev, 0, pattern(3, 64<<10)); err != nil {
		t.Fatalf("write after resume: %v", err)
	}
	if err := Suspend(name); err != nil {
		t.Fatal(err)
	}
	if err := p.Deactivate(ctx, name); err != nil {
		t.Fatalf("deactivate suspended device: %v", err)
	}
	if info, _ := GetDeviceInfo(name); info.Exists {
		t.Fatal("device survived Deactivate")
	}

	// A stale node (a regular file where the node belongs) is replaced.
	if err := os.WriteFile(DevicePath(name), []byte("stale"), 0o600); err != nil {
		t.Fatal(err)
	}
	if dev, err = p.Activate(ctx, name, 1, 8*mib); err != nil {
		t.Fatalf("activate over stale node: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("node %s not a block device: %v", dev, err)
	}
	// A thin id that is not in the pool: clear error, nothing left over.
	if _, err := p.Activate(ctx, name+"-x", 77, 8*mib); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "77") {
		t.Fatalf("activate missing id: %v", err)
	}
	if info, _ := GetDeviceInfo(name + "-x"); info.Exists {
		t.Fatal("failed activate left a device behind")
	}
	if err := p.Deactivate(ctx, name); err != nil {
		t.Fatal(err)
	}

	// A pool left suspended is resumed by Open.
	if err := Suspend(cfg.Name); err != nil {
		t.Fatal(err)
	}
	if _, res, err := Open(ctx, cfg); err != nil || res != Found {
		t.Fatalf("open suspended pool: %s %v", res, err)
	}
	if info, _ := GetDeviceInfo(cfg.Name); info.Suspended {
		t.Fatal("pool still suspended after Open")
	}

	// Crash between DM_DEV_CREATE and the table load of the pool.
	teardown(t, cfg, true)
	if _, err := CreateDevice(cfg.Name); err != nil {
		t.Fatal(err)
	}
	p2, res, err := Open(ctx, cfg)
	if err != nil || res != Recreated {
		t.Fatalf("open over table-less pool device: %s %v", res, err)
	}
	if err := p2.CreateThin(ctx, 1); !errors.Is(err, ErrDeviceExists) {
		t.Fatalf("thin 1 lost: %v", err)
	}
}
