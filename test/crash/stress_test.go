package crash

import (
	"context"
	"fmt"
	"maps"
	"math/rand"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestStress is the model-based stress test (issue 10 C): a seeded
// sequence of random operations on the real daemon, a real pool and a
// real containerd, checked against a model after every step (see
// stress.check): no snapshot the model holds is lost or changed, every
// thin id in the pool is accounted for, nothing of ours stays mounted,
// no loop device, fd or goroutine leaks.
//
// containerd is in the loop for every operation, not only for its GC:
// our gc's safety rests on containerd's view ("does any namespace still
// use this key?"), and containerd's GC removes every backend snapshot it
// has no record of. Snapshots made straight on our socket would be
// "forgotten by containerd" by definition, so gc --force and containerd's
// GC would rightly remove them and the model would learn nothing about
// whether they remove what is still in use. Through containerd (one
// lease holding the model's snapshots) both must keep exactly the
// model's snapshots, and the test drives our daemon with the very calls
// and keys containerd makes.
//
// make test runs a short run with a fixed seed; make soak a long one:
// FLYIO_SOAK_OPS (operations), FLYIO_SOAK_DURATION (a Go duration; the
// run stops at whichever limit comes first), FLYIO_SOAK_SEED (default
// shortStressSeed for the short run, the clock for a soak; always
// printed). A failure
// prints the seed, the step and the operation log, so the same seed
// replays the same sequence.
func TestStress(t *testing.T) {
	dmtest.Require(t)
	cfg := stressConfigFromEnv(t)
	t.Logf("stress: seed %d, %d operations, duration limit %s (replay: FLYIO_SOAK_DURATION=0 FLYIO_SOAK_SEED=%d FLYIO_SOAK_OPS=%d make soak)",
		cfg.seed, cfg.ops, cfg.duration, cfg.seed, cfg.ops)
	e := newEnv(t, "")
	e.setTopLevel("debug_address", e.Dir+"/debug.sock")
	s := newStress(t, e, cfg)
	defer s.report()
	s.run()
}

// stressConfig is a run's length and seed.
type stressConfig struct {
	seed     int64
	ops      int
	duration time.Duration // 0: no limit
}

// The run in make test: about 2-3 minutes in the VM (1.7-3 s an
// operation under TCG, checks included, by the load on the host). Its
// seed is the one of the soak recorded in docs/benchmarks.md, so the
// short run replays the first steps of a sequence known to pass.
const (
	shortStressOps  = 60
	shortStressSeed = 20261202
)

func stressConfigFromEnv(t *testing.T) stressConfig {
	t.Helper()
	c := stressConfig{seed: shortStressSeed, ops: shortStressOps}
	soak := false
	if v := os.Getenv("FLYIO_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("FLYIO_SOAK_DURATION %q: %v", v, err)
		}
		c.duration, c.ops, soak = d, 1<<30, true
	}
	if v := os.Getenv("FLYIO_SOAK_OPS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("FLYIO_SOAK_OPS %q: want a positive number", v)
		}
		c.ops, soak = n, true
	}
	if soak {
		c.seed = time.Now().UnixNano() % 1e9
	}
	if v := os.Getenv("FLYIO_SOAK_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("FLYIO_SOAK_SEED %q: %v", v, err)
		}
		c.seed = n
	}
	return c
}

// maxStressSnapshots bounds the model, so every deep check stays cheap
// and the pool never fills.
const maxStressSnapshots = 24

// stressSnap is what the model holds of one snapshot: its kind, parent
// and the checksums of every file in it.
type stressSnap struct {
	name   string
	kind   snapshots.Kind
	parent string
	files  map[string]string // path -> sha256
}

type stress struct {
	t   *testing.T
	e   *env
	cfg stressConfig
	rng *rand.Rand

	step int
	op   string
	log  []string

	snaps map[string]*stressSnap
	// dead are names the model dropped (removed, or released to
	// containerd's GC): none may come back.
	dead map[string]bool

	cli *client.Client
	ctx context.Context // namespace and lease
	// direct is a client straight to the daemon's socket, one for the
	// whole run (each connection is an fd of the daemon's).
	direct snapshots.Snapshotter
	// admin is one client of the admin socket for the whole run: each
	// client keeps its own idle connection open in the daemon.
	admin *admin.Client
	lease leases.Lease

	leak leakBase

	counts    map[string]int
	opTime    map[string]time.Duration
	checkTime time.Duration
	restarts  int
	// fdsOver and goroutinesOver are the most the daemon held above its
	// baseline at a check that passed: the leak limits' margin in use.
	fdsOver, goroutinesOver int
	reboots                 int
	gcListed                int
	gcRemoved               int
	ctrdGCGone              int
	deepChecks              int
	start                   time.Time
}

func newStress(t *testing.T, e *env, cfg stressConfig) *stress {
	s := &stress{t: t, e: e, cfg: cfg, rng: rand.New(rand.NewSource(cfg.seed)),
		snaps: map[string]*stressSnap{}, dead: map[string]bool{}, counts: map[string]int{}, opTime: map[string]time.Duration{}, start: time.Now()}
	e.startDaemon("")
	e.WaitDaemon()
	e.StartContainerd()
	s.connect()
	s.direct = e.sn()
	s.admin = admin.NewClient(e.Cfg.AdminAddress)
	l, err := s.cli.LeasesService().Create(namespaces.WithNamespace(context.Background(), namespace), leases.WithID("stress"))
	if err != nil {
		t.Fatal(err)
	}
	s.lease = l
	s.ctx = leases.WithLease(namespaces.WithNamespace(context.Background(), namespace), l.ID)
	return s
}

// connect (re)makes the containerd client: after a reboot containerd is
// a new process.
func (s *stress) connect() {
	if s.cli != nil {
		s.cli.Close()
	}
	cli, err := client.New(s.e.Sock, client.WithTimeout(30*time.Second))
	if err != nil {
		s.t.Fatal(err)
	}
	s.cli = cli
	s.t.Cleanup(func() { cli.Close() })
}

func (s *stress) sn() snapshots.Snapshotter { return s.cli.SnapshotService("flyio") }

// fatalf is a violation: the seed and step say how to replay it.
func (s *stress) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("stress violation (seed %d, step %d, %s): %s", s.cfg.seed, s.step, s.op, fmt.Sprintf(format, args...))
}

func (s *stress) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf("%5d %s", s.step, fmt.Sprintf(format, args...)))
}

// report prints the figures, and on failure the operation log.
func (s *stress) report() {
	kinds := make([]string, 0, len(s.counts))
	for k := range s.counts {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	var by []string
	total := 0
	for _, k := range kinds {
		by = append(by, fmt.Sprintf("%s=%d (%.1fs)", k, s.counts[k], s.opTime[k].Seconds()))
		total += s.counts[k]
	}
	violations := 0
	if s.t.Failed() {
		violations = 1 // the run stops at the first one
		s.t.Logf("stress: operation log of seed %d up to the failing step %d (replay: FLYIO_SOAK_DURATION=0 FLYIO_SOAK_SEED=%d FLYIO_SOAK_OPS=%d make soak):\n%s",
			s.cfg.seed, s.step, s.cfg.seed, s.step, strings.Join(s.log, "\n"))
	}
	s.t.Logf("stress figures: seed %d; %d operations in %s (%s); restarts (kill -9) %d, reboots %d; checks %.1fs, deep checks %d; "+
		"gc listed %d items, removed %d; containerd's GC removed %d snapshots; snapshots in the model at the end %d; "+
		"most over the daemon's baseline at a check: %d fds (limit %d), %d goroutines (limit %d); violations %d",
		s.cfg.seed, total, time.Since(s.start).Round(time.Second), strings.Join(by, " "), s.restarts, s.reboots, s.checkTime.Seconds(), s.deepChecks,
		s.gcListed, s.gcRemoved, s.ctrdGCGone, len(s.snaps), s.fdsOver, fdSlack, s.goroutinesOver, goroutineSlack, violations)
}

// stressOp is one kind of operation: its weight, whether it can run on
// the model as it is, and what it does.
type stressOp struct {
	name   string
	weight int
	can    func() bool
	do     func()
	// deep makes the check after it read back every snapshot's content.
	deep bool
}

func (s *stress) ops() []stressOp {
	room := func() bool { return len(s.snaps) < maxStressSnapshots }
	has := func(k snapshots.Kind) func() bool {
		return func() bool { return len(s.of(k)) > 0 }
	}
	always := func() bool { return true }
	return []stressOp{
		{name: "prepare", weight: 12, can: room, do: s.prepare},
		{name: "view", weight: 5, can: func() bool { return room() && has(snapshots.KindCommitted)() }, do: s.view},
		{name: "write", weight: 16, can: has(snapshots.KindActive), do: s.write},
		{name: "commit", weight: 9, can: has(snapshots.KindActive), do: s.commit},
		{name: "remove", weight: 11, can: func() bool { return len(s.snaps) > 0 }, do: s.remove},
		{name: "walk", weight: 5, can: always, do: s.walk},
		{name: "usage", weight: 5, can: func() bool { return len(s.snaps) > 0 }, do: s.usage},
		{name: "read", weight: 6, can: func() bool { return len(s.snaps) > 0 }, do: s.readOne},
		{name: "gc-dry-run", weight: 3, can: always, do: func() { s.gc(false) }},
		{name: "gc-force", weight: 2, can: always, do: func() { s.gc(true) }, deep: true},
		{name: "containerd-gc", weight: 3, can: always, do: s.containerdGC, deep: true},
		{name: "kill-restart", weight: 2, can: always, do: s.killRestart, deep: true},
		{name: "reboot", weight: 1, can: always, do: s.reboot, deep: true},
	}
}

func (s *stress) run() {
	ops := s.ops()
	for s.step = 1; s.step <= s.cfg.ops; s.step++ {
		if s.cfg.duration > 0 && time.Since(s.start) > s.cfg.duration {
			break
		}
		var feasible []stressOp
		total := 0
		for _, o := range ops {
			if o.can() {
				feasible = append(feasible, o)
				total += o.weight
			}
		}
		pick := s.rng.Intn(total)
		var o stressOp
		for _, o = range feasible {
			if pick < o.weight {
				break
			}
			pick -= o.weight
		}
		s.op = o.name
		s.counts[o.name]++
		t0 := time.Now()
		o.do()
		t1 := time.Now()
		s.check(o.deep || s.step%50 == 0)
		s.opTime[o.name] += t1.Sub(t0)
		s.checkTime += time.Since(t1)
		s.logf("  (%s: %s, check %s)", o.name, t1.Sub(t0).Round(time.Millisecond), time.Since(t1).Round(time.Millisecond))
		if s.step%100 == 0 {
			s.t.Logf("stress: step %d after %s, %d snapshots in the model", s.step, time.Since(s.start).Round(time.Second), len(s.snaps))
		}
	}
	s.step--
	s.op = "final check"
	s.check(true)
}

// of lists the model's snapshots of kind k, sorted (the rng picks by
// index, so the order must not depend on map iteration).
func (s *stress) of(k snapshots.Kind) []*stressSnap {
	var out []*stressSnap
	for _, n := range s.names() {
		if sn := s.snaps[n]; sn.kind == k {
			out = append(out, sn)
		}
	}
	return out
}

func (s *stress) names() []string { return slices.Sorted(maps.Keys(s.snaps)) }

func (s *stress) any() *stressSnap { n := s.names(); return s.snaps[n[s.rng.Intn(len(n))]] }

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.Intn(len(xs))] }

func (s *stress) children(name string) []string {
	var out []string
	for _, n := range s.names() {
		if s.snaps[n].parent == name {
			out = append(out, n)
		}
	}
	return out
}

func (s *stress) newName(prefix string) string { return fmt.Sprintf("%s%d", prefix, s.step) }

func (s *stress) add(name string, kind snapshots.Kind, parent string) *stressSnap {
	files := map[string]string{}
	if p := s.snaps[parent]; p != nil {
		for f, sum := range p.files {
			files[f] = sum
		}
	}
	sn := &stressSnap{name: name, kind: kind, parent: parent, files: files}
	s.snaps[name] = sn
	return sn
}

func (s *stress) drop(name string) {
	delete(s.snaps, name)
	s.dead[name] = true
}

func (s *stress) prepare() {
	parent := ""
	if c := s.of(snapshots.KindCommitted); len(c) > 0 && s.rng.Intn(10) < 7 {
		parent = pick(s.rng, c).name
	}
	name := s.newName("a")
	s.logf("prepare %s parent %q", name, parent)
	if _, err := s.sn().Prepare(s.ctx, name, parent); err != nil {
		s.fatalf("Prepare(%s, %q): %v", name, parent, err)
	}
	s.add(name, snapshots.KindActive, parent)
}

func (s *stress) view() {
	parent := pick(s.rng, s.of(snapshots.KindCommitted)).name
	name := s.newName("v")
	s.logf("view %s of %s", name, parent)
	if _, err := s.sn().View(s.ctx, name, parent); err != nil {
		s.fatalf("View(%s, %s): %v", name, parent, err)
	}
	s.add(name, snapshots.KindView, parent)
	s.verify(s.snaps[name])
}

// write writes a new file, or overwrites one, in an active snapshot.
func (s *stress) write() {
	sn := pick(s.rng, s.of(snapshots.KindActive))
	path := fmt.Sprintf("f%d", s.step)
	if len(sn.files) > 0 && s.rng.Intn(3) == 0 {
		fs := slices.Sorted(maps.Keys(sn.files))
		path = fs[s.rng.Intn(len(fs))]
	}
	data := make([]byte, 1+s.rng.Intn(256<<10))
	s.rng.Read(data)
	s.logf("write %s/%s (%d bytes)", sn.name, path, len(data))
	mounts, err := s.sn().Mounts(s.ctx, sn.name)
	if err != nil {
		s.fatalf("Mounts(%s): %v", sn.name, err)
	}
	if err := writeTree(s.e.Dir, mounts, path, data); err != nil {
		s.fatalf("writing %s into %s: %v", path, sn.name, err)
	}
	sn.files[path] = sum(data)
}

func (s *stress) commit() {
	sn := pick(s.rng, s.of(snapshots.KindActive))
	name := s.newName("c")
	s.logf("commit %s as %s", sn.name, name)
	if err := s.sn().Commit(s.ctx, name, sn.name); err != nil {
		s.fatalf("Commit(%s, %s): %v", name, sn.name, err)
	}
	s.drop(sn.name)
	c := s.add(name, snapshots.KindCommitted, sn.parent)
	c.files = sn.files
	// The model's children of the active snapshot: none (an active
	// snapshot cannot be a parent).
}

// remove removes a leaf; now and then it tries a parent instead, which
// must fail and change nothing.
func (s *stress) remove() {
	var leaves, parents []string
	for _, n := range s.names() {
		if len(s.children(n)) == 0 {
			leaves = append(leaves, n)
		} else {
			parents = append(parents, n)
		}
	}
	if len(parents) > 0 && s.rng.Intn(6) == 0 {
		n := pick(s.rng, parents)
		s.logf("remove %s (has children %v: must fail)", n, s.children(n))
		err := s.sn().Remove(s.ctx, n)
		if err == nil {
			s.fatalf("Remove(%s) of a snapshot with children %v succeeded", n, s.children(n))
		}
		if !errdefs.IsFailedPrecondition(err) {
			s.fatalf("Remove(%s) of a snapshot with children: %v, want FailedPrecondition", n, err)
		}
		return
	}
	n := pick(s.rng, leaves)
	s.logf("remove %s", n)
	if err := s.sn().Remove(s.ctx, n); err != nil {
		s.fatalf("Remove(%s): %v", n, err)
	}
	s.drop(n)
}

// walk compares containerd's Walk, and the daemon's own, with the model.
func (s *stress) walk() {
	s.logf("walk")
	got := map[string]snapshots.Info{}
	if err := s.sn().Walk(s.ctx, func(_ context.Context, i snapshots.Info) error { got[i.Name] = i; return nil }); err != nil {
		s.fatalf("containerd Walk: %v", err)
	}
	s.compareInfos("containerd's Walk", got)
	// The daemon's Walk lists our keys: every model snapshot is there
	// under the backend key its record has, with its kind.
	ours := map[string]snapshots.Info{}
	if err := s.direct.Walk(context.Background(), func(_ context.Context, i snapshots.Info) error { ours[i.Name] = i; return nil }); err != nil {
		s.fatalf("daemon Walk: %v", err)
	}
	inv := s.inventory()
	for _, n := range s.names() {
		i, ok := ours[inv.byName[n].Key]
		if !ok {
			s.fatalf("the daemon's Walk has no snapshot for %s (key %q)", n, inv.byName[n].Key)
		}
		if i.Kind != s.snaps[n].kind {
			s.fatalf("the daemon's Walk: %s is %v, want %v", n, i.Kind, s.snaps[n].kind)
		}
	}
}

func (s *stress) usage() {
	sn := s.any()
	s.logf("usage %s", sn.name)
	u, err := s.sn().Usage(s.ctx, sn.name)
	if err != nil {
		s.fatalf("Usage(%s): %v", sn.name, err)
	}
	if u.Size < 0 || u.Inodes < 0 {
		s.fatalf("Usage(%s) = %+v", sn.name, u)
	}
}

func (s *stress) readOne() {
	sn := s.any()
	s.logf("read %s", sn.name)
	s.verify(sn)
}

// containerdGC releases one to three leaves from the lease and makes
// containerd collect garbage now: they must go (from containerd and
// from us), everything else must stay.
func (s *stress) containerdGC() {
	var leaves []string
	for _, n := range s.names() {
		if len(s.children(n)) == 0 {
			leaves = append(leaves, n)
		}
	}
	s.rng.Shuffle(len(leaves), func(i, j int) { leaves[i], leaves[j] = leaves[j], leaves[i] })
	if len(leaves) > 0 {
		leaves = leaves[:1+s.rng.Intn(min(3, len(leaves)))]
	}
	sort.Strings(leaves)
	s.logf("containerd-gc releasing %v", leaves)
	ls := s.cli.LeasesService()
	for _, n := range leaves {
		if err := ls.DeleteResource(s.ctx, s.lease, leases.Resource{ID: n, Type: "snapshots/flyio"}); err != nil {
			s.fatalf("releasing %s from the lease: %v", n, err)
		}
	}
	s.gcSync()
	for _, n := range leaves {
		if _, err := s.sn().Stat(s.ctx, n); !errdefs.IsNotFound(err) {
			s.fatalf("containerd still has %s after its GC: %v", n, err)
		}
		s.drop(n)
		s.ctrdGCGone++
	}
	// After a synchronous GC the daemon holds exactly what containerd
	// does: what was removed through containerd is gone from us too.
	inv := s.inventory()
	for name := range inv.byName {
		if s.snaps[name] == nil {
			s.fatalf("after containerd's GC the daemon still has %s (key %s), which containerd removed", name, inv.byName[name].Key)
		}
	}
}

// gcSync runs containerd's GC synchronously (a lease deleted with
// SynchronousDelete), with the Go client.
func (s *stress) gcSync() {
	ctx := namespaces.WithNamespace(context.Background(), namespace)
	ls := s.cli.LeasesService()
	l, err := ls.Create(ctx, leases.WithRandomID())
	if err != nil {
		s.fatalf("creating a lease: %v", err)
	}
	if err := ls.Delete(ctx, l, leases.SynchronousDelete); err != nil {
		s.fatalf("containerd's GC (lease delete --sync): %v", err)
	}
}

// gc runs our gc; no item it lists may be a model snapshot or its device.
func (s *stress) gc(force bool) {
	s.logf("gc force=%v", force)
	inv := s.inventory()
	rep, err := s.e.gcReport(force)
	if rep == nil {
		s.fatalf("gc (force %v): %v", force, err)
	}
	for _, it := range rep.Items {
		for name, n := range inv.byName {
			if s.snaps[name] != nil && (it.Snapshot == n.Key || it.DeviceID == n.DeviceID) {
				s.fatalf("gc (force %v) lists %s of the model's snapshot %s (key %s, device %d): %+v", force, it.Kind, name, n.Key, n.DeviceID, it)
			}
		}
		s.logf("  gc item %s dev %d %s removed=%v %s", it.Kind, it.DeviceID, it.Snapshot, it.Removed, it.Error)
	}
	if err != nil {
		s.fatalf("gc --force: %v", err)
	}
	s.gcListed += len(rep.Items)
	s.gcRemoved += rep.Removed
}

func (s *stress) killRestart() {
	s.logf("kill -9 and restart the daemon")
	s.e.Daemon.Kill()
	s.e.startDaemon("")
	s.e.WaitDaemon()
	s.e.waitContainerdReconnects()
	s.restarts++
}

// reboot kills containerd and the daemon and tears every dm device and
// loop device of the pool down, and empties containerd's state: what a
// reboot leaves (TestReboot).
func (s *stress) reboot() {
	s.logf("reboot")
	s.e.Ctrd.Kill()
	s.e.Daemon.Kill()
	s.e.TearDownPool()
	if err := os.RemoveAll(s.e.ContainerdState()); err != nil {
		s.t.Fatal(err)
	}
	s.e.startDaemon("")
	s.e.WaitDaemon()
	s.e.StartContainerd()
	s.connect()
	s.reboots++
}
