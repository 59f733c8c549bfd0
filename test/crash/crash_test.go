package crash

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	fp "github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/test/ociarchive"
)

// crashCase drives one operation into a failpoint and checks what is
// left after the daemon restarted without it.
type crashCase struct {
	fp string
	// then is armed for the first restart, which dies there too (a
	// failpoint reached by start-up reconciliation).
	then string
	// drive runs the operation; the daemon dies in it, so it must fail.
	drive func(t *testing.T, n int) error
	// check runs after the clean restart, before gc.
	check func(t *testing.T, n int)
	// leaves is what `gc --dry-run` must list after check (leftover
	// strings: kind, "not-in-pool", the snapshot key's first part).
	leaves []string
	// stopContainerd stops containerd once the daemon died, so its own
	// garbage collection cannot race gc for what the crash left (a
	// remote-fill snapshot it does not know); after gc it starts again
	// and after runs.
	stopContainerd bool
	after          func(t *testing.T, n int)
}

// TestCrashMatrix kills the daemon at every failpoint of the snapshotter,
// the remote layer fill and process-image in turn, restarts it on the same
// root_dir and pool without failpoints, and checks after each crash that:
//   - the interrupted operation left nothing that passes for finished
//     (no snapshot, template, committed base or image that was not
//     complete), and an interrupted process-image run resumes and finishes;
//   - `gc --dry-run` lists exactly what that crash must leave (a half-made
//     device, a remote-fill snapshot, or nothing), `gc --force` removes
//     it and a second dry run is empty;
//   - the metadata then holds no journal entry, no snapshot or device in
//     a transitional state and no orphan;
//   - images imported before still run (their committed snapshots mount
//     and read back) via containerd, whenever containerd is up.
func TestCrashMatrix(t *testing.T) {
	dmtest.Require(t)
	start := time.Now()
	// No spare devices: the template and Prepare failpoints are on the
	// paths a parentless Prepare takes without them. With spares, the
	// template is made in the background at start-up and Prepare claims a
	// spare; spare creation's failpoints run in TestCrashInMounts.
	// remote_fill_wait: the unpack that drives a remote fill case waits
	// for the fill however slow the VM is, so the daemon dies inside it
	// (with the default 5s a slow fill would be left to the background
	// and containerd would unpack the layer itself).
	e := newEnv(t, "", "spare_devices = 0\nremote_fill_wait = 300")
	ctx := context.Background()
	base := makeImage(t, "images/base.tar", "base image", 1)
	e.put(base)
	const ociRef = "docker.io/flyio/crash:1"
	const otherNS = "other"

	var results []string
	var imported []image
	runCase := func(n int, c crashCase) {
		t.Helper()
		t0 := time.Now()
		e.startDaemon(c.fp)
		e.WaitDaemon()
		if err := c.drive(t, n); err == nil {
			t.Fatalf("%s: the operation succeeded; the daemon should have died in it", c.fp)
		}
		e.waitKilled(c.fp, 60*time.Second)
		if c.stopContainerd {
			e.StopProc(e.Ctrd)
			e.Ctrd = nil
		}
		if c.then != "" {
			e.startDaemon(c.then)
			e.waitKilled(c.then, 60*time.Second)
		}
		e.startDaemon("")
		e.WaitDaemon()
		e.waitContainerdReconnects()
		if c.check != nil {
			c.check(t, n)
		}
		// containerd removes the snapshots of finished `ctr run --rm`
		// containers from us in its own garbage collection, which runs
		// later; until then gc rightly lists them as unreferenced. Collect
		// containerd's garbage first, so gc sees only the crash's.
		if e.Ctrd != nil {
			e.gcSync()
		}
		left := e.collect(c.fp, c.leaves)
		if c.stopContainerd {
			e.StartContainerd()
		}
		if c.after != nil {
			c.after(t, n)
		}
		if e.Ctrd != nil {
			e.checkImage(base, fmt.Sprintf("base-after-%d", n))
			out := e.Ctr("run", "--rm", "--snapshotter", "flyio", ociRef, fmt.Sprintf("oci-after-%d", n), "/bin/sh", "-c", ociarchive.CheckScript)
			if out != ociarchive.CheckWant {
				t.Errorf("after %s: container of %s:\n%s\nwant:\n%s", c.fp, ociRef, out, ociarchive.CheckWant)
			}
			// The containers' snapshots go while the daemon can still
			// be reached, not at some later collection.
			e.gcSync()
		}
		e.StopDaemon()
		meta := e.checkMeta(0)
		name := c.fp
		if c.then != "" {
			name += "+" + c.then
		}
		r := fmt.Sprintf("%-28s %5.1fs  gc listed: %s; after gc: %s", name, time.Since(t0).Seconds(), left, meta)
		results = append(results, r)
		t.Log(r)
	}

	notFound := func(key string) func(t *testing.T, n int) {
		return func(t *testing.T, n int) {
			k := fmt.Sprintf(key, n)
			if info, err := e.sn().Stat(ctx, k); !errdefs.IsNotFound(err) {
				t.Errorf("snapshot %q after the crash: %+v, %v; want not found", k, info, err)
			}
		}
	}
	prepare := func(key string) func(t *testing.T, n int) error {
		return func(t *testing.T, n int) error {
			_, err := e.sn().Prepare(ctx, fmt.Sprintf(key, n), "")
			return err
		}
	}
	orphan := []string{string(gc.KindOrphaned)}
	orphanNotInPool := []string{string(gc.KindOrphaned) + " not-in-pool"}

	// Templates first, on a pool that has none: every crash leaves an
	// orphaned device and no template, so the next Prepare makes another.
	n := 0
	for _, p := range []string{fp.TemplateAfterReserve, fp.TemplateAfterCreateThin, fp.TemplateMounted, fp.TemplateAfterMkfs, fp.TemplateAfterDeactivate} {
		n++
		leaves := orphan
		if p == fp.TemplateAfterReserve {
			leaves = orphanNotInPool
		}
		runCase(n, crashCase{fp: p, drive: prepare("tpl-%d"), check: notFound("tpl-%d"), leaves: leaves})
	}
	st := e.meta()
	st.View(func(tx *metadata.Tx) error {
		return tx.Templates(func(tp *metadata.Template) error {
			t.Errorf("template %s recorded after crashes in template creation", tp.Name)
			return nil
		})
	})
	st.Close()

	// What later crashes must not disturb: a process-image base and a
	// three-layer image imported by containerd, whose layers go to the S3
	// layer store for the remote fill cases.
	t0 := time.Now()
	e.startDaemon("")
	e.WaitDaemon()
	e.StartContainerd()
	if out, err := e.processImage(base); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("%s", out)
	}
	ociTar := e.importOCI(ociRef)
	e.checkImage(base, "base-first")
	if out, err := e.Fim("push-layers", ociRef); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("push-layers:\n%s", out)
	}
	e.gcSync()
	e.StopDaemon()
	t.Logf("set-up (process-image, ctr import, push-layers) %.1fs", time.Since(t0).Seconds())

	// Remote layer fill: containerd unpacks the same image in another
	// namespace, which has none of its snapshots, so the daemon fills the
	// first layer from the layer store and dies in it. The interrupted
	// fill is a remote-fill snapshot gc removes; the import then succeeds
	// from the layer store.
	for _, p := range []string{fp.RemoteAfterPrepare, fp.RemoteMounted, fp.RemoteAfterExtract} {
		n++
		runCase(n, crashCase{fp: p, stopContainerd: true,
			drive: func(t *testing.T, n int) error {
				_, err := e.CtrNS(otherNS, "images", "import", "--snapshotter", "flyio", ociTar)
				return err
			},
			leaves: []string{string(gc.KindRemoteFill) + " remote-fill/"},
			after: func(t *testing.T, n int) {
				if _, err := e.CtrNS(otherNS, "images", "import", "--snapshotter", "flyio", ociTar); err != nil {
					t.Fatalf("importing %s again after the crash at %s: %v", ociRef, p, err)
				}
				out, err := e.CtrNS(otherNS, "run", "--rm", "--snapshotter", "flyio", ociRef, fmt.Sprintf("remote-%d", n), "/bin/sh", "-c", ociarchive.CheckScript)
				if err != nil || out != ociarchive.CheckWant {
					t.Errorf("container of %s filled from the layer store: %v\n%s\nwant:\n%s", ociRef, err, out, ociarchive.CheckWant)
				}
				if _, err := e.CtrNS(otherNS, "images", "rm", "--sync", ociRef); err != nil {
					t.Error(err)
				}
			}})
	}
	// containerd's GC removes backend snapshots it does not know, such as
	// the keys the snapshotter-level cases make straight on our socket:
	// it is stopped while they run.
	e.StopProc(e.Ctrd)
	e.Ctrd = nil

	for _, p := range []string{fp.PrepareAfterReserve, fp.PrepareAfterCreateSnap, fp.PrepareAfterActivate} {
		n++
		leaves := orphan
		if p == fp.PrepareAfterReserve {
			leaves = orphanNotInPool
		}
		runCase(n, crashCase{fp: p, drive: prepare("prep-%d"), check: notFound("prep-%d"), leaves: leaves})
	}

	// Commit: the active snapshot holds a file; after the crash it is still
	// the active snapshot, not committed, with the file.
	for _, p := range []string{fp.CommitAfterBegin, fp.CommitAfterDeactivate, fp.CommitBeforeRename} {
		n++
		runCase(n, crashCase{fp: p,
			drive: func(t *testing.T, n int) error {
				key := fmt.Sprintf("com-%d", n)
				mounts, err := e.sn().Prepare(ctx, key, "")
				if err != nil {
					t.Fatal(err)
				}
				writeVia(t, mounts, "commit.txt", key)
				return e.sn().Commit(ctx, key+"-done", key)
			},
			check: func(t *testing.T, n int) {
				key := fmt.Sprintf("com-%d", n)
				notFound(key+"-done")(t, n)
				info, err := e.sn().Stat(ctx, key)
				if err != nil || info.Kind != snapshots.KindActive {
					t.Fatalf("active snapshot %q after a crashed commit: %+v, %v", key, info, err)
				}
				mounts, err := e.sn().Mounts(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if got := readVia(t, mounts, "commit.txt"); got != key {
					t.Errorf("%s/commit.txt after a crashed commit: %q, want %q", key, got, key)
				}
				if err := e.sn().Remove(ctx, key); err != nil {
					t.Errorf("removing %s after a crashed commit: %v", key, err)
				}
			}})
	}

	removeDrive := func(t *testing.T, n int) error {
		key := fmt.Sprintf("rm-%d", n)
		if _, err := e.sn().Prepare(ctx, key, ""); err != nil {
			t.Fatal(err)
		}
		return e.sn().Remove(ctx, key)
	}
	// Remove only marks (the record goes, the device is marked deleting);
	// the background reaper or Cleanup does the dm work. The daemon dies
	// in Remove, or in the reaper or the Cleanup that follow it (Cleanup's
	// call fails then, whichever of the two got there first).
	removeAndClean := func(t *testing.T, n int) error {
		if err := removeDrive(t, n); err != nil {
			return err
		}
		return e.sn().(snapshots.Cleaner).Cleanup(ctx)
	}
	n++
	runCase(n, crashCase{fp: fp.RemoveAfterMark, drive: removeDrive, check: notFound("rm-%d")})
	for _, p := range []string{fp.CleanupAfterDeactivate, fp.CleanupAfterDelete} {
		n++
		runCase(n, crashCase{fp: p, drive: removeAndClean, check: notFound("rm-%d")})
	}
	n++
	runCase(n, crashCase{fp: fp.RemoveAfterMark, then: fp.CleanupAfterDelete, drive: removeDrive, check: notFound("rm-%d")})

	e.startDaemon("")
	e.WaitDaemon()
	e.StartContainerd()
	e.StopDaemon()

	// process-image: every interrupted run resumes at the next start and
	// finishes; the request, repeated, joins it. What the crashed attempt
	// made is removed by the resumed run, so gc finds nothing.
	for _, p := range []string{fp.ImportAfterQueued, fp.ImportAfterDownloading, fp.ImportAfterPrepare, fp.ImportMidExtract,
		fp.ImportAfterExtract, fp.ImportBeforeCommit, fp.ImportAfterCommit, fp.ImportAfterRegister, fp.ImportBeforeDone} {
		n++
		im := makeImage(t, fmt.Sprintf("images/crash-%d.tar", n), "crash image "+p, int64(n))
		e.put(im)
		imported = append(imported, im)
		runCase(n, crashCase{fp: p,
			drive: func(t *testing.T, n int) error {
				out, err := e.processImage(im)
				if err == nil {
					t.Logf("process-image:\n%s", out)
				}
				return err
			},
			check: func(t *testing.T, n int) {
				out, err := e.processImage(im)
				if err != nil {
					t.Fatalf("process-image after the crash at %s: %v", p, err)
				}
				if !strings.Contains(out, "done: image "+im.ref()) {
					t.Errorf("process-image after the crash: %s", out)
				}
				e.checkImage(im, fmt.Sprintf("img-%d", n))
				if out := e.Ctr("snapshots", "--snapshotter", "flyio", "ls"); strings.Contains(out, "flyio-import-") {
					t.Errorf("an import snapshot is left in containerd after the run finished:\n%s", out)
				}
			}})
	}

	// Everything imported is still there, and after containerd's GC our
	// snapshots are exactly containerd's: no leftover of a crashed run.
	e.startDaemon("")
	e.WaitDaemon()
	e.waitContainerdReconnects()
	for i, im := range imported {
		e.checkImage(im, fmt.Sprintf("final-%d", i))
	}
	e.gcSync()
	ours := 0
	e.sn().Walk(ctx, func(context.Context, snapshots.Info) error { ours++; return nil })
	theirs := countLines(e.Ctr("snapshots", "--snapshotter", "flyio", "ls")) - 1
	if ours != theirs {
		t.Errorf("the daemon has %d snapshots, containerd knows %d:\n%s", ours, theirs, e.Ctr("snapshots", "--snapshotter", "flyio", "ls"))
	}
	e.collect("the whole matrix", nil)
	e.StopDaemon()
	e.checkMeta(0)
	t.Logf("crash matrix: %d failpoints in %s:\n%s", n, time.Since(start).Round(time.Second), strings.Join(results, "\n"))
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return l }

func countLines(s string) int { return len(strings.Split(strings.TrimSpace(s), "\n")) }

// importOCI imports the Go-built three-layer test image with ctr and
// returns the path of its archive.
func (e *env) importOCI(ref string) string {
	e.T.Helper()
	img, err := ociarchive.TestImage(ref, ociarchive.BusyboxPath)
	if err != nil {
		e.T.Fatal(err)
	}
	path := filepath.Join(e.Dir, "oci.tar")
	f, err := os.Create(path)
	if err != nil {
		e.T.Fatal(err)
	}
	if err := ociarchive.Write(f, img); err != nil {
		e.T.Fatal(err)
	}
	f.Close()
	e.Ctr("images", "import", "--snapshotter", "flyio", path)
	return path
}

// gcSync makes containerd collect garbage now: deleting a lease with
// --sync runs a full collection, snapshots included.
func (e *env) gcSync() {
	e.T.Helper()
	id := strings.TrimSpace(e.Ctr("leases", "create"))
	if f := strings.Fields(id); len(f) > 0 {
		id = f[0]
	}
	e.Ctr("leases", "rm", "--sync", id)
}

// checkMeta reads the metadata of the stopped daemon and checks that
// reconciliation left no journal entry and no snapshot or device in a
// transitional state, that exactly wantOrphans devices are orphaned, and
// that every ready device belongs to a snapshot or a template or is a
// spare. It returns a one-line summary.
func (e *env) checkMeta(wantOrphans int) string {
	e.T.Helper()
	st := e.meta()
	defer st.Close()
	owners := map[uint32]string{}
	states := map[metadata.DeviceState]int{}
	var summary []string
	err := st.View(func(tx *metadata.Tx) error {
		ops, err := tx.Ops()
		if err != nil {
			return err
		}
		for _, op := range ops {
			e.T.Errorf("unfinished op after reconciliation: %+v", op)
		}
		tx.Snapshots(func(key string, s *metadata.Snapshot, err error) error {
			if err != nil {
				e.T.Errorf("snapshot %q: %v", key, err)
				return nil
			}
			if s.State != metadata.SnapshotReady {
				e.T.Errorf("snapshot %q is %s after reconciliation", key, s.State)
			}
			owners[s.DeviceID] = key
			return nil
		})
		tx.Templates(func(tp *metadata.Template) error {
			owners[tp.DeviceID] = "template " + tp.Name
			return nil
		})
		return tx.Devices(func(id uint32, d *metadata.Device, err error) error {
			if err != nil {
				e.T.Errorf("device %d: %v", id, err)
				return nil
			}
			states[d.State]++
			switch d.State {
			case metadata.DeviceReady:
				if owners[id] == "" && d.Role != metadata.RoleSpare {
					e.T.Errorf("device %d (%s) is ready but no snapshot or template uses it", id, d.Owner)
				}
			case metadata.DeviceOrphaned:
				summary = append(summary, fmt.Sprintf("orphan %d (%s %s)", id, d.Role, d.Owner))
			default:
				e.T.Errorf("device %d (%s) is %s after reconciliation", id, d.Owner, d.State)
			}
			return nil
		})
	})
	if err != nil {
		e.T.Fatal(err)
	}
	for id, owner := range owners {
		var ok bool
		st.View(func(tx *metadata.Tx) error {
			d, err := tx.Device(id)
			ok = err == nil && d.State == metadata.DeviceReady
			return nil
		})
		if !ok {
			e.T.Errorf("%s uses device %d, which is not a ready device", owner, id)
		}
	}
	if states[metadata.DeviceOrphaned] != wantOrphans {
		e.T.Errorf("%d orphaned devices, want %d: %v", states[metadata.DeviceOrphaned], wantOrphans, summary)
	}
	return fmt.Sprintf("%d snapshots/templates, devices %v; %s", len(owners), states, strings.Join(summary, ", "))
}

// writeVia mounts a snapshot, writes name with content and unmounts.
func writeVia(t *testing.T, mounts []mount.Mount, name, content string) {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readVia(t *testing.T, mounts []mount.Mount, name string) string {
	t.Helper()
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Error(err)
	}
	return string(b)
}

// waitContainerdReconnects waits until containerd reaches the restarted
// daemon again. containerd's proxy connection backs off (up to 3s) while
// the daemon is down, and fails calls fast until it reconnects.
func (e *env) waitContainerdReconnects() {
	e.T.Helper()
	if e.Ctrd == nil {
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := e.CtrErr("snapshots", "--snapshotter", "flyio", "ls")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			e.T.Fatalf("containerd does not reach the restarted daemon: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
