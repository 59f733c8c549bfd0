package service

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/dmpool/thinmeta"
	"github.com/superfly/flyio-image-manager/metadata"
)

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.RootDir = t.TempDir()
	cfg.Pool.Name = "service-test-pool-that-does-not-exist"
	return cfg
}

// openInspect makes cfg's database and opens it as gc --dry-run does;
// the service is closed at the end of the test.
func openInspect(t *testing.T, cfg config.Config) *Service {
	t.Helper()
	st, err := metadata.Open(MetadataPath(cfg), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	svc, err := Open(context.Background(), cfg, Inspect)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// Inspect opens the records read-only and nothing else: gc --dry-run,
// diag and backup run beside a stopped daemon without touching the pool.
func TestOpenInspect(t *testing.T) {
	svc := openInspect(t, testConfig(t))
	if svc.Store == nil || svc.Pool != nil || svc.Snapshotter != nil || svc.S3 != nil || svc.Importer != nil {
		t.Fatalf("Inspect built %+v, want the store only", svc)
	}
	if err := svc.Store.Update(func(*metadata.Tx) error { return nil }); err == nil {
		t.Fatal("the Inspect store accepted a write")
	}
}

// The database lock comes first: beside a daemon (which holds it), the
// offline modes fail with metadata.ErrLocked, which gc names, before they
// touch the pool (there is none here; touching it would fail otherwise).
func TestOpenLockedFailsBeforeThePool(t *testing.T) {
	cfg := testConfig(t)
	held, err := metadata.Open(MetadataPath(cfg), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	for _, mode := range []Mode{Offline, Daemon} {
		_, err := Open(context.Background(), cfg, mode)
		if !errors.Is(err, metadata.ErrLocked) {
			t.Errorf("%s: Open beside a held database: %v, want ErrLocked", mode, err)
		}
	}
}

// An offline gc (gc --dry-run: Inspect) reads the pool from a metadata
// snapshot it reserves: its hold is recorded where the daemon records
// its own, so one left by a killed gc is released by the next daemon
// start or gc --force instead of refusing every gc until an operator
// releases it by hand. (Offline, gc --force, records it too and releases
// a leftover first: that needs a pool, see test/e2e TestOpsOfflineGCHold.)
func TestOpenInspectRecordsMetadataSnapHold(t *testing.T) {
	cfg := testConfig(t)
	thinmeta.SetMarker("")
	t.Cleanup(func() { thinmeta.SetMarker("") })
	openInspect(t, cfg)
	if got, want := thinmeta.Marker(), filepath.Join(cfg.RootDir, thinmeta.MarkerName); got != want {
		t.Errorf("after Open(Inspect) holds are recorded in %q, want %q", got, want)
	}
}
