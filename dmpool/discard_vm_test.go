package dmpool

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
)

// TestDiscardNeverDestroysAnOpenDevice is the microVM case of
// discard_blocks: a VMM was handed the device's path (Mounts[0].Source)
// and opens it without O_EXCL, so an exclusive open by Discard still
// succeeds. Whether the VMM opened the path in the moment Discard had just
// activated the device, or holds the same thin id open under another dm
// name, Discard must refuse with ErrDeviceBusy and the VMM must still read
// what it wrote.
func TestDiscardNeverDestroysAnOpenDevice(t *testing.T) {
	const size = 4 * mib
	ctx := context.Background()
	p, _ := newTestPool(t, 64*mib)
	want := pattern(0x5A, size)

	// write creates thin id with the pattern on it, inactive afterwards.
	write := func(id uint32) {
		t.Helper()
		if err := p.CreateThin(ctx, id); err != nil {
			t.Fatal(err)
		}
		name := randName("fimt-disc")
		path, err := p.Activate(ctx, name, id, size)
		if err != nil {
			t.Fatal(err)
		}
		if err := writeDev(path, 0, want); err != nil {
			t.Fatal(err)
		}
		if err := p.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	// check reads the whole device through the VMM's handle.
	check := func(what string, f *os.File) {
		t.Helper()
		got := make([]byte, size)
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the VMM's device no longer holds what it wrote: Discard destroyed data in use", what)
		}
	}

	t.Run("opened-while-discard-activates", func(t *testing.T) {
		const id = 1
		write(id)
		name := randName("fimt-disc")
		var vmm *os.File
		discardActivated = func(path string) {
			var err error
			// What a VMM does with Mounts[0].Source: a plain open.
			if vmm, err = os.OpenFile(path, os.O_RDWR, 0); err != nil {
				t.Errorf("VMM open of %s: %v", path, err)
			}
		}
		err := p.Discard(ctx, name, id, size)
		discardActivated = nil
		if vmm == nil {
			t.Fatal("the VMM could not open the device")
		}
		t.Logf("Discard while a VMM opened the device: %v", err)
		if !errors.Is(err, ErrDeviceBusy) {
			t.Errorf("Discard: %v, want ErrDeviceBusy", err)
		}
		check("opened while Discard activated it", vmm)
		vmm.Close()
		if err := p.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("same-thin-active-under-another-name", func(t *testing.T) {
		const id = 2
		write(id)
		other := randName("fimt-vmm")
		path, err := p.Activate(ctx, other, id, size)
		if err != nil {
			t.Fatal(err)
		}
		vmm, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		err = p.Discard(ctx, randName("fimt-disc"), id, size)
		t.Logf("Discard while the thin is active and open as %s: %v", other, err)
		if !errors.Is(err, ErrDeviceBusy) {
			t.Errorf("Discard: %v, want ErrDeviceBusy", err)
		}
		check("active under another name", vmm)
		vmm.Close()
		if err := p.Deactivate(ctx, other); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unused-device-is-discarded", func(t *testing.T) {
		const id = 3
		write(id)
		before := p.mapped(t, id, size)
		if err := p.Discard(ctx, randName("fimt-disc"), id, size); err != nil {
			t.Fatal(err)
		}
		if after := p.mapped(t, id, size); after != 0 || before == 0 {
			t.Errorf("mapped bytes of an unused device: %d before Discard, %d after; want >0 then 0", before, after)
		}
	})
}

// mapped activates thin id briefly and returns its mapped bytes.
func (p *Pool) mapped(t *testing.T, id uint32, size uint64) uint64 {
	t.Helper()
	ctx := context.Background()
	name := randName("fimt-map")
	if _, err := p.Activate(ctx, name, id, size); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Deactivate(ctx, name); err != nil {
			t.Fatal(err)
		}
	}()
	s, err := p.ThinStatus(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	return s.MappedBytes
}
