package dmpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool/pooltest"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

// stackDev is a dm device over a loop whose table a test swaps: linear,
// shorter linear, or dm-flakey failing every write.
type stackDev struct {
	t    *testing.T
	name string
	loop *loopdev.Device
}

func newStackDev(t *testing.T, file string, size int64) *stackDev {
	t.Helper()
	l := pooltest.AttachLoop(t, file, size)
	d := &stackDev{t: t, name: randName("fimt-stack"), loop: l}
	if _, err := CreateDevice(d.name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = Resume(d.name)
		if err := removeWithRetry(context.Background(), d.name, false); err != nil {
			t.Errorf("removing %s: %v", d.name, err)
		}
	})
	d.set("linear", size, "")
	return d
}

// set swaps the table for a linear (kind "linear") or flakey target of
// size bytes over the loop.
func (d *stackDev) set(kind string, size int64, flakey string) {
	d.t.Helper()
	params := fmt.Sprintf("%d:%d 0", d.loop.Major, d.loop.Minor)
	if kind == "flakey" {
		params += " " + flakey
	}
	if err := LoadTable(d.name, []Target{{Length: uint64(size) / 512, Type: kind, Params: params}}); err != nil {
		d.t.Fatal(err)
	}
	if err := Suspend(d.name); err != nil {
		d.t.Fatal(err)
	}
	if err := Resume(d.name); err != nil {
		d.t.Fatal(err)
	}
}

func (d *stackDev) path() string { return DevicePath(d.name) }

// TestVMReloadThatCannotResumeIsLoud causes, for real, the worst case of
// applyFeatures: the pool's metadata device has shrunk below what the
// superblock records, so the kernel's thin-pool preresume fails on the
// new table and on the old one alike. The reload must come back with
// ErrPoolSuspended (not a plain error beside a silently suspended pool),
// leave no inactive table, and the pool must run again once the operator
// restores the device and resumes it.
func TestVMReloadThatCannotResumeIsLoud(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	dir := t.TempDir()
	data := newStackDev(t, filepath.Join(dir, "data"), 64*mib)
	meta := newStackDev(t, filepath.Join(dir, "meta"), 16*mib)
	cfg := Config{Name: randName("fimt"), DataDevice: data.path(), MetadataDevice: meta.path(), SkipBlockZeroing: true}
	p, res, err := Open(ctx, cfg)
	if err != nil || res != Created {
		t.Fatalf("Open: %s %v", res, err)
	}
	// Registered last, so it runs first: the pool goes before its devices.
	t.Cleanup(func() { teardown(t, cfg, false) })
	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, p)

	meta.set("linear", 8*mib, "")
	cfg.SkipBlockZeroing = false
	_, _, err = Open(ctx, cfg)
	info, ierr := GetDeviceInfo(cfg.Name)
	if ierr != nil {
		t.Fatal(ierr)
	}
	t.Logf("reload on a shrunk metadata device: %v; pool suspended=%v inactive=%v", err, info.Suspended, info.InactiveTable)
	if !info.Suspended {
		t.Fatalf("the kernel resumed the pool on a shrunk metadata device: the test does not cause the failure it is about")
	}
	if !errors.Is(err, ErrPoolSuspended) || !strings.Contains(err.Error(), "left suspended") {
		t.Errorf("Open: %v, want ErrPoolSuspended saying the pool is left suspended", err)
	}
	if info.InactiveTable {
		t.Errorf("an inactive table is left loaded on the suspended pool")
	}

	// The operator's fix, as the error says: the device back, then resume.
	meta.set("linear", 16*mib, "")
	if err := Resume(cfg.Name); err != nil {
		t.Fatalf("resume after the metadata device is restored: %v", err)
	}
	p, res, err = Open(ctx, cfg)
	if err != nil || res != Found {
		t.Fatalf("Open after the fix: %s %v", res, err)
	}
	if s := mustStatus(t, p); s.ReadOnly || s.NeedsCheck || s.Fail {
		t.Errorf("pool after the fix: %+v", s)
	}
	if f := poolFeatures(t, cfg.Name); strings.Contains(strings.Join(f, " "), skipZeroing) {
		t.Errorf("features after the fix %v: zeroing not applied", f)
	}
}

// TestVMDataWriteFaultWithZeroing finds out what a failed write to the
// data device does to a pool that zeroes new blocks, and proves the
// recovery: data committed before the fault survives and the pool comes
// back read-write once the fault is lifted, the thin devices and the pool
// device are deactivated, thin_check has passed (clearing needs_check),
// and the pool is loaded again from the same devices.
func TestVMDataWriteFaultWithZeroing(t *testing.T) {
	dmtest.Require(t)
	thinCheck, err := exec.LookPath("thin_check")
	if err != nil {
		t.Fatalf("%v (apt-get install thin-provisioning-tools)", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	const dataSize = 256 * mib
	data := newStackDev(t, filepath.Join(dir, "data"), dataSize)
	meta := newStackDev(t, filepath.Join(dir, "meta"), 16*mib)
	cfg := Config{Name: randName("fimt"), DataDevice: data.path(), MetadataDevice: meta.path()}
	p, _, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { teardown(t, cfg, false) })
	if f := poolFeatures(t, cfg.Name); strings.Contains(strings.Join(f, " "), skipZeroing) {
		t.Fatalf("pool features %v: not zeroing", f)
	}

	const size = 16 * mib
	committed := pattern(0x3C, 2*mib)
	if err := p.CreateThin(ctx, 1); err != nil {
		t.Fatal(err)
	}
	one, err := p.Activate(ctx, "fimt-fault-1-"+cfg.Name[5:], 1, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeDev(one, 0, committed); err != nil {
		t.Fatal(err)
	}
	mustStatus(t, p) // commits the mappings
	if err := p.CreateThin(ctx, 2); err != nil {
		t.Fatal(err)
	}
	two, err := p.Activate(ctx, "fimt-fault-2-"+cfg.Name[5:], 2, size)
	if err != nil {
		t.Fatal(err)
	}
	kmsgStart := kmsgLines(t)

	data.set("flakey", dataSize, "0 3600 1 error_writes")
	// 4 KiB into a new 128 KiB block: the kernel must zero the rest first.
	werr := writeDirect(t, two, 0, 4096)
	t.Logf("partial write into a new block during the fault: %v", werr)
	if werr == nil {
		t.Errorf("a write into a new block succeeded while every data write failed")
	}
	st, serr := p.Status(ctx)
	t.Logf("pool status during the fault: %+v (%v)", st, serr)
	rerr := readDirectCompare(t, one, committed)
	t.Logf("read of committed data during the fault: %v", rerr)
	t.Logf("CheckWritable during the fault: %v", p.CheckWritable(ctx, "probe"))
	data.set("linear", dataSize, "")
	st, serr = p.Status(ctx)
	t.Logf("pool status after the fault is lifted: %+v (%v)", st, serr)
	for _, l := range kmsgLines(t)[len(kmsgStart):] {
		if strings.Contains(l, "thin") || strings.Contains(l, "device-mapper") {
			t.Logf("kernel: %s", l)
		}
	}

	// Recovery by Open with CheckOnStart, what a daemon start does. An
	// open thin device (a running container) keeps the pool untouched.
	cfg.CheckOnStart = true
	thinCheckPath = thinCheck
	busy, err := os.Open(one)
	if err != nil {
		t.Fatal(err)
	}
	p, res, err := Open(ctx, cfg)
	busy.Close()
	if err != nil || res != Found {
		t.Fatalf("Open with a thin device open: %s %v, want the pool found as it is", res, err)
	}
	if s := mustStatus(t, p); !s.NeedsCheck {
		t.Fatalf("pool after Open with a thin device open: %+v, want it left read-only with needs_check", s)
	}
	if info, _ := GetDeviceInfo(filepath.Base(two)); !info.Exists {
		t.Fatalf("Open deactivated thin devices although one was open")
	}
	p, res, err = Open(ctx, cfg)
	if err != nil || res != Recreated {
		t.Fatalf("Open after the fault with CheckOnStart: %s %v, want the pool checked and re-created", res, err)
	}
	if s := mustStatus(t, p); s.Fail || s.ReadOnly || s.NeedsCheck {
		t.Fatalf("pool after the recovery: %+v, want rw without needs_check", s)
	}
	if info, _ := GetDeviceInfo(filepath.Base(two)); info.Exists {
		t.Errorf("thin device %s still active after the check", two)
	}
	one, err = p.Activate(ctx, filepath.Base(one), 1, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := readDirectCompare(t, one, committed); err != nil {
		t.Errorf("committed data after the recovery: %v", err)
	}
	if err := p.CreateThin(ctx, 3); err != nil {
		t.Fatalf("a new device after the recovery: %v", err)
	}
	three, err := p.Activate(ctx, "fimt-fault-3-"+cfg.Name[5:], 3, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeDirect(t, three, 0, 4096); err != nil {
		t.Errorf("a write into a new block after the recovery: %v", err)
	}
}

func writeDirect(t *testing.T, path string, off int64, n int) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(t, n)
	for i := range buf {
		buf[i] = 0x77
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		return err
	}
	return f.Sync()
}

func readDirectCompare(t *testing.T, path string, want []byte) error {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := alignedBuf(t, len(want))
	if _, err := f.ReadAt(buf, 0); err != nil {
		return err
	}
	if !bytes.Equal(buf, want) {
		return errors.New("data differs from what was committed")
	}
	return nil
}

// kmsgLines returns the kernel log records readable now. It reads with
// raw syscalls: an os.File on the pollable /dev/kmsg would park in Go's
// poller at the end of the log instead of returning EAGAIN.
func kmsgLines(t *testing.T) []string {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Logf("kernel log: %v", err)
		return nil
	}
	defer unix.Close(fd)
	var out []string
	buf := make([]byte, 8192)
	for len(out) < 100000 {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EPIPE) {
			continue // a record was overwritten
		}
		if err != nil || n <= 0 {
			return out
		}
		rec := string(buf[:n])
		if _, msg, ok := strings.Cut(rec, ";"); ok {
			rec = msg
		}
		out = append(out, strings.TrimSpace(rec))
	}
	return out
}
