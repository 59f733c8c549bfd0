package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

// MaxDeviceID is the largest thin id dm-thin accepts (24 bits).
const MaxDeviceID = 1<<24 - 1

// Tx is a metadata transaction.
type Tx struct {
	tx *bolt.Tx
}

func (t *Tx) bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func get[T any](b *bolt.Bucket, key []byte, what string) (*T, error) {
	v := b.Get(key)
	if v == nil {
		return nil, fmt.Errorf("%s: %w", what, errdefs.ErrNotFound)
	}
	var rec T
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("%s: undecodable record: %v: %w", what, err, errdefs.ErrDataLoss)
	}
	return &rec, nil
}

// all decodes every record of a bucket, in key order; what names a record
// in errors (e.g. "run %q").
func all[T any](b *bolt.Bucket, what string) ([]*T, error) {
	var out []*T
	err := b.ForEach(func(k, v []byte) error {
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("%s: undecodable record: %w", fmt.Sprintf(what, k), err)
		}
		out = append(out, &rec)
		return nil
	})
	return out, err
}

func put(b *bolt.Bucket, key []byte, rec any) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return b.Put(key, v)
}

// Snapshot returns the snapshot stored under key.
func (t *Tx) Snapshot(key string) (*Snapshot, error) {
	return get[Snapshot](t.bucket(bucketSnapshots), []byte(key), fmt.Sprintf("snapshot %q", key))
}

// CreateSnapshot stores a new snapshot record and indexes it under its
// parent. It fails with ErrAlreadyExists when key is taken and with
// ErrNotFound when the parent is missing or not committed.
func (t *Tx) CreateSnapshot(s *Snapshot) error {
	b := t.bucket(bucketSnapshots)
	if b.Get([]byte(s.Key)) != nil {
		return fmt.Errorf("snapshot %q: %w", s.Key, errdefs.ErrAlreadyExists)
	}
	if s.Parent != "" {
		p, err := t.Snapshot(s.Parent)
		if err != nil {
			return fmt.Errorf("parent of %q: %w", s.Key, err)
		}
		if p.Kind != snapshots.KindCommitted {
			return fmt.Errorf("parent %q of %q is not committed: %w", s.Parent, s.Key, errdefs.ErrInvalidArgument)
		}
		if err := t.bucket(bucketChildren).Put(childKey(s.Parent, s.Key), nil); err != nil {
			return err
		}
	}
	return put(b, []byte(s.Key), s)
}

// PutSnapshot overwrites an existing snapshot record.
func (t *Tx) PutSnapshot(s *Snapshot) error {
	if t.bucket(bucketSnapshots).Get([]byte(s.Key)) == nil {
		return fmt.Errorf("snapshot %q: %w", s.Key, errdefs.ErrNotFound)
	}
	return put(t.bucket(bucketSnapshots), []byte(s.Key), s)
}

// RenameSnapshot moves the record at oldKey to s.Key (Commit), keeping the
// parent index right. s.Key must be free.
func (t *Tx) RenameSnapshot(oldKey string, s *Snapshot) error {
	b := t.bucket(bucketSnapshots)
	if b.Get([]byte(s.Key)) != nil {
		return fmt.Errorf("snapshot %q: %w", s.Key, errdefs.ErrAlreadyExists)
	}
	if err := b.Delete([]byte(oldKey)); err != nil {
		return err
	}
	if s.Parent != "" {
		c := t.bucket(bucketChildren)
		if err := c.Delete(childKey(s.Parent, oldKey)); err != nil {
			return err
		}
		if err := c.Put(childKey(s.Parent, s.Key), nil); err != nil {
			return err
		}
	}
	return put(b, []byte(s.Key), s)
}

// DeleteSnapshot removes the record at key. It refuses while children
// exist: they are thin snapshots of its device.
func (t *Tx) DeleteSnapshot(key string) error {
	s, err := t.Snapshot(key)
	if err != nil {
		return err
	}
	if kids := t.Children(key); len(kids) > 0 {
		return fmt.Errorf("snapshot %q has %d dependent snapshot(s) (%s): %w", key, len(kids), kids[0], errdefs.ErrFailedPrecondition)
	}
	if s.Parent != "" {
		if err := t.bucket(bucketChildren).Delete(childKey(s.Parent, key)); err != nil {
			return err
		}
	}
	return t.bucket(bucketSnapshots).Delete([]byte(key))
}

// Children lists the keys of the snapshots whose parent is key.
func (t *Tx) Children(key string) []string {
	var out []string
	prefix := childKey(key, "")
	c := t.bucket(bucketChildren).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		out = append(out, string(k[len(prefix):]))
	}
	return out
}

// Snapshots calls fn for every snapshot record, in key order. A record
// that cannot be decoded is passed with err set so callers can quarantine
// it instead of failing.
func (t *Tx) Snapshots(fn func(key string, s *Snapshot, err error) error) error {
	return t.bucket(bucketSnapshots).ForEach(func(k, v []byte) error {
		var s Snapshot
		if err := json.Unmarshal(v, &s); err != nil {
			return fn(string(k), nil, fmt.Errorf("snapshot %q: undecodable record: %w", k, err))
		}
		return fn(string(k), &s, nil)
	})
}

// AllocateDeviceID returns a thin id never handed out before by this
// database. Ids are not reused even after deletion, so a crash between
// "delete in the pool" and "forget the record" can never make two records
// claim one id.
func (t *Tx) AllocateDeviceID() (uint32, error) {
	meta := t.bucket(bucketMeta)
	next := uint64(1)
	if v := meta.Get(keyNextDeviceID); v != nil {
		next = fromU64(v)
	}
	if next > MaxDeviceID {
		return 0, fmt.Errorf("thin device ids exhausted (max %d): %w", MaxDeviceID, errdefs.ErrResourceExhausted)
	}
	if err := meta.Put(keyNextDeviceID, u64(next+1)); err != nil {
		return 0, err
	}
	return uint32(next), nil
}

// ReserveDeviceIDsThrough makes sure AllocateDeviceID never returns an id
// at or below max: the daemon calls it at start with the highest id the
// pool holds, so a database that is new (or was moved aside after
// corruption) next to a pool with devices never asks for an id that is
// taken.
func (t *Tx) ReserveDeviceIDsThrough(max uint32) error {
	meta := t.bucket(bucketMeta)
	next := uint64(1)
	if v := meta.Get(keyNextDeviceID); v != nil {
		next = fromU64(v)
	}
	if uint64(max) < next {
		return nil
	}
	return meta.Put(keyNextDeviceID, u64(uint64(max)+1))
}

// Device returns the device record of a thin id.
func (t *Tx) Device(id uint32) (*Device, error) {
	return get[Device](t.bucket(bucketDevices), deviceKey(id), fmt.Sprintf("device %d", id))
}

// PutDevice stores a device record.
func (t *Tx) PutDevice(d *Device) error {
	d.Updated = time.Now().UTC()
	return put(t.bucket(bucketDevices), deviceKey(d.ID), d)
}

// DeleteDevice forgets a thin id (after it was deleted from the pool).
func (t *Tx) DeleteDevice(id uint32) error {
	return t.bucket(bucketDevices).Delete(deviceKey(id))
}

// Devices calls fn for every device record in id order.
func (t *Tx) Devices(fn func(id uint32, d *Device, err error) error) error {
	return t.bucket(bucketDevices).ForEach(func(k, v []byte) error {
		var id uint32
		if len(k) == 4 {
			id = uint32(k[0])<<24 | uint32(k[1])<<16 | uint32(k[2])<<8 | uint32(k[3])
		}
		var d Device
		if err := json.Unmarshal(v, &d); err != nil {
			return fn(id, nil, fmt.Errorf("device %d: undecodable record: %w", id, err))
		}
		return fn(id, &d, nil)
	})
}

// Template returns the template called name.
func (t *Tx) Template(name string) (*Template, error) {
	return get[Template](t.bucket(bucketTemplates), []byte(name), fmt.Sprintf("template %q", name))
}

// PutTemplate stores a template.
func (t *Tx) PutTemplate(tp *Template) error {
	return put(t.bucket(bucketTemplates), []byte(tp.Name), tp)
}

// DeleteTemplate forgets a template.
func (t *Tx) DeleteTemplate(name string) error {
	return t.bucket(bucketTemplates).Delete([]byte(name))
}

// Templates calls fn for every template.
func (t *Tx) Templates(fn func(*Template) error) error {
	return t.bucket(bucketTemplates).ForEach(func(k, v []byte) error {
		var tp Template
		if err := json.Unmarshal(v, &tp); err != nil {
			return fmt.Errorf("template %q: undecodable record: %w", k, err)
		}
		return fn(&tp)
	})
}

// BeginOp journals the intent of a multi-step change and returns its id.
func (t *Tx) BeginOp(typ, key string, deviceID uint32) (*Op, error) {
	b := t.bucket(bucketOps)
	seq, err := b.NextSequence()
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	op := &Op{ID: seq, Type: typ, Key: key, DeviceID: deviceID, Started: now, Updated: now}
	return op, put(b, u64(seq), op)
}

// StepOp records that a step of op finished.
func (t *Tx) StepOp(op *Op, step string) error {
	op.Steps = append(op.Steps, step)
	op.Updated = time.Now().UTC()
	return put(t.bucket(bucketOps), u64(op.ID), op)
}

// EndOp removes a finished (or fully rolled back) op from the journal.
func (t *Tx) EndOp(op *Op) error { return t.bucket(bucketOps).Delete(u64(op.ID)) }

// Ops lists the unfinished ops: after a crash, the changes to reconcile.
func (t *Tx) Ops() ([]*Op, error) { return all[Op](t.bucket(bucketOps), "op %x") }
