// Command rootfsbench times our extractor against GNU tar and containerd's
// layer applier on the same root filesystem tarball, in one run.
//
// Each round extracts the archive once with each tool, in a rotating order,
// each in a child process of its own into a fresh, empty directory of the
// round's own scratch filesystem, a fresh ext4 made like a base's
// (freshfs.go):
//
//	flyio        extract.Extract (Rootfs mode, every check, both digests)
//	tar          GNU tar -xzf ARCHIVE [--numeric-owner -p as root] -C DIR
//	containerd   compression.DecompressStream + pkg/archive.Apply (v2)
//
// The archive is read once beforehand so every tool reads it from the page
// cache; everything is synced before each timed run, untimed, so no tool
// pays for another's writeback, and no tree is removed while others are
// extracted on its filesystem (see run). A run's time is its child's wall time from start to exit,
// without a sync (as `time tar -x` measures); CPU time comes from wait4
// (tar's includes its gzip child), peak RSS from GNU time's %M. After the first
// round the three trees are compared (types, modes, owners, sizes, symlink
// targets, file contents' hashes), so the tools did the same work.
//
// It prints a Markdown table of medians and the ratios of flyio's time to
// each baseline's, per round and overall, and how busy the machine was
// with other work while it ran. It is a benchmark, not a test: it exits 0
// whether or not the target (≤ 0.67× both baselines) is met.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 5 && os.Args[1] == "child" {
		if err := runChild(os.Args[2], os.Args[3], os.Args[4]); err != nil {
			fmt.Fprintln(os.Stderr, "rootfsbench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "rootfsbench:", err)
		os.Exit(1)
	}
}

// gnuTime is GNU time (Debian package "time"), which reports a child's
// peak RSS.
const gnuTime = "/usr/bin/time"

type options struct {
	archive string
	dir     string
	n       int
	tools   []string
	target  float64
	out     string
	keep    bool
	// freshFS: each round extracts into an ext4 made for it (freshfs.go);
	// freshFSWhyNot says why not, when it was asked for and cannot be.
	freshFS       bool
	freshFSWhyNot string
	childEnv      []string // what the "containerd" child needs (applier.go)
	// ctx is cancelled at SIGINT or SIGTERM: no run starts after it, and
	// the round's filesystem is unmounted and removed on the way out.
	ctx context.Context
}

// measurement is one timed extraction.
type measurement struct {
	wall   time.Duration
	cpu    time.Duration // user + system, children included
	maxRSS int64         // bytes
	// otherCPU is the CPU time the whole machine spent on anything but
	// this child during its run: the noise the run was measured under.
	otherCPU time.Duration
}

func run() error {
	var o options
	var tools string
	// Without this, Ctrl-C killed the process between makeFreshFS and
	// remove, leaving the round's ext4 mounted under -dir, its loop
	// device attached and its image on disk. The children see the
	// terminal's SIGINT themselves (GNU time ignores it while it waits)
	// and stop cleanly (child.go).
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	o.ctx = ctx
	flag.StringVar(&o.archive, "archive", "/var/cache/flyio-image-manager/bench/debian-rootfs.tar.gz", "gzip root filesystem tarball (bench/rootfsbench/rootfs.sh makes one)")
	flag.StringVar(&o.dir, "dir", "/var/tmp/rootfsbench", "scratch directory; every tool extracts into a fresh directory under it")
	flag.IntVar(&o.n, "n", 5, "rounds; each round runs every tool once")
	flag.StringVar(&tools, "tools", "flyio,tar,containerd,archive", "tools to run, comma-separated (flyio is compared with the others; archive is for reference, not a target)")
	flag.Float64Var(&o.target, "target", 0.67, "target ratio of flyio's time to each baseline's")
	flag.StringVar(&o.out, "out", "", "also write the report here")
	flag.BoolVar(&o.keep, "keep", false, "keep the trees under -dir (each run needs the archive's size: about 225 MB here)")
	flag.BoolVar(&o.freshFS, "fresh-fs", true, "extract each round into a fresh ext4 made like a base's, loop-mounted under -dir (needs root); false: into -dir's own filesystem")
	flag.Parse()
	o.tools = strings.Split(tools, ",")
	for _, t := range o.tools {
		if _, ok := toolNames[t]; !ok {
			return fmt.Errorf("unknown tool %q", t)
		}
	}
	if os.Geteuid() != 0 && slices.Contains(o.tools, "containerd") {
		// fsApplier applies onto a bind mount and keeps the archive's
		// owners: both need root. pkg/archive.Apply alone still runs.
		o.tools = slices.DeleteFunc(o.tools, func(t string) bool { return t == "containerd" })
		fmt.Fprintln(os.Stderr, "rootfsbench: not root: containerd's layer applier (bind mount, owners) left out")
	}
	if o.n < 1 {
		return fmt.Errorf("-n must be at least 1")
	}
	if _, err := os.Stat(gnuTime); err != nil {
		return fmt.Errorf("%w (apt-get install time)", err)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	st, err := os.Stat(o.archive)
	if err != nil {
		return fmt.Errorf("%w (make it with bench/rootfsbench/rootfs.sh)", err)
	}
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return err
	}
	if o.freshFS {
		if why := canMakeFreshFS(); why != "" {
			o.freshFS, o.freshFSWhyNot = false, why
			fmt.Fprintf(os.Stderr, "rootfsbench: no fresh filesystem per round (%s): extracting into %s's own filesystem\n", why, o.dir)
		}
	}
	work, err := os.MkdirTemp(o.dir, "run.")
	if err != nil {
		return err
	}
	// Every tree stays until the end of its round (of the run, without
	// a fresh filesystem per round): on ext4, creating files right after
	// deleting a large tree costs 3-4 times as much CPU (measured: 2.1 s
	// becomes 7-9 s for every tool, on an idle machine), which would
	// measure the deletion, not the extractor. A round's own filesystem
	// is removed whole (one file), which costs the next round nothing.
	if !o.keep {
		defer os.RemoveAll(work)
	}
	if err := warm(o.archive); err != nil {
		return err
	}
	if slices.Contains(o.tools, "containerd") {
		if o.childEnv, err = ingest(context.Background(), o.archive, work); err != nil {
			return err
		}
	}

	rep := &report{opts: o, archiveSize: st.Size(), start: time.Now(), loadStart: loadavg(), results: map[string][]measurement{}}
	rep.describeHost()
	// An untimed warm-up round: the first extraction after a quiet spell
	// (or after another run's trees were deleted) pays for more than its
	// own work.
	err = inRound(o, work, "warmup", func(dir string) error {
		for _, tool := range o.tools {
			dest := filepath.Join(dir, "warmup."+tool)
			if err := os.Mkdir(dest, 0o755); err != nil {
				return err
			}
			if _, err := measure(o, self, tool, dest); err != nil {
				return fmt.Errorf("warm-up, %s: %w", tool, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for round := 0; round < o.n; round++ {
		err := inRound(o, work, fmt.Sprintf("round%d", round+1), func(dir string) error {
			return runRound(o, rep, self, dir, round)
		})
		if err != nil {
			return err
		}
	}
	rep.end, rep.loadEnd = time.Now(), loadavg()
	text := rep.String()
	fmt.Print(text)
	if o.out != "" {
		return os.WriteFile(o.out, []byte(text), 0o644)
	}
	return nil
}

// inRound runs body in the scratch directory of one round: a fresh
// filesystem made for it and removed after it (see freshfs.go), or work.
func inRound(o options, work, name string, body func(dir string) error) error {
	if err := o.ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if !o.freshFS {
		return body(work)
	}
	fs, err := makeFreshFS(work, name)
	if err != nil {
		return err
	}
	err = body(fs.dir)
	if o.keep {
		fmt.Fprintf(os.Stderr, "rootfsbench: kept %s mounted on %s\n", fs.image, fs.dir)
		return err
	}
	if rerr := fs.remove(); err == nil {
		err = rerr
	}
	return err
}

// runRound extracts the archive once with each tool into dir, in the
// round's order, and after the first round compares the trees.
func runRound(o options, rep *report, self, dir string, round int) error {
	trees := map[string]string{}
	for _, tool := range rotate(o.tools, round) {
		dest := filepath.Join(dir, fmt.Sprintf("%s.%d", tool, round))
		if err := os.Mkdir(dest, 0o755); err != nil {
			return err
		}
		// Everything written before (the previous run's tree, and the
		// previous round's filesystem image under it) reaches the disk
		// untimed, so no tool pays for another's writeback.
		unix.Sync()
		m, err := measure(o, self, tool, dest)
		if err != nil {
			return fmt.Errorf("round %d, %s: %w", round+1, tool, err)
		}
		rep.results[tool] = append(rep.results[tool], m)
		fmt.Fprintf(os.Stderr, "rootfsbench: round %d/%d %-10s %8s  cpu %8s  rss %s  other cpu %s\n",
			round+1, o.n, tool, fmtDur(m.wall), fmtDur(m.cpu), fmtBytes(m.maxRSS), fmtDur(m.otherCPU))
		trees[tool] = dest
	}
	if round == 0 {
		diffs, entries, bytes, err := compareTrees(trees, o.tools)
		if err != nil {
			return err
		}
		rep.treeEntries, rep.treeBytes, rep.treeDiffs = entries, bytes, diffs
	}
	return nil
}

// rotate returns tools starting at index round, so each tool goes first,
// second and last equally often.
func rotate(tools []string, round int) []string {
	k := round % len(tools)
	return append(append([]string(nil), tools[k:]...), tools[:k]...)
}

func warm(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(io.Discard, f)
	return err
}

// measure runs one extraction in a child process and waits for it.
func measure(o options, self, tool, dest string) (measurement, error) {
	if err := o.ctx.Err(); err != nil {
		return measurement{}, fmt.Errorf("interrupted: %w", err)
	}
	archive := o.archive
	var argv []string
	switch tool {
	case "tar":
		argv = []string{"tar", "-xzf", archive, "-C", dest}
		if os.Geteuid() == 0 {
			argv = append(argv, "--numeric-owner", "-p")
		}
	default:
		argv = []string{self, "child", tool, archive, dest}
	}
	// Go starts children with vfork, and exec records the parent's peak
	// RSS as the child's: GNU time forks, so its %M is the tool's own
	// (with tar, the larger of tar and its gzip).
	rssFile := dest + ".rss"
	defer os.Remove(rssFile)
	cmd := exec.Command(gnuTime, append([]string{"-f", "%M", "-o", rssFile, "--"}, argv...)...)
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	cmd.Env = append(os.Environ(), o.childEnv...)
	busy0 := machineBusy()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return measurement{}, err
	}
	err := cmd.Wait()
	wall := time.Since(start)
	busy1 := machineBusy()
	if err != nil {
		return measurement{}, fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	m := measurement{
		wall: wall,
		cpu:  time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
	}
	b, err := os.ReadFile(rssFile)
	if err != nil {
		return measurement{}, err
	}
	kb, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return measurement{}, fmt.Errorf("%s: %q: %w", gnuTime, b, err)
	}
	m.maxRSS = kb << 10
	if busy0 >= 0 && busy1 >= 0 {
		m.otherCPU = max(0, busy1-busy0-m.cpu)
	}
	return m, nil
}

// machineBusy is the CPU time all CPUs have spent not idle since boot
// (from /proc/stat), or -1.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return -1
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return -1
	}
	var busy int64
	for i, v := range f[1:] {
		var n int64
		fmt.Sscan(v, &n)
		// user nice system idle iowait irq softirq steal guest guest_nice;
		// guest time is already counted in user.
		if i == 3 || i == 4 || i >= 8 {
			continue
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func kernelRelease() string {
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func fsType(dir string) string {
	var s unix.Statfs_t
	if unix.Statfs(dir, &s) != nil {
		return "?"
	}
	switch s.Type {
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("0x%x", s.Type)
}

func numCPU() int { return runtime.NumCPU() }
