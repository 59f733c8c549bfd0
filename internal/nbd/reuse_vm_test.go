package nbd

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// TestNBDSkipsAnIndexATableStillNames: a device whose connection ended
// while a dm table still uses it is not connected again for another
// image, so that table reads EIO and never the other image's bytes.
// Both guards are tried: the kernel's holders alone (no Referenced),
// and a dm table scan.
func TestNBDSkipsAnIndexATableStillNames(t *testing.T) {
	requireNBD(t)
	const size = 4 * mib
	for _, c := range []struct {
		name string
		opt  Options
	}{
		{"holders", Options{}},
		{"dm scan", Options{Referenced: func(major, minor uint32) (bool, error) {
			users, err := dmpool.DevicesUsing(major, minor)
			return len(users) > 0, err
		}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			imgA := randomImage(size)
			a := connect(t, size, bytes.NewReader(imgA), Options{})
			maj, min := a.Dev()
			name := fmt.Sprintf("fimt-nbdhold-%d", time.Now().UnixNano())
			if _, err := dmpool.CreateDevice(name); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = dmpool.RemoveDevice(name, true) })
			if err := dmpool.LoadTable(name, []dmpool.Target{{Length: size / 512, Type: "linear", Params: fmt.Sprintf("%d:%d 0", maj, min)}}); err != nil {
				t.Fatal(err)
			}
			if err := dmpool.Resume(name); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(); err != nil {
				t.Fatal(err)
			}
			imgB := randomImage(size)
			b := connect(t, size, bytes.NewReader(imgB), c.opt)
			if b.Path() == a.Path() {
				t.Fatalf("connected %s again while table %s names it", b.Path(), name)
			}
			f := openDirect(t, dmpool.DevicePath(name))
			got, err := readWithin(t, f, 0, 64<<10, time.Minute)
			if err == nil && bytes.Equal(got, imgB[:64<<10]) {
				t.Fatal("the old table reads the new image's bytes")
			}
			t.Logf("read of the table over the dead %s: %v", a.Path(), err)
		})
	}
}
