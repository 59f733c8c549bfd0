package snapshotter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// smallPoolSnapshotter is a snapshotter whose 1GiB snapshots sit on a pool
// of 192MiB of data, so that one snapshot can fill it.
func smallPoolSnapshotter(t *testing.T) (*Snapshotter, *dmpool.Pool) {
	t.Helper()
	dmtest.Require(t)
	sn, pool, cleanup, err := realSnapshotterSized(context.Background(), t.TempDir(), Config{BaseSize: 1 << 30}, 192<<20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	})
	return sn, pool
}

// writeUnsynced writes n bytes of data to name through m and unmounts,
// without fsync or syncfs: as containerd's applier does. Write errors
// (a filesystem the failed writeback turned read-only) end the writing
// quietly, as they would go unseen in the applier's page cache.
func writeUnsynced(t *testing.T, m []mount.Mount, name string, n int) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		mount.UnmountAll(dir, 0)
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{0xa5}, 1<<20)
	for i := 0; i < n>>20; i++ {
		chunk[0] = byte(i) // not all blocks alike
		if _, err := f.Write(chunk); err != nil {
			t.Logf("write stopped at %d MiB: %v", i, err)
			break
		}
	}
	f.Close()
	// ext4's unmount writes the dirty pages back and drops the EIO.
	if err := mount.UnmountAll(dir, 0); err != nil {
		t.Fatal(err)
	}
}

// waitWritable flushes the pool's metadata until dm-thin has switched a
// pool that got space back to write mode (it does on a metadata commit),
// a bounded number of times.
func waitWritable(t *testing.T, pool *dmpool.Pool) {
	t.Helper()
	for i := 0; i < 100; i++ {
		st, err := pool.Status(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if st.Trouble() == "" {
			return
		}
	}
	t.Fatal("pool did not return to write mode after space was freed")
}

// TestCommitRefusesLostWritesOnDMThin is issue 10 B5 on real dm-thin: an
// unsynced write larger than the pool fails in writeback, the unmount
// drops the error, and Commit must not commit the snapshot. After the
// space is freed a new snapshot writes, commits and reads back whole.
func TestCommitRefusesLostWritesOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn, pool := smallPoolSnapshotter(t)
	m, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	writeUnsynced(t, m, "big", 320<<20)
	st, _ := pool.Events(ctx)
	t.Logf("pool after the write: trouble %q, data %d/%d blocks, event %d", st.Trouble(), st.UsedDataBlocks, st.TotalDataBlocks, st.EventNr)
	err = sn.Commit(ctx, "committed-a", "a")
	if err == nil || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit of a snapshot whose writes failed in writeback = %v, want FailedPrecondition", err)
	}
	t.Logf("refused as it must: %v", err)
	if _, err := sn.Stat(ctx, "committed-a"); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat(committed-a) = %v, want not found: nothing may be committed", err)
	}
	// containerd removes the active snapshot of a failed unpack.
	if err := sn.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	waitWritable(t, pool)

	m, err = sn.Prepare(ctx, "b", "")
	if err != nil {
		t.Fatal(err)
	}
	want := writeSum(t, m, "file", 64<<20)
	if err := sn.Commit(ctx, "committed-b", "b"); err != nil {
		t.Fatalf("commit after space was freed: %v", err)
	}
	vm, err := sn.View(ctx, "view-b", "committed-b")
	if err != nil {
		t.Fatal(err)
	}
	if got := readSum(t, vm, "file"); got != want {
		t.Fatalf("committed file checksum %s, want %s", got, want)
	}
	if err := sn.Remove(ctx, "view-b"); err != nil {
		t.Fatal(err)
	}
}

// TestCommitRefusesAfterPoolWasOutOfSpaceOnDMThin: the pool ran out of data
// space between the Prepare and the Commit of "a" (because of another
// snapshot) and got its space back before the Commit. a's own writes
// all succeeded here, but Commit cannot tell them from writes that were
// refused; it must refuse, and a snapshot prepared after commits.
func TestCommitRefusesAfterPoolWasOutOfSpaceOnDMThin(t *testing.T) {
	ctx := context.Background()
	sn, pool := smallPoolSnapshotter(t)
	m, err := sn.Prepare(ctx, "a", "")
	if err != nil {
		t.Fatal(err)
	}
	writeSum(t, m, "small", 1<<20)
	fm, err := sn.Prepare(ctx, "filler", "")
	if err != nil {
		t.Fatal(err)
	}
	writeUnsynced(t, fm, "big", 320<<20)
	if err := sn.Remove(ctx, "filler"); err != nil {
		t.Fatal(err)
	}
	waitWritable(t, pool)
	err = sn.Commit(ctx, "committed-a", "a")
	if err == nil || !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("commit after the pool was out of space = %v, want FailedPrecondition", err)
	}
	t.Logf("refused as it must: %v", err)
	if err := sn.Remove(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	m, err = sn.Prepare(ctx, "b", "")
	if err != nil {
		t.Fatal(err)
	}
	writeSum(t, m, "small", 1<<20)
	if err := sn.Commit(ctx, "committed-b", "b"); err != nil {
		t.Fatalf("commit of a snapshot prepared after the trouble: %v", err)
	}
}

// writeSum writes n bytes of varied data to name through m, syncs and
// unmounts, and returns their checksum.
func writeSum(t *testing.T, m []mount.Mount, name string, n int) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	f, err := os.Create(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	chunk := make([]byte, 1<<20)
	for i := 0; i < n>>20; i++ {
		for j := range chunk {
			chunk[j] = byte(i*31 + j*7)
		}
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		h.Write(chunk)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

func readSum(t *testing.T, m []mount.Mount, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(m, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// troubleReader runs trouble once, on the first Read: the remote fill has
// prepared its snapshot by then.
type troubleReader struct {
	r       io.Reader
	trouble func()
}

func (r *troubleReader) Read(p []byte) (int, error) {
	if r.trouble != nil {
		r.trouble()
		r.trouble = nil
	}
	return r.r.Read(p)
}

// troubleLayers is a remote store of one layer whose reading makes the
// pool run out of space and get it back.
type troubleLayers struct {
	blob    []byte
	diffID  string
	trouble func()
}

func (l *troubleLayers) Open(_ context.Context, labels map[string]string) (io.ReadCloser, string, bool, error) {
	return io.NopCloser(&troubleReader{r: bytes.NewReader(l.blob), trouble: l.trouble}), l.diffID, true, nil
}

// TestRemoteFillRefusedAfterPoolTroubleOnDMThin: the pool runs out of data
// space (another snapshot fills it) while a remote fill extracts, and gets
// the space back before the fill commits. The fill's own writes are
// synced and fine, but Commit cannot tell; the fill must not be
// committed, and the Prepare goes on without it (containerd then fetches
// the layer itself).
func TestRemoteFillRefusedAfterPoolTroubleOnDMThin(t *testing.T) {
	dmtest.Require(t)
	ctx := context.Background()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := bytes.Repeat([]byte("layer\n"), 10000)
	tw.WriteHeader(&tar.Header{Name: "data", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	tw.Write(content)
	tw.Close()
	store := &troubleLayers{blob: buf.Bytes(), diffID: fmt.Sprintf("sha256:%x", sha256.Sum256(buf.Bytes()))}
	sn, pool, cleanup, err := realSnapshotterSized(ctx, t.TempDir(), Config{BaseSize: 1 << 30, Remote: store}, 192<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	store.trouble = func() {
		fm, err := sn.Prepare(ctx, "filler", "")
		if err != nil {
			t.Error(err)
			return
		}
		writeUnsynced(t, fm, "big", 320<<20)
		if err := sn.Remove(ctx, "filler"); err != nil {
			t.Error(err)
		}
		waitWritable(t, pool)
	}
	ref := chainRef("layer1")
	_, err = sn.Prepare(ctx, "extract-1", "", snapshots.WithLabels(map[string]string{snapshots.LabelSnapshotRef: ref}))
	if errdefs.IsAlreadyExists(err) {
		t.Fatalf("the remote fill was committed although the pool ran out of space during it")
	}
	if err != nil {
		t.Fatalf("Prepare after a refused fill: %v, want the normal Prepare", err)
	}
	if _, err := sn.Stat(ctx, remoteName(ref)); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat(%s) = %v, want not found", remoteName(ref), err)
	}
	// No fill snapshot is left behind either.
	var left []string
	sn.Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if strings.HasPrefix(info.Name, "remote-fill/") {
			left = append(left, info.Name)
		}
		return nil
	})
	if len(left) > 0 {
		t.Fatalf("fill snapshots left: %v", left)
	}
}
