package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// TestMicroVMUsesMountSource is the block-device contract of
// docs/microvm.md, driven the way a VMM integration drives it: through
// containerd's snapshots API. The daemon runs with the retired
// mount_type = "block" (which used to hand out a bind mount of the device
// node, so that containerd's unpacker failed and nothing could be
// imported). An image is imported, a container snapshot prepared, and
// its filesystem read and written through Mounts[0].Source with debugfs,
// never mounted on the host, as a guest would through virtio-blk. Then
// the written snapshot is committed and a child of it sees the file.
func TestMicroVMUsesMountSource(t *testing.T) {
	e := startEnv(t, withSnapshotterTOML(`mount_type = "block"`))
	// The daemon's default zero_new_blocks: what the guest reads of a new
	// block it wrote only partly is zeros, never another tenant's data.
	if ts, err := dmpool.Table(e.Cfg.Pool.Name); err != nil || len(ts) != 1 || strings.Contains(ts[0].Params, "skip_block_zeroing") {
		t.Fatalf("pool table %+v, %v: want zeroing of new blocks", ts, err)
	}
	const ref = "docker.io/library/microvm:latest"
	e.importImage(ref)

	ctx := namespaces.WithNamespace(context.Background(), namespace)
	c, err := client.New(e.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A runtime's snapshot is referenced by its container; this one is held
	// by a lease, or containerd's garbage collection removes it from us.
	ctx, releaseLease, err := c.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	img, err := c.GetImage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	diffIDs, err := img.RootFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sn := c.SnapshotService("flyio")

	mounts, err := sn.Prepare(ctx, "vm-1", identity.ChainID(diffIDs).String())
	if err != nil {
		t.Fatal(err)
	}
	dev := vmmSource(t, mounts)
	if got := debugfsCat(t, dev, "/hello.txt"); got != "hello from a dm-thin snapshot\n" {
		t.Fatalf("the image's /hello.txt read through %s: %q", dev, got)
	}
	const guestData = "written by the guest through the block device\n"
	local := filepath.Join(e.Dir, "guest.txt")
	writeFile(t, local, guestData)
	debugfs(t, dev, true, "write "+local+" /guest.txt")
	fsck(t, dev)
	if got := debugfsCat(t, dev, "/guest.txt"); got != guestData {
		t.Fatalf("/guest.txt read back through %s: %q", dev, got)
	}

	if err := sn.Commit(ctx, "vm-1-committed", "vm-1"); err != nil {
		t.Fatalf("commit of the snapshot the guest wrote: %v", err)
	}
	child, err := sn.Prepare(ctx, "vm-2", "vm-1-committed")
	if err != nil {
		t.Fatal(err)
	}
	childDev := vmmSource(t, child)
	if got := debugfsCat(t, childDev, "/guest.txt"); got != guestData {
		t.Fatalf("child of the committed snapshot reads /guest.txt as %q", got)
	}
	fsck(t, childDev)
	// The host can mount the same snapshot too (what runc would do).
	dir := t.TempDir()
	if err := mount.All(child, dir); err != nil {
		t.Fatalf("host mount of %+v: %v", child, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "guest.txt"))
	mount.UnmountAll(dir, 0)
	if err != nil || string(got) != guestData {
		t.Fatalf("host mount of the child reads %q, %v", got, err)
	}

	for _, key := range []string{"vm-2", "vm-1-committed"} {
		if err := sn.Remove(ctx, key); err != nil {
			t.Fatalf("remove %s: %v", key, err)
		}
	}
	// containerd removes snapshots from us at its garbage collection; a
	// synchronous image delete runs one now.
	if err := releaseLease(ctx); err != nil {
		t.Fatal(err)
	}
	e.Ctr("images", "rm", "--sync", ref)
	for _, d := range []string{dev, childDev} {
		if slices.Contains(activeThins(t, e.Cfg.Pool.Name), filepath.Base(d)) {
			t.Errorf("%s still active after its snapshot was removed", d)
		}
	}
}

// vmmSource checks mounts the way firecracker-containerd and Kata do
// (exactly one mount whose Source is a block device) plus what the guest
// needs (Type names the filesystem), and that nothing on the host holds
// the device: it is handed to the guest unmounted. It returns Source.
func vmmSource(t *testing.T, mounts []mount.Mount) string {
	t.Helper()
	if len(mounts) != 1 {
		t.Fatalf("want exactly one mount, got %+v", mounts)
	}
	m := mounts[0]
	var st unix.Stat_t
	if err := unix.Stat(m.Source, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK {
		t.Fatalf("mount %+v: Source is not a block device (%v)", m, err)
	}
	if m.Type != "ext4" {
		t.Fatalf("mount %+v: Type is not the filesystem on the device", m)
	}
	if mountedDevs(t)[st.Rdev] {
		t.Fatalf("%s is mounted on the host", m.Source)
	}
	return m.Source
}

// mountedDevs is the set of dev_t with a filesystem mounted on the host.
func mountedDevs(t *testing.T) map[uint64]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	devs := map[uint64]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		var maj, min uint32
		if len(f) > 2 {
			if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err == nil {
				devs[unix.Mkdev(maj, min)] = true
			}
		}
	}
	return devs
}

// debugfs runs one debugfs request on dev (read-write with rw) and
// returns its stdout; debugfs reports a failed request only on stderr.
func debugfs(t *testing.T, dev string, rw bool, request string) string {
	t.Helper()
	args := []string{"-R", request, dev}
	if rw {
		args = append([]string{"-w"}, args...)
	}
	cmd := exec.Command(sbin(t, "debugfs"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("debugfs %v: %v\n%s", args, err, stderr.String())
	}
	if msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), firstLine(stderr.String()))); msg != "" {
		t.Fatalf("debugfs %v: %s", args, msg)
	}
	return stdout.String()
}

func debugfsCat(t *testing.T, dev, path string) string {
	t.Helper()
	return debugfs(t, dev, false, "cat "+path)
}

// firstLine is debugfs's version banner, which it prints on stderr.
func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i+1]
	}
	return s
}

// fsck checks dev read-only; any finding fails the test.
func fsck(t *testing.T, dev string) {
	t.Helper()
	out, err := exec.Command(sbin(t, "e2fsck"), "-fn", dev).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", dev, err, out)
	}
}

// sbin finds an e2fsprogs tool, which lives outside a user's PATH.
func sbin(t *testing.T, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin"} {
		if p := filepath.Join(d, name); fileExists(p) {
			return p
		}
	}
	t.Fatalf("%s not found (package e2fsprogs)", name)
	return ""
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
