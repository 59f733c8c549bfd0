package metadata

import (
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Backup writes a consistent copy of the database to w and returns its
// size. It runs in one bbolt read transaction, so writers carry on while
// it streams and the copy is the database as of the transaction's start:
// a file Open accepts as it is. It works on a read-only Store too, which
// is how a backup is taken while no daemon runs.
//
// While it runs, pages freed since its start are not reused, and a write
// that has to grow the file waits for it (bbolt remaps only with no read
// transaction open). So w should be fast, a local file, not a network
// peer: the daemon copies to a temporary file first and streams that.
func (s *Store) Backup(w io.Writer) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	if err != nil {
		return n, fmt.Errorf("metadata: back up %s: %w", s.path, err)
	}
	return n, nil
}

// ForgetSpares drops the records of ready spare devices and returns their
// thin ids. It is for a backup copy, not the live database: by the time a
// copy is restored, a spare it lists may have been claimed by a container
// the copy does not know, and the daemon would hand that device (with the
// container's files, perhaps mounted) to the next Prepare. Forgotten, the
// devices are listed by gc as device-without-record, and the daemon makes
// new spares.
func (t *Tx) ForgetSpares() ([]uint32, error) {
	var ids []uint32
	err := t.Devices(func(id uint32, d *Device, err error) error {
		if err == nil && d.Role == RoleSpare && d.State == DeviceReady {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := t.DeleteDevice(id); err != nil {
			return nil, fmt.Errorf("forgetting spare device %d: %w", id, err)
		}
	}
	return ids, nil
}
