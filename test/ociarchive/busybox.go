package ociarchive

import (
	"fmt"
	"os"
)

// BusyboxPath is where Debian's busybox-static puts its binary.
const BusyboxPath = "/bin/busybox"

// applets get an absolute symlink /bin/NAME -> /bin/busybox each: enough
// for the tests' shell scripts.
var applets = []string{
	"sh", "cat", "echo", "ls", "stat", "test", "[", "mkdir", "rm", "touch",
	"id", "sync", "true", "false", "sleep", "grep", "wc", "head", "df", "mount",
}

// BusyboxLayer is a minimal root filesystem: a static busybox at
// /bin/busybox (read from busybox, normally BusyboxPath) with absolute
// applet symlinks, and the directories a runtime mounts over.
func BusyboxLayer(busybox string) (Layer, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("busybox layer: %w (install busybox-static)", err)
	}
	l := Layer{Dir("bin", 0o755), Bytes("bin/busybox", 0o755, bin)}
	for _, a := range applets {
		l = append(l, Symlink("bin/"+a, "/bin/busybox"))
	}
	for _, d := range []string{"dev", "proc", "sys", "etc", "tmp", "root"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		l = append(l, Dir(d, mode))
	}
	l = append(l, File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
		File("etc/group", 0o644, "root:x:0:\n"))
	return l, nil
}

// TestImage is the image the end-to-end tests and the demo run: busybox,
// then a layer of files, then a layer that deletes one of them (whiteout),
// replaces a directory's content (opaque), adds a hardlink pair and a
// setuid file. The expected view of it is documented in Check.
func TestImage(ref, busybox string) (Image, error) {
	base, err := BusyboxLayer(busybox)
	if err != nil {
		return Image{}, err
	}
	files := Layer{
		Dir("data", 0o755),
		File("data/keep.txt", 0o644, "kept from layer 2\n"),
		File("data/gone.txt", 0o644, "deleted by layer 3\n"),
		Dir("opq", 0o755),
		File("opq/old.txt", 0o644, "hidden by the opaque dir\n"),
		Dir("opq/sub", 0o755),
		File("opq/sub/old2.txt", 0o644, "hidden too\n"),
		File("hello.txt", 0o644, "hello from a dm-thin snapshot\n"),
	}
	changes := Layer{
		Dir("data", 0o755),
		Whiteout("data", "gone.txt"),
		File("data/hard-a", 0o644, "two names, one inode\n"),
		Hardlink("data/hard-b", "data/hard-a"),
		Dir("opq", 0o755),
		Opaque("opq"),
		File("opq/new.txt", 0o644, "only this in /opq\n"),
		File("bin/suid", 0o4755, "#!/bin/sh\necho setuid\n"),
	}
	return Image{
		Ref:    ref,
		Layers: []Layer{base, files, changes},
		Cmd:    []string{"/bin/cat", "/hello.txt"},
	}, nil
}

// CheckScript prints, inside a container of TestImage, one line per
// property the unpacked layers must have; CheckWant is its expected output.
const CheckScript = `cat /hello.txt
test -e /data/gone.txt && echo "gone.txt present" || echo "gone.txt absent"
cat /data/keep.txt
echo "opq: $(ls -A /opq)"
stat -c 'links=%h' /data/hard-a
[ "$(stat -c %i /data/hard-a)" = "$(stat -c %i /data/hard-b)" ] && echo "hardlink same inode" || echo "hardlink different inodes"
stat -c 'suid mode=%a' /bin/suid
`

// CheckWant is what CheckScript prints for a correctly unpacked TestImage.
const CheckWant = `hello from a dm-thin snapshot
gone.txt absent
kept from layer 2
opq: new.txt
links=2
hardlink same inode
suid mode=4755
`
