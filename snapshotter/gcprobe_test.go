package snapshotter

import (
	"context"
	"errors"
	"testing"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// listingPool is the fake pool with a ListActive, as *dmpool.Pool has;
// open gives a device's open count. Origins show as the fake's paths.
type listingPool struct {
	*fakePool
	open map[string]int32
}

func (p listingPool) ListActive(ctx context.Context) ([]dmpool.ActiveDevice, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []dmpool.ActiveDevice
	for n, id := range p.active {
		out = append(out, dmpool.ActiveDevice{Name: n, ID: id, OpenCount: p.open[n], Size: 128 << 20, Origin: p.origins[n]})
	}
	return out, nil
}

// TestLeftoverGCProbesAreListedAndCleanedAtStart: probe devices a gc
// killed inside ConfirmMissing left are listed by Probes (what `status`
// shows) and removed by the next start when unused; an open one, and a
// device that only looks like a probe (named for another thin id), are
// kept.
func TestLeftoverGCProbesAreListedAndCleanedAtStart(t *testing.T) {
	ctx := context.Background()
	// The fake's devices are not the host's: in the VM the real name
	// list (which has no fake-gcprobe-*) would answer "no probes".
	orig := listDMNames
	listDMNames = func() ([]dmpool.DeviceName, error) { return nil, errors.New("no device-mapper in this test") }
	t.Cleanup(func() { listDMNames = orig })
	fp := newFakePool()
	pool := listingPool{fakePool: fp, open: map[string]int32{}}
	for _, id := range []uint32{7, 8, 9} {
		fp.thins[id] = 0
	}
	fp.active[probeName("fake", 7)] = 7  // left by a killed gc
	fp.active[probeName("fake", 8)] = 8  // left, and opened by someone
	fp.active[probeName("fake", 10)] = 9 // not our name for what it maps
	pool.open[probeName("fake", 8)] = 1
	store := newTestStore(t)
	// The records of 7-9 are not needed: probes are judged by the pool.
	s, err := New(ctx, pool, store, Config{BaseSize: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := fp.active[probeName("fake", 7)]; ok {
		t.Error("an unused leftover probe was not removed at start")
	}
	if _, ok := fp.active[probeName("fake", 8)]; !ok {
		t.Error("an open probe was removed")
	}
	if _, ok := fp.active[probeName("fake", 10)]; !ok {
		t.Error("a device named like a probe of another thin id was removed")
	}
	probes, err := s.Probes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(probes) != 1 || probes[0].Name != probeName("fake", 8) || probes[0].OpenCount != 1 {
		t.Errorf("probes %+v, want only the open %s", probes, probeName("fake", 8))
	}
}
