package lazy_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"
)

// A served device whose connection ends unrequested stops being the
// origin's device at once (DevicePath never names the dead one), a
// fresh served device is attached and the tables are moved onto it
// through OnSwitch (retried after a failure), and Status says why.
func TestDeadServedDeviceIsReplaced(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	img := smallImage(t, st, 11)
	gate := make(chan struct{})
	st.setFail(func(string) error { <-gate; return errors.New("closed") })
	var fails atomic.Int32
	a.switchFn = func(name, path string) error {
		if fails.Add(1) == 1 {
			return errors.New("reload failed")
		}
		return nil
	}
	m := openManager(t, a.config(t.TempDir(), st))
	t.Cleanup(func() { close(gate) }) // before m.Close: the fetches wait on it
	if err := m.Create(context.Background(), "base-11", img.man); err != nil {
		t.Fatal(err)
	}
	old, _ := m.DevicePath("base-11")
	a.servedDev(old).kill()
	waitFor(t, "a new device", func() bool {
		p, err := m.DevicePath("base-11")
		if p == old {
			return false
		}
		if err != nil && !errdefs.IsUnavailable(err) {
			t.Fatalf("DevicePath after the device died: %v", err)
		}
		return err == nil
	})
	now, _ := m.DevicePath("base-11")
	waitFor(t, "the tables moved", func() bool { return slices.Contains(a.moveList(), old+" -> "+now) && fails.Load() >= 2 })
	if mv := a.moveList(); len(mv) != 2 || mv[0] != mv[1] {
		t.Errorf("OnSwitch calls %q, want the failed and the retried move %s -> %s", mv, old, now)
	}
	if s := statusOf(t, m, "base-11"); !strings.Contains(s.LastError, "reload failed") && !strings.Contains(s.LastError, "ended unrequested") {
		t.Errorf("status after the death: %+v", s)
	}
	if a.servedDev(now).closed.Load() {
		t.Errorf("the new device %s is closed", now)
	}
}
