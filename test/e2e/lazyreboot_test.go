package e2e

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

// keepScript is the lazy reboot test's container: it prints what it
// wrote in earlier runs, adds a line, prints a file of the image and,
// from its third run on (after the origin is local), the digest of the
// big file, which S3 held back until then.
const keepScript = `cat /root/kept 2>/dev/null; echo kept >> /root/kept; sync; cat /etc/hello; ` +
	`[ "$(wc -l < /root/kept)" -lt 3 ] || sha256sum /big`

// TestLazyReboot is issue 15's "lazily-backed bases are re-attached
// after a reboot" on real parts. A base imported with --lazy while the
// big file's chunks are held back has a container that wrote a file and
// exited, keeping its snapshot. Then a reboot (TestReboot's): containerd
// and the daemon are killed, every dm table and loop of the pool is
// gone, no device of the origin is left (the killed daemon's NBD device
// ends, a loop over the cache would clear itself) and containerd's state
// is empty.
//   - With the chunks still held, the restarted daemon attaches the
//     origin again (a new NBD device, the origin still fetching) and
//     activates the container's snapshot on it, never without it: the
//     container starts and sees what it wrote and the image's files.
//   - Released, the origin becomes local (a loop over the cache) and the
//     base equals the tarball's tree, file for file.
//   - A second reboot with S3 refusing everything: the origin is
//     attached from its cache as a loop device, and the container
//     starts with its data and reads the big file.
func TestLazyReboot(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t, withLazy())
	img := s.publishLazyImage()
	release := s.holdChunks(img.held)
	defer release()

	out, err := s.processImage(cmdTimeout, "--s3-key", img.key, "--lazy")
	if err != nil {
		t.Fatal(err)
	}
	run := s.waitRun(runID(t, out), cmdTimeout)
	if run.State != admin.RunDone || run.Origin == "" || run.ChainID != img.chainID {
		t.Fatalf("lazy run: %s %q origin %q chain %s (want %s)", run.State, run.Error, run.Origin, run.ChainID, img.chainID)
	}
	name := run.Origin
	o := s.jsonOrigin(name)
	t.Logf("origin after the import: %+v", o)
	if o.State != "fetching" || !strings.HasPrefix(o.Device, "/dev/nbd") {
		t.Fatalf("origin after process-image --lazy: %s on %q, want fetching on an NBD device", o.State, o.Device)
	}
	const hello = "hello from a lazy base\n"
	if got := s.Ctr("run", "--snapshotter", "flyio", img.ref, "keep", "/bin/sh", "-c", keepScript); got != hello {
		t.Fatalf("first run of keep printed %q, want %q", got, hello)
	}
	withOrigin := s.originTables(o.Device)
	t.Logf("thin devices on the origin before the reboot: %v", withOrigin)
	if len(withOrigin) == 0 {
		t.Fatalf("no active thin device reads from the origin's %s", o.Device)
	}

	// Reboot with the chunks still held: the origin is re-attached over
	// NBD and the container's device re-activated on it.
	s.reboot()
	s.StartDaemon("daemon-reboot1.log")
	s.WaitDaemon()
	o = s.jsonOrigin(name)
	t.Logf("origin after the first reboot: %+v", o)
	if o.State != "fetching" || !strings.HasPrefix(o.Device, "/dev/nbd") || !nbdConnected(o.Device) {
		t.Fatalf("origin after the reboot: %s on %q (connected %v), want fetching on a connected NBD device", o.State, o.Device, nbdConnected(o.Device))
	}
	if o.ChunksPresent >= o.ChunksTotal {
		t.Fatalf("origin has %d/%d chunks after the reboot with chunks held: the test proves nothing", o.ChunksPresent, o.ChunksTotal)
	}
	s.checkReattached(name, o.Device, withOrigin, "served while its chunks are fetched")
	s.StartContainerd()
	if got := s.Ctr("tasks", "start", "keep"); got != "kept\n"+hello {
		t.Errorf("keep after the first reboot printed %q, want %q", got, "kept\n"+hello)
	}
	s.CtrErr("tasks", "rm", "keep") // gone already if ctr deleted it

	// Released: the origin becomes local, and the base is the tarball's.
	s.proxy.ClearFaults()
	release()
	s.waitUntil("the origin to be local", 5*time.Minute, func() bool { return s.jsonOrigin(name).State == "local" })
	o = s.jsonOrigin(name)
	t.Logf("origin after the fetch: %+v", o)
	if !strings.HasPrefix(o.Device, "/dev/loop") || o.ChunksPresent != o.ChunksTotal {
		t.Fatalf("local origin on %q with %d/%d chunks, want a loop device and every chunk", o.Device, o.ChunksPresent, o.ChunksTotal)
	}
	if got := s.originTables(o.Device); !subset(withOrigin, got) {
		t.Errorf("thin devices on the local origin's %s: %v, want at least %v", o.Device, got, withOrigin)
	}
	if !equalTrees(t, s.baseTree(img.chainID), img.tree) {
		t.Errorf("the lazy base after the reboot differs from the tarball's")
	}

	// Reboot while local, S3 refusing everything: the cache alone serves.
	s.reboot()
	s.proxy.Inject(&s3test.Rule{
		Match: func(*http.Request) bool { return true },
		Fault: s3test.Fault{Status: http.StatusForbidden, Code: "AccessDenied"},
	})
	s.proxy.ResetLog()
	s.StartDaemon("daemon-reboot2.log")
	s.WaitDaemon()
	o = s.jsonOrigin(name)
	t.Logf("origin after the second reboot: %+v", o)
	if o.State != "local" || !strings.HasPrefix(o.Device, "/dev/loop") {
		t.Fatalf("origin after a reboot while local: %s on %q, want local on a loop device", o.State, o.Device)
	}
	if loops := loopsUnder(s.T, filepath.Join(s.Cfg.Lazy.CacheDir, name)); !sameStrings(loops, []string{o.Device}) {
		t.Errorf("loops over origin %s's cache: %v, want its device %s", name, loops, o.Device)
	}
	s.checkReattached(name, o.Device, withOrigin, "attached from its complete local cache")
	s.StartContainerd()
	want := "kept\nkept\n" + hello + hex.EncodeToString(img.bigSum[:]) + "  /big\n"
	if got := s.Ctr("tasks", "start", "keep"); got != want {
		t.Errorf("keep after the second reboot printed %q, want %q", got, want)
	}
	s.CtrErr("tasks", "rm", "keep")
	for _, r := range s.proxy.Requests() {
		if strings.Contains(r.Path, "/"+lazyPrefix) {
			t.Errorf("the local origin asked S3 for %s %s after the reboot", r.Method, r.Path)
		}
	}
	s.Ctr("containers", "rm", "keep")
	s.proxy.ClearFaults()
}

// reboot kills containerd and the daemon and does to the kernel what a
// reboot does (TestReboot's, with the origin's devices): the pool's
// tables and loops are torn down, no NBD device of the killed daemon is
// left connected and no loop over the lazy cache remains, and
// containerd's state is empty.
func (s *s3env) reboot() {
	t := s.T
	t.Helper()
	s.Ctrd.Kill()
	pid := s.Daemon.Cmd.Process.Pid
	s.Daemon.Kill()
	s.TearDownPool()
	if a := activeThins(t, s.Cfg.Pool.Name); len(a) != 0 {
		t.Fatalf("thin devices left after tear-down: %v", a)
	}
	// The killed daemon's NBD connection ends with its socket, and a
	// loop over a cache, autoclear, with the last table using it; both
	// may take the kernel a moment.
	s.waitUntil("no origin device to be left", 30*time.Second, func() bool {
		return len(nbdsOf(t, pid)) == 0 && len(loopsUnder(t, s.Cfg.Lazy.CacheDir)) == 0
	})
	if err := os.RemoveAll(s.ContainerdState()); err != nil {
		t.Fatal(err)
	}
}

// checkReattached checks that after a restart the origin's device dev is
// what the thin devices that read from it before (want, by name) read
// from again (none of them activated without it), that no thin device reads from another device, and that
// the daemon's log says the origin was attached (how) and the devices
// activated on it.
func (s *s3env) checkReattached(name, dev string, want []string, how string) {
	t := s.T
	t.Helper()
	// More may be there: a view containerd removed without its garbage
	// collection having told us yet is active again, on the origin too.
	if got := s.originTables(dev); !subset(want, got) {
		t.Errorf("thin devices on the origin's %s after the reboot: %v, want at least %v", dev, got, want)
	}
	log := s.DaemonLog()
	if !strings.Contains(log, how) || !strings.Contains(log, dev) {
		t.Errorf("the daemon's log does not say origin %s was attached (%q) on %s", name, how, dev)
	}
	for _, d := range want {
		if !strings.Contains(log, "activated device "+d) {
			t.Errorf("the daemon's log does not say %s was activated on the origin", d)
		}
	}
}

// jsonOrigin is origin name as `status --json` shows it.
func (s *s3env) jsonOrigin(name string) admin.Origin {
	s.T.Helper()
	out, err := s.flyio("status", "--json")
	if err != nil {
		s.T.Fatalf("status --json: %v\n%s", err, out)
	}
	var st admin.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		s.T.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, o := range st.Origins {
		if o.Name == name {
			return o
		}
	}
	s.T.Fatalf("status --json has no origin %s: %+v", name, st.Origins)
	return admin.Origin{}
}

// originTables lists the pool's active thin devices whose table has an
// external origin, failing the test for any whose origin is not dev: a
// device on another (a stale) origin device reads garbage or EIO.
func (s *s3env) originTables(dev string) []string {
	t := s.T
	t.Helper()
	want, err := dmpool.OriginDevice(dev)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := dmpool.Inspect(context.Background(), s.PoolConfig())
	if err != nil {
		t.Fatal(err)
	}
	active, err := pool.ListActive(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range active {
		switch a.Origin {
		case "":
		case want:
			out = append(out, a.Name)
		default:
			t.Errorf("thin device %s reads from origin %s, not the origin's %s (%s)", a.Name, a.Origin, dev, want)
		}
	}
	return out
}

// nbdsOf lists the NBD devices process pid serves: the kernel shows the
// pid of the process in NBD_DO_IT while the device is connected. (Only
// ours: packages testing in parallel may have NBD devices of their own.)
func nbdsOf(t *testing.T, pid int) []string {
	t.Helper()
	pids, err := filepath.Glob("/sys/block/nbd*/pid")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pids {
		b, err := os.ReadFile(p)
		if err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(p)))
		}
	}
	return out
}

// nbdConnected reports whether NBD device dev has a server.
func nbdConnected(dev string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "pid"))
	return err == nil
}

// loopsUnder lists the loop devices whose backing file is under dir.
func loopsUnder(t *testing.T, dir string) []string {
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
		if strings.HasPrefix(strings.TrimSpace(string(b)), dir+"/") {
			out = append(out, "/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return out
}

func sameStrings(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

// subset reports whether every string of a is in b.
func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
}
