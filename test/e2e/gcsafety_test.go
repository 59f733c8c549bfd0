package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// TestGCHeldMetadataSnapshot: a metadata snapshot left held (a
// reserve_metadata_snap nobody released) freezes the pool's view. A
// container created after it must not look like "a record without
// device": gc refuses the stale view, says how to release it, and the
// stopped container keeps its snapshot and data.
func TestGCHeldMetadataSnapshot(t *testing.T) {
	dmtest.Require(t)
	// No spares: the container's device is created after the snapshot
	// is taken, as in the reported case.
	e := startEnv(t, withSpares(0))
	const ref = "docker.io/flyio/e2e:1"
	e.importImage(ref)
	if _, err := dmpool.Message(e.Cfg.Pool.Name, "reserve_metadata_snap"); err != nil {
		t.Fatal(err)
	}
	released := false
	t.Cleanup(func() {
		if !released {
			dmpool.Message(e.Cfg.Pool.Name, "release_metadata_snap")
		}
	})
	// Without --rm: the stopped container's writable layer stays.
	e.Ctr("run", "--snapshotter", "flyio", ref, "held1", "/bin/sh", "-c", "cat /data/kept 2>/dev/null; echo kept > /data/kept; sync")

	out, err := e.flyio("gc", "--force", "--min-age", "0s")
	t.Logf("gc --force with a held metadata snapshot:\n%s", out)
	if err == nil || !strings.Contains(out, "pool release-metadata-snap") {
		t.Errorf("gc --force did not refuse the held snapshot (err %v)", err)
	}
	if ls := e.Ctr("snapshots", "--snapshotter", "flyio", "ls"); !strings.Contains(ls, "held1") {
		t.Fatalf("the stopped container's snapshot is gone:\n%s", ls)
	}
	if out, err := e.CtrErr("tasks", "start", "held1"); err != nil || !strings.Contains(out, "kept") {
		t.Fatalf("held1 after gc: %q, %v; want its file", out, err)
	}

	out, err = e.flyio("pool", "release-metadata-snap")
	t.Logf("pool release-metadata-snap:\n%s", out)
	if err != nil || !strings.Contains(out, "released") {
		t.Fatalf("release: %v", err)
	}
	released = true
	if st, err := dmpool.TargetStatus(e.Cfg.Pool.Name); err != nil || strings.Fields(st[0].Params)[3] != "-" {
		t.Errorf("still held after the release: %v %v", st, err)
	}
	// With a fresh view: nothing of the container is a leftover.
	for _, it := range e.gcReport("--force").Items {
		t.Errorf("gc --force after the release: %s %s (%s)", it.Kind, it.What(), it.Detail)
	}
	if out, err := e.CtrErr("tasks", "start", "held1"); err != nil || !strings.Contains(out, "kept") {
		t.Errorf("held1 after gc --force: %q, %v", out, err)
	}
}

// TestGCLayerSharedAcrossNamespaces: namespace a unpacks an image from
// the registry; after push-layers, namespace b pulls it through the
// layer store, and containerd adopts a's committed layers for b (the
// remote fill answers ErrAlreadyExists, and containerd takes the first
// committed snapshot with the ref label and parent in our Walk order:
// "a/<n>/<chain id>" sorts before "remote/<chain id>"). Once a deleted its
// image only b uses those layers: gc --force must keep them, and b's
// container must run.
func TestGCLayerSharedAcrossNamespaces(t *testing.T) {
	dmtest.Require(t)
	if _, err := os.Stat(registryBin); err != nil {
		t.Fatalf("%v (apt-get install docker-registry, or run test/tools.sh)", err)
	}
	if os.Getenv("FLYIO_REQUIRE_DM") == "1" {
		t.Setenv(s3test.RequireEnv, "1")
	}
	s := startS3Env(t, withDaemonTOML(`layer_prefix = "layers/"`))
	reg := startRegistry(t, s.env)
	const local = "docker.io/flyio/e2e:1"
	remote := reg + "/test/shared:1"
	s.importImage(local)
	s.Ctr("images", "tag", local, remote)
	s.Ctr("images", "push", "--plain-http", remote)
	s.Ctr("images", "rm", "--sync", local, remote)

	ctrIn := func(ns string, args ...string) string {
		t.Helper()
		out, err := s.Run(filepath.Join(s.Tools, "ctr"), append([]string{"--address", s.Sock, "--namespace", ns}, args...)...)
		if err != nil {
			t.Fatalf("ctr in namespace %s: %v\n%s", ns, err, out)
		}
		return out
	}
	// a: a normal unpack (the layer store is still empty), then the
	// layers go to the layer store.
	ctrIn("a", "images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	push := exec.CommandContext(ctx, s.Bin, "--config", s.CfgPath, "push-layers", "--namespace", "a", remote)
	push.Env = append(append(os.Environ(), "PATH="+s.Path), s.gw.Env()...)
	if out, err := push.CombinedOutput(); err != nil {
		t.Fatalf("push-layers: %v\n%s", err, out)
	} else {
		t.Logf("push-layers:\n%s", out)
	}
	// b: the same image through the layer store.
	ctrIn("b", "images", "pull", "--plain-http", "--snapshotter", "flyio", remote)
	t.Logf("namespace b snapshots:\n%s", ctrIn("b", "snapshots", "--snapshotter", "flyio", "ls"))

	// a forgets the image; containerd keeps what b references.
	ctrIn("a", "images", "rm", "--sync", remote)
	shared := daemonCommitted(t, s.Cfg.Address, "a/")
	t.Logf("namespace a's committed layers left after its rm: %v", shared)
	if len(shared) == 0 {
		t.Fatalf("no committed layer of namespace a is left: containerd did not adopt them for b, so this test proves nothing")
	}
	rep := s.gcReport("--dry-run")
	for _, it := range rep.Items {
		t.Logf("gc --dry-run: %s %s (%s) %s", it.Kind, it.What(), it.Detail, it.Blocked)
		if it.Kind == gc.KindUnreferenced && strings.HasPrefix(it.Snapshot, "a/") {
			t.Errorf("namespace a's layer %s, which b uses, listed as unreferenced", it.Snapshot)
		}
	}
	out, err := s.flyio("gc", "--force", "--min-age", "0s")
	t.Logf("gc --force:\n%s", out)
	if err != nil {
		t.Error(err)
	}
	if left := daemonCommitted(t, s.Cfg.Address, "a/"); len(left) != len(shared) {
		t.Errorf("gc --force removed layers b uses: %v before, %v after", shared, left)
	}
	got, err := s.Run(filepath.Join(s.Tools, "ctr"), "--address", s.Sock, "--namespace", "b",
		"run", "--rm", "--snapshotter", "flyio", remote, "shared", "/bin/sh", "-c", ociarchive.CheckScript)
	if err != nil || got != ociarchive.CheckWant {
		t.Errorf("namespace b's container after gc --force: %v\n%s\nwant:\n%s", err, got, ociarchive.CheckWant)
	}
}

// daemonCommitted lists the daemon's committed snapshots whose key starts
// with prefix (asked of the daemon directly: ctr shows containerd's names).
func daemonCommitted(t *testing.T, addr, prefix string) []string {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sn := snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
	var keys []string
	err = sn.Walk(context.Background(), func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindCommitted && strings.HasPrefix(info.Name, prefix) {
			keys = append(keys, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking the daemon's snapshots: %v", err)
	}
	return keys
}
