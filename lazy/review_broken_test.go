package lazy_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/superfly/flyio-image-manager/lazy"
)

// doc.go: "A directory that fails any check is reported as broken in
// Status and never deleted or repaired: it may be evidence." The sweep
// (service/originsweep.go) calls RemoveIf for every name in Status(),
// broken ones included, and its unused() says true for an origin with
// no device, no record and no run (dev == ""). RemoveIf then RemoveAll's
// the broken directory.
func TestReviewSweepKeepsBrokenOrigins(t *testing.T) {
	st, a := newMemStore(), newFakeAttach()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bi-broken")
	if err := os.MkdirAll(bad, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "manifest.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := openManager(t, a.config(dir, st))
	if s := statusOf(t, m, "bi-broken"); s.State != lazy.StateBroken {
		t.Fatalf("state %s, want broken", s.State)
	}
	// What service.originUnused answers for it: no run, no record, dev "".
	unused := func(dev string) (bool, error) { return dev == "", nil }
	removed, err := m.RemoveIf(context.Background(), "bi-broken", unused)
	if _, serr := os.Stat(filepath.Join(bad, "manifest.json")); serr != nil {
		t.Errorf("sweep-style RemoveIf of a broken origin: removed=%v err=%v, and its directory is gone (%v), contrary to doc.go's threat model", removed, err, serr)
	}
}
