package dmpool

import (
	"fmt"
	"sync/atomic"
)

// MaxDeviceID is the largest thin device id (ids are 24 bit).
const MaxDeviceID = 1<<24 - 1

// IDAllocator hands out thin device ids from a monotonically increasing
// counter. The snapshotter persists Peek() (in bbolt) and seeds a new
// allocator with it on start, so ids are not reused across restarts;
// when the kernel still reports an id as taken (ErrDeviceExists), the
// caller just takes the next one.
type IDAllocator struct {
	next atomic.Uint64
}

// NewIDAllocator returns an allocator whose first id is start.
func NewIDAllocator(start uint32) *IDAllocator {
	a := &IDAllocator{}
	a.next.Store(uint64(start))
	return a
}

// Next returns a fresh id, or ErrIDsExhausted past MaxDeviceID.
func (a *IDAllocator) Next() (uint32, error) {
	id := a.next.Add(1) - 1
	if id > MaxDeviceID {
		return 0, fmt.Errorf("next id %d > %d: %w", id, MaxDeviceID, ErrIDsExhausted)
	}
	return uint32(id), nil
}

// Peek returns the id Next would hand out (the value to persist).
func (a *IDAllocator) Peek() uint32 {
	v := a.next.Load()
	if v > MaxDeviceID+1 {
		v = MaxDeviceID + 1
	}
	return uint32(v)
}
