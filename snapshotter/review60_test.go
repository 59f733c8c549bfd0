package snapshotter

import (
	"context"
	"testing"
)

// review60: lazy's recover moves the tables of a dead served device onto
// a fresh one with OnSwitch(old, new). nbd.Connect hands out the lowest
// usable index, and a dead index no table names is usable, so the fresh
// device is often the dead one's number again: old == new. A device live
// on that number already reads the fresh device, but moveStragglers
// lists it as "still on the old device" after its reload onto the very
// same device and fails the switch, so recoverLoop retries (reloading
// every device of the origin each time) until the origin is local.
func TestReviewSwitchOriginOntoTheSameDevice(t *testing.T) {
	ctx := context.Background()
	fakeOriginDevice(t)
	s, pool, _, _ := newOriginSnapshotter(t)
	s.pool = listingPool{fakePool: pool}
	if _, err := s.Prepare(ctx, "fill", "", lazyLabels("img-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.SwitchOrigin(ctx, "img-1", "/dev/nbd0", "/dev/nbd0"); err != nil {
		t.Errorf("switching onto the device the tables already read: %v", err)
	}
}
