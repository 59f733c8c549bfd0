package metadata

import "encoding/binary"

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

func fromU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// deviceKey orders devices by id in the bucket.
func deviceKey(id uint32) []byte {
	b := make([]byte, 4)
	binary.BigEndian.PutUint32(b, id)
	return b
}

// childKey is parent NUL child: a prefix scan on parent NUL lists the
// children. Keys are containerd snapshot keys, which never hold NUL.
func childKey(parent, child string) []byte {
	k := make([]byte, 0, len(parent)+1+len(child))
	k = append(k, parent...)
	k = append(k, 0)
	return append(k, child...)
}
