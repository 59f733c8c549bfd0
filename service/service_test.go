package service

import (
	"context"
	"errors"
	"testing"

	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/metadata"
)

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.RootDir = t.TempDir()
	cfg.Pool.Name = "service-test-pool-that-does-not-exist"
	return cfg
}

// Inspect opens the records read-only and nothing else: gc --dry-run,
// diag and backup run beside a stopped daemon without touching the pool.
func TestOpenInspect(t *testing.T) {
	cfg := testConfig(t)
	st, err := metadata.Open(MetadataPath(cfg), metadata.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	svc, err := Open(context.Background(), cfg, Inspect)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
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
