package metadata

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// keyPoolTrouble holds the PoolTrouble record in the meta bucket.
var keyPoolTrouble = []byte("pool_trouble")

// PoolTrouble is what the snapshotter knows, durably, about trouble on the
// pool that may have lost writes (the pool out of data space, read-only,
// failed or needing a check, or a device-mapper event on it that nobody
// saw the reason of).
//
// Generation grows by one each time such trouble is seen. A snapshot
// records the generation at Prepare (Snapshot.TroubleGen), and Commit
// refuses one whose generation is older: writes to it may have failed in
// writeback, where nobody reported them (containerd's applier does not
// syncfs, and ext4's unmount drops the error).
type PoolTrouble struct {
	Generation uint64 `json:"generation"`
	// EventNr is the pool device's device-mapper event counter the
	// snapshotter last accounted for; Known says it was ever set.
	EventNr uint32 `json:"event_nr"`
	Known   bool   `json:"known"`
	// Reason and At describe the latest bump, for Commit's refusal and
	// the logs.
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at,omitempty"`
	// Recent are the latest bumps, oldest first (at most
	// MaxTroubleHistory): a refusal names the first trouble the snapshot
	// saw, not only the latest (often the pool's return to write mode).
	Recent []TroubleEvent `json:"recent,omitempty"`
	// KernelBoot and KernelSeq are the boot id and sequence number of
	// the last kernel log record that bumped the generation (an I/O
	// error on one of the pool's devices): a restart reads the kernel
	// log again from its oldest record and must not count it twice.
	KernelBoot string `json:"kernel_boot,omitempty"`
	KernelSeq  uint64 `json:"kernel_seq,omitempty"`
}

// TroubleEvent is one bump of the trouble generation.
type TroubleEvent struct {
	Generation uint64    `json:"generation"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// MaxTroubleHistory bounds PoolTrouble.Recent.
const MaxTroubleHistory = 8

// Bump raises the generation for reason, at at.
func (pt *PoolTrouble) Bump(reason string, at time.Time) {
	pt.Generation++
	pt.Reason, pt.At = reason, at
	pt.Recent = append(pt.Recent, TroubleEvent{Generation: pt.Generation, Reason: reason, At: at})
	if n := len(pt.Recent); n > MaxTroubleHistory {
		pt.Recent = append([]TroubleEvent(nil), pt.Recent[n-MaxTroubleHistory:]...)
	}
}

// Since is the first bump after generation gen that is still kept, or
// the latest one.
func (pt *PoolTrouble) Since(gen uint64) TroubleEvent {
	for _, e := range pt.Recent {
		if e.Generation > gen {
			return e
		}
	}
	return TroubleEvent{Generation: pt.Generation, Reason: pt.Reason, At: pt.At}
}

// Refuses reports whether Commit refuses snapshot rec for the trouble on
// this record: an active snapshot prepared before the latest trouble
// (its TroubleGen older than the generation). Commit also refuses every
// snapshot while the pool is in trouble at its look; that is the pool's
// mode, not this record's.
func (pt *PoolTrouble) Refuses(rec *Snapshot) bool {
	return rec.Kind == snapshots.KindActive && rec.TroubleGen < pt.Generation
}

// PoolTrouble returns the record; a database that never had one returns
// the zero record.
func (t *Tx) PoolTrouble() (PoolTrouble, error) {
	var pt PoolTrouble
	v := t.bucket(bucketMeta).Get(keyPoolTrouble)
	if v == nil {
		return pt, nil
	}
	if err := json.Unmarshal(v, &pt); err != nil {
		return pt, fmt.Errorf("pool trouble record: %w", err)
	}
	return pt, nil
}

// PutPoolTrouble stores the record.
func (t *Tx) PutPoolTrouble(pt PoolTrouble) error {
	return put(t.bucket(bucketMeta), keyPoolTrouble, pt)
}
