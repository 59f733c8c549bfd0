package extract

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestPAXGlobalRecordsBounded: the records PAX global headers set are kept
// for the rest of the archive and copied into every later entry, so their
// number is bounded: otherwise a thousand global headers of distinct
// SCHILY.xattr.* records (each header up to the tar reader's 1 MiB) would
// pile up in memory, and every later entry would carry and set them all.
// Validate and Extract refuse it alike, naming the header.
func TestPAXGlobalRecordsBounded(t *testing.T) {
	var ents []ent
	for i := range 40 {
		recs := map[string]string{}
		for j := range 10 {
			recs[fmt.Sprintf("SCHILY.xattr.user.k%d_%d", i, j)] = "v"
		}
		ents = append(ents, globalHeader(recs))
	}
	ents = append(ents, file("a", "a"), file("b", "b"))
	b := mkTar(t, ents...)
	_, verr := Validate(context.Background(), bytes.NewReader(b), Options{})
	if !errors.Is(verr, ErrOutOfRange) || !strings.Contains(verr.Error(), "PAX global") {
		t.Errorf("Validate: %v, want ErrOutOfRange naming the PAX global records", verr)
	}
	t.Logf("Validate: %v", verr)
	_, eerr := Extract(context.Background(), bytes.NewReader(b), t.TempDir(), Options{})
	if !errors.Is(eerr, ErrOutOfRange) || !strings.Contains(eerr.Error(), "PAX global") {
		t.Errorf("Extract: %v, want ErrOutOfRange naming the PAX global records", eerr)
	}
	// A few global records, as real archives carry, still apply.
	ok := mkTar(t, globalHeader(map[string]string{"comment": "abc", "uid": "7", "SCHILY.xattr.user.x": "y"}), file("a", "a"))
	if _, err := Validate(context.Background(), bytes.NewReader(ok), Options{}); err != nil {
		t.Errorf("Validate of a small global header: %v", err)
	}
}
