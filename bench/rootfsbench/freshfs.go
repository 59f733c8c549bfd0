package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The scratch filesystem of a round. By default every round extracts into
// an ext4 filesystem made for it, the way the snapshotter makes a base
// (snapshotter/template.go: mkfs.ext4 -m 0 -E
// nodiscard,lazy_itable_init=0,lazy_journal_init=0, journal included), on
// a sparse file under -dir mounted through a loop device: what
// process-image extracts into is always a fresh filesystem.
//
// The alternative, a directory on the host's own filesystem (-fresh-fs=false),
// measures that filesystem's history more than the tools: this host's root
// is ext4 without a journal, where the inode allocator checks every free
// inode for a recent deletion (ext4 find_inode_bit → recently_deleted,
// for up to 6 minutes after the delete), and creating a file after a large
// tree was removed then costs 100–200 µs of CPU instead of a few (perf:
// find_get_block_common under recently_deleted, 40 % of tar's samples). Every
// tool pays it per file created, serially, which measured all three at
// 2.9 s of CPU where a fresh filesystem needs 1.4–2.0 s.

// freshFSSize is each round's filesystem: three trees of ~225 MB with room
// to spare; the file is sparse, so only what is written takes space.
const freshFSSize = 4 << 30

// freshFS is one round's filesystem, mounted on dir.
type freshFS struct {
	image string
	dir   string
}

// canMakeFreshFS reports why fresh filesystems cannot be made here, or "".
func canMakeFreshFS() string {
	if os.Geteuid() != 0 {
		return "not root (mount needs it)"
	}
	for _, tool := range []string{"mkfs.ext4", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not on PATH"
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return "no loop devices (/dev/loop-control)"
	}
	return ""
}

// makeFreshFS makes and mounts an empty ext4 filesystem on work/name.
func makeFreshFS(work, name string) (*freshFS, error) {
	fs := &freshFS{image: filepath.Join(work, name+".img"), dir: filepath.Join(work, name)}
	f, err := os.OpenFile(fs.image, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	err = f.Truncate(freshFSSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = runCmd("mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", fs.image)
	}
	if err == nil {
		err = os.Mkdir(fs.dir, 0o755)
	}
	if err == nil {
		err = runCmd("mount", "-o", "loop", fs.image, fs.dir)
	}
	if err != nil {
		os.Remove(fs.image)
		os.Remove(fs.dir)
		return nil, fmt.Errorf("fresh scratch filesystem %s: %w", fs.image, err)
	}
	return fs, nil
}

// remove unmounts the filesystem (the loop device goes with it: mount -o
// loop sets autoclear) and deletes its file.
func (fs *freshFS) remove() error {
	if err := unix.Unmount(fs.dir, 0); err != nil {
		return fmt.Errorf("unmount %s: %w", fs.dir, err)
	}
	os.Remove(fs.dir)
	return os.Remove(fs.image)
}

func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
