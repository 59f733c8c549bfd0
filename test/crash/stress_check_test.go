package crash

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
)

// check holds the model against the daemon, containerd and the kernel
// after a step. deep also reads back every snapshot's files.
func (s *stress) check(deep bool) {
	s.t.Helper()
	if s.e.Daemon.Exited() {
		s.fatalf("the daemon exited:\n%s", tail(s.e.DaemonLog(), 40))
	}
	got := map[string]snapshots.Info{}
	if err := s.sn().Walk(s.ctx, func(_ context.Context, i snapshots.Info) error { got[i.Name] = i; return nil }); err != nil {
		s.fatalf("containerd Walk: %v", err)
	}
	s.compareInfos("containerd", got)
	s.checkRecords()
	s.checkKernel()
	if deep {
		s.deepChecks++
		for _, n := range s.names() {
			s.verify(s.snaps[n])
		}
	}
}

// compareInfos checks that got (by containerd name) is the model.
func (s *stress) compareInfos(what string, got map[string]snapshots.Info) {
	s.t.Helper()
	for name, i := range got {
		if s.snaps[name] == nil {
			s.fatalf("%s has snapshot %s (%v), which the model does not hold (dead: %v)", what, name, i.Kind, s.dead[name])
		}
	}
	for _, n := range s.names() {
		sn := s.snaps[n]
		i, ok := got[n]
		if !ok {
			s.fatalf("%s lost the model's %v snapshot %s (parent %q)", what, sn.kind, n, sn.parent)
		}
		if i.Kind != sn.kind || i.Parent != sn.parent {
			s.fatalf("%s: %s is %v with parent %q, want %v with parent %q", what, n, i.Kind, i.Parent, sn.kind, sn.parent)
		}
	}
}

// stressInventory is the daemon's records (admin API): the snapshots of
// our namespace by containerd name, and every thin id a record names.
type stressInventory struct {
	byName map[string]*admin.SnapshotNode
	ids    map[uint32]string // thin id -> what names it
}

func (s *stress) inventory() stressInventory {
	s.t.Helper()
	tree, err := s.admin.Snapshots(context.Background())
	if err != nil {
		s.fatalf("inventory: %v", err)
	}
	inv := stressInventory{byName: map[string]*admin.SnapshotNode{}, ids: map[uint32]string{}}
	tree.Walk(func(n *admin.SnapshotNode, _ int) {
		if n.Namespace == namespace {
			inv.byName[n.Name] = n
		}
		inv.ids[n.DeviceID] = "snapshot " + n.Key
	})
	for _, d := range tree.Devices {
		inv.ids[d.ID] = fmt.Sprintf("%s %s %s", d.Role, d.State, d.Owner)
	}
	return inv
}

// poolIDs lists the thin ids in the pool, from a metadata snapshot.
func (s *stress) poolIDs() map[uint32]bool {
	s.t.Helper()
	md, err := thinmeta.ReadPool(context.Background(), s.e.Cfg.Pool.Name)
	if err != nil {
		s.fatalf("reading the pool's thin ids: %v", err)
	}
	ids := map[uint32]bool{}
	for _, d := range md.Devices {
		ids[d.ID] = true
	}
	return ids
}

// checkRecords: every model snapshot has a ready record of its kind and
// parent whose device is in the pool, and every thin id in the pool is
// named by a record. The pool is read before the records: a device is
// recorded before it is created, so a spare the daemon makes in the
// background is never unaccounted; one deleted between the two reads
// is, so an unaccounted id is read again before it counts.
func (s *stress) checkRecords() {
	s.t.Helper()
	pool := s.poolIDs()
	inv := s.inventory()
	for _, n := range s.names() {
		sn := s.snaps[n]
		r := inv.byName[n]
		if r == nil {
			s.fatalf("the daemon has no record of the model's %v snapshot %s", sn.kind, n)
		}
		if r.Kind != sn.kind.String() || r.State != "ready" {
			s.fatalf("the daemon's record of %s is %s %s, want %v ready", n, r.Kind, r.State, sn.kind)
		}
		wantParent := ""
		if sn.parent != "" {
			wantParent = inv.byName[sn.parent].Key
		}
		if r.Parent != wantParent {
			s.fatalf("the daemon's record of %s has parent %q, want %q (%s)", n, r.Parent, wantParent, sn.parent)
		}
		if !pool[r.DeviceID] {
			s.fatalf("the model's snapshot %s (key %s) has device %d, which is not in the pool", n, r.Key, r.DeviceID)
		}
	}
	var unknown []uint32
	for id := range pool {
		if _, ok := inv.ids[id]; !ok {
			unknown = append(unknown, id)
		}
	}
	if len(unknown) == 0 {
		return
	}
	time.Sleep(time.Second)
	pool, inv = s.poolIDs(), s.inventory()
	for _, id := range unknown {
		if _, ok := inv.ids[id]; pool[id] && !ok {
			s.fatalf("thin id %d is in the pool, but no record names it", id)
		}
	}
}

// checkKernel: nothing of the pool is mounted, the pool has its two loop
// devices and no more, and the daemon's fds and goroutines do not grow.
// What the daemon does in the background (a template mounted to be
// formatted, a spare's refill) may hold some for a moment, so a figure
// above the limit is read again for up to 60 s before it counts (a template mkfs and mount under TCG can take that long).
func (s *stress) checkKernel() {
	s.t.Helper()
	if s.leak.pid != s.e.Daemon.Cmd.Process.Pid {
		// The first check of a daemon's life sets its baseline.
		s.leak = s.e.leakBase(s.t)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		problem := s.kernelProblem()
		if problem == "" {
			return
		}
		if time.Now().After(deadline) {
			s.fatalf("%s", problem)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Leak limits over a daemon's baseline: far below what one leak per
// operation adds over a daemon's life (tens to hundreds of operations).
// Measured (CI-equivalent run, 60 operations): at most 2 fds and 11
// goroutines over the baseline at a check, each check settling for up to
// a minute; the limits leave four and three times that.
const (
	fdSlack        = 8
	goroutineSlack = 32
)

func (s *stress) kernelProblem() string {
	if ms := mountsOf(s.t, s.e.Cfg.Pool.Name); len(ms) != 0 {
		return fmt.Sprintf("%s is mounted on %s between operations", ms[0].Source, ms[0].Mountpoint)
	}
	if loops := s.e.loopsOfPool(s.t); len(loops) != 2 {
		return fmt.Sprintf("the pool has %d loop devices, want its data and metadata files': %v", len(loops), loops)
	}
	now := s.e.leakBase(s.t)
	if now.fds > s.leak.fds+fdSlack {
		return fmt.Sprintf("the daemon has %d fds open, %d when it started: an fd leak; open now: %s", now.fds, s.leak.fds, fdTargets(now.pid))
	}
	if now.goroutines > s.leak.goroutines+goroutineSlack {
		return fmt.Sprintf("the daemon runs %d goroutines, %d when it started: a goroutine leak", now.goroutines, s.leak.goroutines)
	}
	s.fdsOver = max(s.fdsOver, now.fds-s.leak.fds)
	s.goroutinesOver = max(s.goroutinesOver, now.goroutines-s.leak.goroutines)
	return ""
}

// verify reads a snapshot's files back and compares them with the
// model: an active snapshot or a view through its own mounts, a
// committed one through a view made for the purpose and removed after.
func (s *stress) verify(sn *stressSnap) {
	s.t.Helper()
	name := sn.name
	var mounts []mount.Mount
	var err error
	if sn.kind == snapshots.KindCommitted {
		name = fmt.Sprintf("chk%d-%s", s.step, sn.name)
		mounts, err = s.sn().View(s.ctx, name, sn.name)
		defer func() {
			if err := s.sn().Remove(s.ctx, name); err != nil {
				s.fatalf("removing the check view %s: %v", name, err)
			}
		}()
	} else {
		mounts, err = s.sn().Mounts(s.ctx, name)
	}
	if err != nil {
		s.fatalf("mounts of %s (%s): %v", sn.name, name, err)
	}
	got, err := readTree(s.e.Dir, mounts)
	if err != nil {
		s.fatalf("reading %s: %v", sn.name, err)
	}
	for _, f := range slices.Sorted(maps.Keys(sn.files)) {
		if got[f] != sn.files[f] {
			s.fatalf("the model's %v snapshot %s lost or changed %s (sha256 %q, want %q)", sn.kind, sn.name, f, got[f], sn.files[f])
		}
	}
	for _, f := range slices.Sorted(maps.Keys(got)) {
		if _, ok := sn.files[f]; !ok {
			s.fatalf("%v snapshot %s has a file %s the model never wrote there", sn.kind, sn.name, f)
		}
	}
}

func sum(b []byte) string { return fmt.Sprintf("%x", sha256.Sum256(b)) }

// withMounted mounts mounts on a fresh directory under dir, runs fn on
// it and unmounts.
func withMounted(dir string, mounts []mount.Mount, fn func(root string) error) (err error) {
	root, err := os.MkdirTemp(dir, "mnt-")
	if err != nil {
		return err
	}
	defer os.Remove(root)
	if err := mount.All(mounts, root); err != nil {
		return err
	}
	defer func() {
		if uerr := mount.UnmountAll(root, 0); uerr != nil && err == nil {
			err = uerr
		}
	}()
	return fn(root)
}

func writeTree(dir string, mounts []mount.Mount, path string, data []byte) error {
	return withMounted(dir, mounts, func(root string) error {
		return os.WriteFile(filepath.Join(root, path), data, 0o644)
	})
}

// readTree returns the sha256 of every regular file of the mounted
// snapshot but ext4's lost+found.
func readTree(dir string, mounts []mount.Mount) (map[string]string, error) {
	out := map[string]string{}
	err := withMounted(dir, mounts, func(root string) error {
		return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			if d.IsDir() {
				if rel == "lost+found" {
					return filepath.SkipDir
				}
				return nil
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = sum(b)
			return nil
		})
	})
	return out, err
}

// leakBase is what the daemon holds at a moment: its pid, open fds and
// goroutines (from pprof on debug_address).
type leakBase struct{ pid, fds, goroutines int }

func (e *env) leakBase(t *testing.T) leakBase {
	t.Helper()
	pid := e.Daemon.Cmd.Process.Pid
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("the daemon's fds: %v", err)
	}
	return leakBase{pid: pid, fds: len(fds), goroutines: e.goroutines(t)}
}

// fdTargets summarises what a process's fds point at.
func fdTargets(pid int) string {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	count := map[string]int{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if i := strings.Index(l, ":["); i > 0 {
			l = l[:i] // socket:[123], pipe:[456]
		}
		count[l]++
	}
	var out []string
	for l, n := range count {
		out = append(out, fmt.Sprintf("%s x%d", l, n))
	}
	slices.Sort(out)
	return strings.Join(out, ", ")
}

// goroutines reads the daemon's goroutine count from pprof's first line,
// "goroutine profile: total N".
func (e *env) goroutines(t *testing.T) int {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.Cfg.DebugAddress)
		},
	}}
	resp, err := c.Get("http://daemon/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatalf("the daemon's goroutines: %v", err)
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		t.Fatalf("the daemon's goroutines: %q: %v", line, err)
	}
	return n
}

// loopsOfPool lists the loop devices whose backing file is under the
// env's directory.
func (e *env) loopsOfPool(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // detached meanwhile
		}
		if back := strings.TrimSpace(string(b)); strings.HasPrefix(back, e.Dir+"/") {
			out = append(out, strings.Split(f, "/")[3]+"="+back)
		}
	}
	slices.Sort(out)
	return out
}

// setTopLevel adds a top-level key to the daemon's configuration (one
// newEnv does not write) and reloads it.
func (e *env) setTopLevel(key, value string) {
	e.T.Helper()
	b, err := os.ReadFile(e.CfgPath)
	if err != nil {
		e.T.Fatal(err)
	}
	writeFile(e.T, e.CfgPath, fmt.Sprintf("%s = %q\n", key, value)+string(b))
	if e.Cfg, err = config.Load(e.CfgPath, true); err != nil {
		e.T.Fatal(err)
	}
}
