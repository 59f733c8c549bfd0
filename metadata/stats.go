package metadata

import (
	"os"

	bolt "go.etcd.io/bbolt"
)

// DBStats is what a bug report needs to know about the database: its
// size, bbolt's freelist and transaction counters, and per bucket how
// many records it holds and how much space they take.
type DBStats struct {
	Path     string        `json:"path"`
	FileSize int64         `json:"file_size"`
	PageSize int           `json:"page_size"`
	ReadOnly bool          `json:"read_only"`
	Bolt     bolt.Stats    `json:"bolt"`
	Buckets  []BucketStats `json:"buckets"`
}

// BucketStats is one top-level bucket's bbolt statistics.
type BucketStats struct {
	Name string `json:"name"`
	Keys int    `json:"keys"`
	// Bytes is the leaf and branch data in use, an approximation of the
	// records' size; Allocated the pages they occupy.
	Bytes     int              `json:"bytes"`
	Allocated int              `json:"allocated"`
	Depth     int              `json:"depth"`
	Bolt      bolt.BucketStats `json:"bolt"`
}

// Stats reports the database's statistics in one read transaction.
func (s *Store) Stats() (DBStats, error) {
	st := DBStats{Path: s.path, PageSize: s.db.Info().PageSize, ReadOnly: s.db.IsReadOnly(), Bolt: s.db.Stats()}
	if fi, err := os.Stat(s.path); err == nil {
		st.FileSize = fi.Size()
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			bs := b.Stats()
			st.Buckets = append(st.Buckets, BucketStats{
				Name: string(name), Keys: bs.KeyN, Depth: bs.Depth,
				Bytes: bs.LeafInuse + bs.BranchInuse, Allocated: bs.LeafAlloc + bs.BranchAlloc, Bolt: bs,
			})
			return nil
		})
	})
	return st, err
}
