package metadata

import (
	"encoding/json"
	"fmt"
	"time"
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
