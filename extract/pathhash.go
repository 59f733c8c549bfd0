package extract

import (
	"encoding/binary"
	"hash/maphash"
)

// pathHash stands for a name (a path, or one component under a parent)
// where keeping the name itself would make memory grow with the length of
// the archive's names: 128 bits from two independently, randomly seeded
// maphash functions, so a hostile archive can neither aim for a collision
// (the seeds are fresh each run) nor meet one by chance (2^-128 a pair).
type pathHash struct{ a, b uint64 }

type hasher struct {
	ha, hb maphash.Hash
	buf    [16]byte
}

func newHasher() *hasher {
	h := &hasher{}
	h.ha.SetSeed(maphash.MakeSeed())
	h.hb.SetSeed(maphash.MakeSeed())
	return h
}

// chain hashes comp under parent: chain(chain(root, "a"), "b") names
// "a/b", in time linear in the component, not in the whole path.
func (h *hasher) chain(parent pathHash, comp string) pathHash {
	binary.LittleEndian.PutUint64(h.buf[:8], parent.a)
	binary.LittleEndian.PutUint64(h.buf[8:], parent.b)
	h.ha.Reset()
	h.ha.Write(h.buf[:])
	h.ha.WriteString(comp)
	h.hb.Reset()
	h.hb.Write(h.buf[:])
	h.hb.WriteString(comp)
	return pathHash{h.ha.Sum64(), h.hb.Sum64()}
}

// components calls f for each non-empty, non-"." component of a cleaned
// relative path, without allocating.
func components(rel string, f func(c string) bool) {
	for len(rel) > 0 {
		i := 0
		for i < len(rel) && rel[i] != '/' {
			i++
		}
		c := rel[:i]
		if i < len(rel) {
			rel = rel[i+1:]
		} else {
			rel = ""
		}
		if c == "" || c == "." {
			continue
		}
		if !f(c) {
			return
		}
	}
}
