package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/service"
)

// TestBlockImageRoundTrip imports a tarball, publishes its base as a
// block image, deletes the image, and imports the key again: the second
// import fills from the block image (never reading the tarball) and its
// base holds the same tree, file for file. Then a corrupted chunk makes
// the import fail naming the chunk, leaving no snapshot or image behind.
func TestBlockImageRoundTrip(t *testing.T) {
	dmtest.Require(t)
	const prefix = "blocks/"
	s := startS3Env(t, withDaemonTOML(fmt.Sprintf("block_prefix = %q", prefix)))
	const key, id, ref = "images/busybox.tar", "busybox", "images.flyio.local/busybox:latest"
	s.putBusybox(key, "hello from a block image\n")

	out, err := s.processImage(cmdTimeout, "--s3-key", key)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "block image") {
		t.Fatalf("first import used a block image before one was published:\n%s", out)
	}
	first := s.waitRun(runID(t, out), cmdTimeout)
	want := s.baseTree(first.ChainID)

	out, err = s.flyio("publish-base", "--image-id", id)
	t.Logf("publish-base:\n%s", out)
	if err != nil || !strings.Contains(out, "uploaded") || !strings.Contains(out, blockimage.ManifestKey(prefix, key)) {
		t.Fatalf("publish-base: %v\n%s", err, out)
	}
	// Published again, every chunk is already there.
	if out, err = s.flyio("publish-base", "--image-id", id); err != nil || !strings.Contains(out, ": 0 uploaded") {
		t.Fatalf("second publish-base uploaded again: %v\n%s", err, out)
	}

	s.deleteImage(id)
	tarGets := s.gets(key)
	out, err = s.processImage(cmdTimeout, "--s3-key", key)
	t.Logf("process-image from the block image:\n%s", out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "filling from block image s3://"+s.gw.Bucket+"/"+blockimage.ManifestKey(prefix, key)) {
		t.Errorf("process-image does not say it fills from the block image")
	}
	if n := s.gets(key) - tarGets; n != 0 {
		t.Errorf("the block fill read the tarball (%d GETs)", n)
	}
	second := s.waitRun(runID(t, out), cmdTimeout)
	if second.ChainID != first.ChainID || second.Block == "" {
		t.Fatalf("block import: chain id %s (tarball %s), block %q", second.ChainID, first.ChainID, second.Block)
	}
	if got := s.baseTree(second.ChainID); !equalTrees(t, got, want) {
		t.Errorf("the block-filled base differs from the extracted one")
	}
	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", ref, "blk1", "/bin/sh", "-c", "cat /etc/hello"); got != "hello from a block image\n" {
		t.Errorf("container on the block-filled base printed %q", got)
	}

	m, ok, err := blockimage.LoadManifest(context.Background(), blockimage.NewS3Store(s.up), prefix, key)
	if err != nil || !ok || len(m.Chunks) == 0 {
		t.Fatalf("manifest: %v, %v", ok, err)
	}
	chunkGets := func() int {
		n := 0
		for _, c := range m.Chunks {
			n += s.gets(blockimage.ChunkKey(prefix, c.Digest))
		}
		return n
	}

	// Killed once a chunk is journalled, the daemon's next start
	// continues the fill instead of starting over: after the restart it
	// fetches only the chunks not journalled.
	// The fill ran on a blank device (create_thin), not on a snapshot
	// of the formatted template that was there: a label the snapshotter
	// did not honour once made fills land on a template unnoticed (the
	// tree is the same; the mkfs blocks under it are not the image's).
	// containerd removes the container's and the view's snapshots from
	// us at its next garbage collection, which must not find the daemon
	// stopped (it does not try again soon, and delete-image would wait).
	s.waitUntil("containerd to remove the snapshots on the base", 90*time.Second, func() bool {
		s.collectGarbage()
		tree, err := s.admin().Snapshots(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		tree.Walk(func(n2 *admin.SnapshotNode, _ int) {
			if n2.Kind != "Committed" {
				n++
			}
		})
		return n == 0
	})
	s.StopDaemon()
	s.checkBlankBase(second.ChainID)
	s.StartDaemon("daemon-failpoint.log", failpoint.EnvVar+"="+failpoint.ImportMidBlockFill)
	s.WaitDaemon()
	s.deleteImage(id)
	before := chunkGets()
	out, err = s.processImage(cmdTimeout, "--s3-key", key, "--no-wait")
	if err != nil {
		t.Fatal(err)
	}
	resumed := runID(t, out)
	if err, ok := s.Daemon.Wait(cmdTimeout); !ok {
		t.Fatalf("the failpoint did not kill the daemon (%v)", err)
	}
	// The killed daemon fetches nothing more: what the next one fetches
	// is counted from here. At least one chunk was journalled before
	// the kill, so a fill that continues fetches fewer than them all.
	atRestart := chunkGets()
	s.StartDaemon("daemon.log")
	s.WaitDaemon()
	if r := s.waitRun(resumed, cmdTimeout); r.State != admin.RunDone {
		t.Fatalf("resumed block run: %s: %s", r.State, r.Error)
	}
	if n := chunkGets() - atRestart; n >= len(m.Chunks) {
		t.Errorf("after the restart the fill fetched %d chunks of %d (%d before the kill): it started over", n, len(m.Chunks), atRestart-before)
	}
	if !strings.Contains(s.DaemonLog(), "continuing the block fill") {
		t.Errorf("the restarted daemon does not say it continued the fill")
	}
	if got := s.baseTree(first.ChainID); !equalTrees(t, got, want) {
		t.Errorf("the resumed block fill differs from the extracted base")
	}

	// A corrupt chunk: the fill fails naming it, and nothing is left.
	s.deleteImage(id)
	bad := blockimage.ChunkKey(prefix, m.Chunks[len(m.Chunks)-1].Digest)
	s.put(bad, []byte("not a zstd frame"))
	out, err = s.processImage(cmdTimeout, "--s3-key", key)
	t.Logf("process-image with a corrupt chunk: %v\n%s", err, out)
	if err == nil || !strings.Contains(out, bad) || !strings.Contains(out, "corrupt") {
		t.Errorf("import with a corrupt chunk: err %v; want a failure naming %s", err, bad)
	}
	if left := s.importSnapshots(); len(left) != 0 {
		t.Errorf("failed block import left snapshots: %v", left)
	}
	if imgs := s.Ctr("images", "ls", "-q"); strings.Contains(imgs, ref) {
		t.Errorf("failed block import registered %s", ref)
	}
	st, err := s.admin().Status(context.Background())
	if err != nil || st.Images != 0 {
		t.Errorf("status after the failed import: %d images (%v)", st.Images, err)
	}
}

// checkBlankBase checks in our metadata (the daemon must be stopped)
// that committed base chainID's device was made with create_thin
// (origin 0, no template) while a template was there to snapshot.
func (s *s3env) checkBlankBase(chainID string) {
	t := s.T
	t.Helper()
	store, err := metadata.Open(service.MetadataPath(s.Cfg), metadata.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	err = store.View(func(tx *metadata.Tx) error {
		var base *metadata.Snapshot
		if err := tx.Snapshots(func(key string, rec *metadata.Snapshot, err error) error {
			if err == nil && rec.Kind == snapshots.KindCommitted && strings.HasSuffix(key, "/"+chainID) {
				base = rec
			}
			return nil
		}); err != nil {
			return err
		}
		if base == nil {
			return fmt.Errorf("no committed snapshot of %s in the metadata", chainID)
		}
		d, err := tx.Device(base.DeviceID)
		if err != nil {
			return err
		}
		templates := 0
		if err := tx.Templates(func(tp *metadata.Template) error {
			templates++
			if d.Origin == tp.DeviceID {
				t.Errorf("the block-filled base's device %d is a snapshot of template %s (device %d)", d.ID, tp.Name, tp.DeviceID)
			}
			return nil
		}); err != nil {
			return err
		}
		t.Logf("block-filled base %s: device %d, origin %d, labels %v; %d templates", base.Key, d.ID, d.Origin, base.Labels, templates)
		if d.Origin != 0 {
			t.Errorf("the block-filled base's device %d was snapshotted from device %d, want a blank device (origin 0)", d.ID, d.Origin)
		}
		if templates == 0 {
			t.Errorf("no template in the metadata: the check proves nothing (the tarball import made one)")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// deleteImage runs delete-image until the base has no dependents: the
// views baseTree made through containerd are removed from us only at
// containerd's next garbage collection.
func (s *s3env) deleteImage(id string) {
	s.T.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := s.flyio("delete-image", "--image-id", id)
		if err == nil {
			return
		}
		if !strings.Contains(out, "FOREIGN KEY") || time.Now().After(deadline) {
			s.T.Fatalf("delete-image %s: %v\n%s", id, err, out)
		}
		s.collectGarbage()
		time.Sleep(time.Second)
	}
}

// collectGarbage makes containerd run its garbage collection now, as
// deleting a lease with --sync does: snapshots removed from containerd
// are removed from us only then, and its scheduler may wait long on a
// loaded host.
func (s *s3env) collectGarbage() {
	id := fmt.Sprintf("gc-%d", time.Now().UnixNano())
	if out, err := s.CtrErr("leases", "create", "--id", id); err != nil {
		s.T.Logf("ctr leases create: %v\n%s", err, out)
		return
	}
	if out, err := s.CtrErr("leases", "delete", "--sync", id); err != nil {
		s.T.Logf("ctr leases delete --sync: %v\n%s", err, out)
	}
}

// baseTree mounts a read-only view of base chainID and returns the
// sha256 (or link target) and mode of every entry, by path.
func (s *s3env) baseTree(chainID string) map[string]string {
	t := s.T
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	c, err := client.New(s.Sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, release, err := c.WithLease(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release(context.Background())
	sn := c.SnapshotService("flyio")
	key := "tree-" + chainID[len(chainID)-12:]
	mounts, err := sn.View(ctx, key, chainID)
	if err != nil {
		t.Fatal(err)
	}
	defer sn.Remove(ctx, key)
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatalf("mounting %+v: %v", mounts, err)
	}
	defer mount.UnmountAll(dir, 0)
	tree := map[string]string{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		v := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			v += " -> " + target
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			v += " " + hex.EncodeToString(h.Sum(nil))
		}
		tree[rel] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func equalTrees(t *testing.T, got, want map[string]string) bool {
	t.Helper()
	ok := len(got) == len(want)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q", p, got[p], w)
			ok = false
		}
	}
	t.Logf("%d entries compared", len(want))
	return ok
}
