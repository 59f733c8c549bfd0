package metadata

import (
	"encoding/json"
	"fmt"
)

// keyKernelLogMark holds the KernelLogMark record in the meta bucket.
var keyKernelLogMark = []byte("kernel_log_mark")

// KernelLogMark is how far the snapshotter has read the kernel log in one
// boot, and the kernel names the pool's devices had in that boot.
//
// Both are for a restart in the same boot. The kernel keeps its log in a
// ring: a first record newer than ReadSeq+1 says records were overwritten
// while the daemon was down, and one of them may have reported a lost
// write. A record names a device by its kernel name only ("dm-7"), which
// is gone once the device is deactivated: Names says whose it was.
type KernelLogMark struct {
	// Boot is the boot id (/proc/sys/kernel/random/boot_id) the rest
	// belongs to; a mark of another boot says nothing of this one.
	Boot string `json:"boot"`
	// ReadSeq is the sequence number of the last record read; Read says
	// it is set (0 is a record's number too).
	ReadSeq uint64 `json:"read_seq"`
	Read    bool   `json:"read"`
	// Names maps a kernel name (dm-N) to the pool's device names that
	// had it in this boot and may still be named by records not counted
	// yet, oldest first (the kernel reuses a minor at once).
	Names map[string][]string `json:"names,omitempty"`
}

// KernelLogMark returns the mark; a database that never had one returns
// the zero mark.
func (t *Tx) KernelLogMark() (KernelLogMark, error) {
	var m KernelLogMark
	v := t.bucket(bucketMeta).Get(keyKernelLogMark)
	if v == nil {
		return m, nil
	}
	if err := json.Unmarshal(v, &m); err != nil {
		return m, fmt.Errorf("kernel log mark record: %w", err)
	}
	return m, nil
}

// PutKernelLogMark stores the mark.
func (t *Tx) PutKernelLogMark(m KernelLogMark) error {
	return put(t.bucket(bucketMeta), keyKernelLogMark, m)
}
