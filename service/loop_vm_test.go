package service

// VM test: the origin's file device is a read-only loop over the very
// file lazy opened. It skips without device-mapper (the marker of the
// VM, where loop devices work).

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

func TestAttachFileIsReadOnlyOverTheOpenedFile(t *testing.T) {
	dmtest.Require(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "cache")
	want := bytes.Repeat([]byte("origin!\n"), 1<<17) // 1 MiB
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	// A writable loop someone else attached over the same file must not
	// be handed out as the origin's device.
	rw, err := loopdev.Attach(path, loopdev.Params{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { loopdev.Detach(rw.Path); rw.Close() })

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The path now names another file: the loop must read the opened one.
	if err := os.Rename(path, path+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Repeat([]byte("decoy!!\n"), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := attachFile(context.Background(), f, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Path() == rw.Path {
		t.Fatalf("the writable loop %s was reused as the origin's device", rw.Path)
	}
	ld, err := os.Open(d.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer ld.Close()
	ro, err := unix.IoctlGetInt(int(ld.Fd()), unix.BLKROGET)
	if err != nil || ro != 1 {
		t.Errorf("%s: BLKROGET %d, %v: want read-only", d.Path(), ro, err)
	}
	got := make([]byte, len(want))
	if _, err := ld.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s does not read the file that was opened (it reads %q...)", d.Path(), got[:16])
	}
	// Attaching the same open file again reuses the read-only loop.
	d2, err := attachFile(context.Background(), f, int64(len(want)))
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if d2.Path() != d.Path() {
		t.Errorf("second attach got %s, want the read-only loop %s again", d2.Path(), d.Path())
	}
}
