package nbd

// Tests against the real kernel NBD driver. They skip without nbd (or
// root) and run in the VM (test/vm) with FLYIO_REQUIRE_DM=1, which turns
// the skip into a failure.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

const mib = 1 << 20

// vmModulesDir is where the VM harness says the guest kernel's module
// tree is (test/vm/guest/stage2). Its bind mount onto /lib/modules fails
// when the host has no /lib/modules to mount over, so plain modprobe then
// finds nothing.
const vmModulesDir = "/run/vmctl/modules-dir"

var loadOnce sync.Once

// loadFromVMTree runs `modprobe -d ROOT nbd` with the harness's module
// tree as ROOT, once, when plain `modprobe nbd` could not find the module.
func loadFromVMTree(t *testing.T) {
	loadOnce.Do(func() {
		b, err := os.ReadFile(vmModulesDir)
		if err != nil {
			return
		}
		root := filepath.Dir(filepath.Dir(strings.TrimSpace(string(b)))) // .../lib/modules -> ...
		out, err := exec.Command("modprobe", "-d", root, "nbd").CombinedOutput()
		t.Logf("modprobe -d %s nbd: %v %s", root, err, bytes.TrimSpace(out))
	})
}

func requireNBD(t *testing.T) {
	t.Helper()
	err := ensureModule()
	if err != nil {
		loadFromVMTree(t)
		if _, serr := os.Stat(sysModule); serr == nil {
			err = nil
		}
	}
	if err == nil && os.Geteuid() != 0 {
		err = fmt.Errorf("not root (uid %d)", os.Geteuid())
	}
	if err == nil {
		t.Logf("kernel %s", dmtest.KernelRelease())
		return
	}
	if dmtest.Required() {
		t.Fatalf("%s=1 but nbd is not usable: %v", dmtest.RequireEnv, err)
	}
	t.Skipf("nbd not available on this machine (run the VM tests): %v", err)
}

func connect(t *testing.T, size int64, b interface {
	ReadAt([]byte, int64) (int, error)
}, opt Options) *Device {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	d, err := Connect(ctx, size, b, opt)
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	t.Logf("connected %s (%d:%d)", d.Path(), d.major, d.minor)
	return d
}

// alignedBuf returns n bytes aligned for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off%4096 : off%4096+n]
}

func openDirect(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatalf("open %s O_DIRECT: %v", path, err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// readWithin reads n bytes at off from f, failing the test if the read
// has not returned after timeout (a hung device).
func readWithin(t *testing.T, f *os.File, off int64, n int, timeout time.Duration) ([]byte, error) {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		b := alignedBuf(n)
		got, err := f.ReadAt(b, off)
		ch <- res{b[:got], err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(timeout):
		t.Fatalf("read of %s at %d hung for %s", f.Name(), off, timeout)
		return nil, nil
	}
}

func sysfs(t *testing.T, d *Device, attr string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(sysBlock, "nbd"+strconv.Itoa(d.index), attr))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestNBDReadBack(t *testing.T) {
	requireNBD(t)
	img := randomImage(8 * mib)
	d := connect(t, int64(len(img)), bytes.NewReader(img), Options{})

	var st unix.Stat_t
	if err := unix.Stat(d.Path(), &st); err != nil {
		t.Fatal(err)
	}
	if maj, min := d.Dev(); st.Rdev != unix.Mkdev(maj, min) {
		t.Errorf("%s is %d:%d, Dev says %d:%d", d.Path(), unix.Major(st.Rdev), unix.Minor(st.Rdev), maj, min)
	}
	if got := sysfs(t, d, "size"); got != strconv.Itoa(len(img)/512) {
		t.Errorf("sysfs size %s sectors, want %d", got, len(img)/512)
	}
	if got := sysfs(t, d, "ro"); got != "1" {
		t.Errorf("sysfs ro = %s, want 1", got)
	}
	if got := sysfs(t, d, "queue/logical_block_size"); got != "4096" {
		t.Errorf("logical block size %s, want 4096", got)
	}

	f := openDirect(t, d.Path())
	got, err := readWithin(t, f, 0, len(img), time.Minute)
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("O_DIRECT read of the whole device: %v, equal %v", err, bytes.Equal(got, img))
	}
	for _, r := range []struct{ off, n int }{{4096, 4096}, {3*mib + 8192, 40960}, {len(img) - 4096, 4096}} {
		got, err := readWithin(t, f, int64(r.off), r.n, time.Minute)
		if err != nil || !bytes.Equal(got, img[r.off:r.off+r.n]) {
			t.Fatalf("O_DIRECT read %d+%d: %v", r.off, r.n, err)
		}
	}
	// Past the end: the kernel stops at the device size itself.
	if got, err := readWithin(t, f, int64(len(img)), 4096, time.Minute); len(got) != 0 {
		t.Errorf("read past the end gave %d bytes (%v)", len(got), err)
	}

	buffered, err := os.ReadFile(d.Path())
	if err != nil || !bytes.Equal(buffered, img) {
		t.Fatalf("buffered read: %v, %d bytes, equal %v", err, len(buffered), bytes.Equal(buffered, img))
	}

	if w, err := os.OpenFile(d.Path(), os.O_WRONLY|unix.O_DIRECT, 0); err == nil {
		_, werr := w.WriteAt(alignedBuf(4096), 0)
		w.Close()
		if werr == nil {
			t.Error("a write to the read-only device succeeded")
		} else {
			t.Logf("write to the device: %v", werr)
		}
	} else {
		t.Logf("open for write: %v", err)
	}
}

func TestNBDBackendErrorGivesEIO(t *testing.T) {
	requireNBD(t)
	img := randomImage(4 * mib)
	var mu sync.Mutex
	var failed []int64
	opt := Options{OnReadError: func(off int64, n int, err error) {
		mu.Lock()
		failed = append(failed, off)
		mu.Unlock()
	}}
	d := connect(t, int64(len(img)), failingReader{bytes.NewReader(img), 1 * mib, 2 * mib}, opt)
	f := openDirect(t, d.Path())

	if _, err := readWithin(t, f, 1*mib+4096, 4096, time.Minute); !errors.Is(err, unix.EIO) {
		t.Fatalf("read of the failing range: %v, want EIO", err)
	}
	for _, off := range []int{0, 2 * mib, 3 * mib} {
		got, err := readWithin(t, f, int64(off), 65536, time.Minute)
		if err != nil || !bytes.Equal(got, img[off:off+65536]) {
			t.Fatalf("read at %d after a backend error: %v", off, err)
		}
	}
	// A buffered reader of the range gets EIO too, not zeros.
	bf, err := os.Open(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	if _, err := bf.ReadAt(make([]byte, 4096), 1*mib+8192); !errors.Is(err, unix.EIO) {
		t.Errorf("buffered read of the failing range: %v, want EIO", err)
	}
	mu.Lock()
	if len(failed) == 0 {
		t.Error("OnReadError was not called")
	}
	mu.Unlock()
	if _, err := os.Stat(filepath.Join(sysBlock, "nbd"+strconv.Itoa(d.index), "pid")); err != nil {
		t.Errorf("device disconnected after a backend error: %v", err)
	}
}

func waitFree(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for inUse(n) {
		if time.Now().After(deadline) {
			t.Fatalf("nbd%d still in use after %s", n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestNBDCloseAndReconnect(t *testing.T) {
	requireNBD(t)
	img := randomImage(2 * mib)
	d := connect(t, int64(len(img)), bytes.NewReader(img), Options{})
	// A second device at the same time gets another node.
	d2 := connect(t, int64(len(img)), bytes.NewReader(img), Options{BlockSize: 512})
	if d2.Path() == d.Path() {
		t.Fatalf("two connects share %s", d.Path())
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case <-d.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if inUse(d.index) {
		t.Fatalf("%s still in use after Close", d.Path())
	}
	if err := d2.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	d3 := connect(t, int64(len(img)), bytes.NewReader(img), Options{})
	f := openDirect(t, d3.Path())
	if got, err := readWithin(t, f, 0, len(img), time.Minute); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read after reconnect: %v", err)
	}
	t.Logf("reconnected on %s (first was %s)", d3.Path(), d.Path())
}

const childEnv = "FLYIO_NBD_TEST_CHILD"

// blockingReader hangs forever on reads at or beyond block: the child's
// backend for a read that is in flight when the process dies.
type blockingReader struct {
	r     *bytes.Reader
	block int64
}

func (b blockingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > b.block {
		select {}
	}
	return b.r.ReadAt(p, off)
}

// TestNBDChildHolds is the child of TestNBDKilledProcessGivesEIO: it
// connects a device, says which, and waits to be killed.
func TestNBDChildHolds(t *testing.T) {
	if os.Getenv(childEnv) != "1" {
		t.Skip("helper process for TestNBDKilledProcessGivesEIO")
	}
	img := randomImage(8 * mib)
	d, err := Connect(context.Background(), int64(len(img)), blockingReader{bytes.NewReader(img), 4 * mib}, Options{})
	if err != nil {
		fmt.Printf("ERROR %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("DEVICE %s %d\n", d.Path(), d.index)
	select {}
}

func TestNBDKilledProcessGivesEIO(t *testing.T) {
	requireNBD(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestNBDChildHolds$", "-test.v=false")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	var path string
	var index int
	if _, err := fmt.Sscanf(line, "DEVICE %s %d", &path, &index); err != nil {
		t.Fatalf("child said %q", line)
	}
	img := randomImage(8 * mib)
	// This process holds the device open, as a dm table would.
	f := openDirect(t, path)
	if got, err := readWithin(t, f, 0, 65536, time.Minute); err != nil || !bytes.Equal(got, img[:65536]) {
		t.Fatalf("read through the child: %v", err)
	}
	// sysfs names the thread that runs NBD_DO_IT: one of the child's.
	pid, _ := os.ReadFile(filepath.Join(sysBlock, "nbd"+strconv.Itoa(index), "pid"))
	if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%s", cmd.Process.Pid, strings.TrimSpace(string(pid)))); err != nil {
		t.Errorf("sysfs pid %q is not a thread of the child %d: %v", pid, cmd.Process.Pid, err)
	}

	// A read the child's backend never answers is in flight when it dies.
	inflight := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(alignedBuf(4096), 5*mib)
		inflight <- err
	}()
	select {
	case err := <-inflight:
		t.Fatalf("the blocked read returned before the kill: %v", err)
	case <-time.After(300 * time.Millisecond):
	}

	start := time.Now()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	killed = true
	select {
	case err := <-inflight:
		if !errors.Is(err, unix.EIO) {
			t.Errorf("in-flight read after the kill: %v, want EIO", err)
		}
		t.Logf("in-flight read failed %s after the kill: %v", time.Since(start), err)
	case <-time.After(20 * time.Second):
		t.Fatal("in-flight read still hangs 20s after the server was killed")
	}
	if _, err := readWithin(t, f, 1*mib, 4096, 20*time.Second); !errors.Is(err, unix.EIO) {
		t.Errorf("new read after the kill: %v, want EIO", err)
	}
	t.Logf("size while held open after the kill: %s sectors", readSysfs(index, "size"))
	logKernel(t)
	// Once the last opener goes the device is free again.
	f.Close()
	waitFree(t, index, 10*time.Second)
	d := connect(t, int64(len(img)), bytes.NewReader(img), Options{})
	t.Logf("after the kill: reconnected on %s", d.Path())
}

func readSysfs(n int, attr string) string {
	b, _ := os.ReadFile(filepath.Join(sysBlock, "nbd"+strconv.Itoa(n), attr))
	return strings.TrimSpace(string(b))
}

// TestNBDSurvivesSignals sends SIGURG (what the Go runtime itself uses to
// preempt) to every thread of the process, the NBD_DO_IT thread included:
// the kernel waits for it interruptibly, so an unblocked signal there
// would drop the connection.
func TestNBDSurvivesSignals(t *testing.T) {
	requireNBD(t)
	img := randomImage(1 * mib)
	d := connect(t, int64(len(img)), bytes.NewReader(img), Options{})
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			_ = unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		}
	}
	time.Sleep(100 * time.Millisecond)
	select {
	case <-d.Done():
		t.Fatal("the connection ended after signals")
	default:
	}
	f := openDirect(t, d.Path())
	if got, err := readWithin(t, f, 0, len(img), time.Minute); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("read after signals: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// logKernel logs the kernel's nbd messages, to show what it did.
func logKernel(t *testing.T) {
	out, err := exec.Command("dmesg").CombinedOutput()
	if err != nil {
		t.Logf("dmesg: %v", err)
		return
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "nbd") {
			t.Logf("kernel: %s", l)
		}
	}
}

// maxReader records the largest read it was asked for.
type maxReader struct {
	r   io.ReaderAt
	max atomic.Int64
}

func (m *maxReader) ReadAt(p []byte, off int64) (int, error) {
	for n := int64(len(p)); ; {
		cur := m.max.Load()
		if n <= cur || m.max.CompareAndSwap(cur, n) {
			break
		}
	}
	return m.r.ReadAt(p, off)
}

// TestNBDRequestsAreSmall: Connect lowers the queue's max_sectors_kb, so
// one large O_DIRECT read reaches the server as requests of at most
// maxPooledBuf, whose buffers it may keep.
func TestNBDRequestsAreSmall(t *testing.T) {
	requireNBD(t)
	img := randomImage(16 * mib)
	mr := &maxReader{r: bytes.NewReader(img)}
	d := connect(t, int64(len(img)), mr, Options{})
	if got, err := strconv.Atoi(sysfs(t, d, "queue/max_sectors_kb")); err != nil || got > maxPooledBuf>>10 {
		t.Errorf("max_sectors_kb %d (%v), want at most %d", got, err, maxPooledBuf>>10)
	}
	f := openDirect(t, d.Path())
	got, err := readWithin(t, f, 0, len(img), time.Minute)
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("O_DIRECT read of the whole device: %v", err)
	}
	if m := mr.max.Load(); m > maxPooledBuf {
		t.Fatalf("largest request %d bytes, want at most %d", m, maxPooledBuf)
	}
	t.Logf("largest request: %d bytes", mr.max.Load())
}
