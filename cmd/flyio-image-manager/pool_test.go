package main

import (
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool"
)

// TestPrintPoolStatus pins status's pool lines, printed from the admin
// API's wire status (the daemon's answer, or the pool read here).
func TestPrintPoolStatus(t *testing.T) {
	cfg := config.Default()
	cfg.Pool.DataFile, cfg.Pool.MetadataFile = "/var/lib/fim/data", "/var/lib/fim/meta"
	st := admin.PoolStatus{UsedDataBlocks: 900, TotalDataBlocks: 1000, DataBlockSize: 128 << 10,
		UsedMetaBlocks: 10, TotalMetaBlocks: 1000, NeedsCheck: true, ReadOnly: true}
	var b strings.Builder
	printPoolStatus(&b, cfg, st, poolFull{threshold: 80, refusing: true})
	want := `  data:      /var/lib/fim/data (loopback file)
  metadata:  /var/lib/fim/meta (loopback file)
  block:     128 KiB
  data:      900/1000 blocks used (112.5 MiB of 125 MiB, 90.0%)
  metadata:  10/1000 blocks used (40 KiB of 3.9 MiB, 1.0%)
  mode:      ro, needs_check
  full at:   80% of data or metadata (full_threshold); new snapshots and imports: REFUSED (devicemapper pool is full, cannot create device); free space with 'flyio-image-manager gc' or remove images
`
	if b.String() != want {
		t.Errorf("pool lines:\n%s\nwant:\n%s", b.String(), want)
	}
}

// TestOfflinePoolFull: without a daemon, status judges the pool by the
// guard's own rule and the configuration's threshold.
func TestOfflinePoolFull(t *testing.T) {
	cfg := config.Default()
	cfg.Pool.FullThreshold = 80
	for _, c := range []struct {
		st   dmpool.Status
		want bool
	}{
		{dmpool.Status{UsedDataBlocks: 79, TotalDataBlocks: 100, TotalMetaBlocks: 100}, false},
		{dmpool.Status{UsedDataBlocks: 80, TotalDataBlocks: 100, TotalMetaBlocks: 100}, true},
		{dmpool.Status{TotalDataBlocks: 100, UsedMetaBlocks: 90, TotalMetaBlocks: 100}, true},
		{dmpool.Status{TotalDataBlocks: 100, TotalMetaBlocks: 100, OutOfDataSpace: true}, true},
	} {
		if got := offlinePoolFull(cfg, c.st); got.refusing != c.want || got.threshold != 80 {
			t.Errorf("%+v: %+v, want refusing %v at 80", c.st, got, c.want)
		}
	}
}
