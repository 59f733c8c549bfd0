package metadata

import (
	"fmt"
	"testing"
	"time"
)

func TestPoolTroubleHistoryIsBoundedAndDurable(t *testing.T) {
	s := openTemp(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	err := s.Update(func(tx *Tx) error {
		pt, err := tx.PoolTrouble()
		if err != nil {
			return err
		}
		for i := 0; i < MaxTroubleHistory+3; i++ {
			pt.Bump(fmt.Sprintf("trouble %d", i+1), at)
		}
		return tx.PutPoolTrouble(pt)
	})
	if err != nil {
		t.Fatal(err)
	}
	var pt PoolTrouble
	s.View(func(tx *Tx) (err error) { pt, err = tx.PoolTrouble(); return err })
	if pt.Generation != MaxTroubleHistory+3 || len(pt.Recent) != MaxTroubleHistory {
		t.Fatalf("generation %d with %d kept, want %d with %d", pt.Generation, len(pt.Recent), MaxTroubleHistory+3, MaxTroubleHistory)
	}
	if e := pt.Since(5); e.Generation != 6 || e.Reason != "trouble 6" {
		t.Fatalf("Since(5) = %+v, want generation 6", e)
	}
	// Older than what is kept: the oldest kept one.
	if e := pt.Since(0); e.Generation != 4 {
		t.Fatalf("Since(0) = %+v, want the oldest kept (4)", e)
	}
}
