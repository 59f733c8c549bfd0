package snapshotter

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/dmpool"
)

func TestFullError(t *testing.T) {
	st := func(ud, td, um, tm uint64) dmpool.Status {
		return dmpool.Status{UsedDataBlocks: ud, TotalDataBlocks: td, UsedMetaBlocks: um, TotalMetaBlocks: tm}
	}
	for _, c := range []struct {
		name string
		st   dmpool.Status
		full bool
	}{
		{"empty", st(0, 100, 1, 100), false},
		{"data below", st(89, 100, 1, 100), false},
		{"data at", st(90, 100, 1, 100), true},
		{"metadata at", st(1, 100, 95, 100), true},
		{"out of data space flag", dmpool.Status{OutOfDataSpace: true, TotalDataBlocks: 100, TotalMetaBlocks: 100}, true},
	} {
		err := FullError("p", "prepare", c.st, 90)
		if (err != nil) != c.full {
			t.Errorf("%s: %v, want full=%v", c.name, err, c.full)
			continue
		}
		if err == nil {
			continue
		}
		if !errors.Is(err, dmpool.ErrPoolFull) || !errdefs.IsResourceExhausted(err) ||
			!strings.Contains(err.Error(), "devicemapper pool is full, cannot create device") {
			t.Errorf("%s: %v is not the pool-full error", c.name, err)
		}
	}
}

// The daemon hands the snapshotter a guardedPool (Guard): it must still offer what
// the lost-writes watch looks for on a real pool (the event waiter and
// Open's reload events), or the daemon would run without the watcher.
var _ interface {
	EventWaiter() (*dmpool.EventWaiter, error)
	OpenReload() *dmpool.ReloadEvents
} = guardedPool{}
