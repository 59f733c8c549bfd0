package metadata

import (
	"path/filepath"
	"testing"
)

func TestStatsCountsKeysPerBucket(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "m.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Update(func(tx *Tx) error {
		return tx.PutImage(&Image{ID: "busybox", Ref: "r", ChainID: "sha256:x"})
	}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]int{}
	for _, b := range st.Buckets {
		keys[b.Name] = b.Keys
	}
	if keys["images"] != 1 || keys["meta"] < 1 {
		t.Errorf("bucket keys = %v, want images 1 and meta >= 1", keys)
	}
	if st.FileSize == 0 || st.PageSize == 0 {
		t.Errorf("stats %+v lack the file or page size", st)
	}
}
