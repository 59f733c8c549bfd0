// Package pooltest is test support for the dm tests of dmpool and of the
// suites above it (test/crash): loop devices over sparse files. It
// imports no package of this module but internal leaves, so dmpool's own
// tests can use it.
package pooltest

import (
	"os"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/loopdev"
)

// AttachLoop makes a sparse file of size at path and attaches it to a
// loop device (direct I/O), detached at cleanup.
func AttachLoop(t testing.TB, path string, size int64) *loopdev.Device {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	l, err := loopdev.Attach(path, loopdev.Params{Direct: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		l.Close()
		if err := loopdev.Detach(l.Path); err != nil {
			t.Error(err)
		}
	})
	return l
}
