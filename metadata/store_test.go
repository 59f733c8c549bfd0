package metadata

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	bolt "go.etcd.io/bbolt"
)

func openTemp(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "metadata.db"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSnapshotParentIndex(t *testing.T) {
	s := openTemp(t)
	err := s.Update(func(tx *Tx) error {
		if err := tx.CreateSnapshot(&Snapshot{Key: "base", Kind: snapshots.KindCommitted}); err != nil {
			return err
		}
		for _, k := range []string{"a", "b"} {
			if err := tx.CreateSnapshot(&Snapshot{Key: k, Kind: snapshots.KindActive, Parent: "base"}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Update(func(tx *Tx) error {
		if got := tx.Children("base"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
			t.Errorf("children = %v", got)
		}
		if err := tx.DeleteSnapshot("base"); !errdefs.IsFailedPrecondition(err) {
			t.Errorf("deleting a parent with children: %v, want FailedPrecondition", err)
		}
		if err := tx.CreateSnapshot(&Snapshot{Key: "a"}); !errdefs.IsAlreadyExists(err) {
			t.Errorf("duplicate key: %v", err)
		}
		if err := tx.CreateSnapshot(&Snapshot{Key: "c", Parent: "a"}); !errdefs.IsInvalidArgument(err) {
			t.Errorf("active parent: %v, want InvalidArgument", err)
		}
		if err := tx.CreateSnapshot(&Snapshot{Key: "d", Parent: "missing"}); !errdefs.IsNotFound(err) {
			t.Errorf("missing parent: %v, want NotFound", err)
		}
		a, _ := tx.Snapshot("a")
		a.Key, a.Kind = "a-committed", snapshots.KindCommitted
		if err := tx.RenameSnapshot("a", a); err != nil {
			t.Fatal(err)
		}
		if got := tx.Children("base"); len(got) != 2 || got[0] != "a-committed" {
			t.Errorf("children after rename = %v", got)
		}
		for _, k := range []string{"a-committed", "b", "base"} {
			if err := tx.DeleteSnapshot(k); err != nil {
				t.Errorf("delete %s: %v", k, err)
			}
		}
		return nil
	})
}

func TestDeviceIDsAreNeverReused(t *testing.T) {
	s := openTemp(t)
	seen := map[uint32]bool{}
	for i := 0; i < 100; i++ {
		s.Update(func(tx *Tx) error {
			id, err := tx.AllocateDeviceID()
			if err != nil || seen[id] || id == 0 {
				t.Fatalf("id %d err %v (seen %v)", id, err, seen[id])
			}
			seen[id] = true
			if err := tx.PutDevice(&Device{ID: id, State: DeviceReady}); err != nil {
				return err
			}
			return tx.DeleteDevice(id)
		})
	}
}

func TestOpsJournal(t *testing.T) {
	s := openTemp(t)
	var op *Op
	s.Update(func(tx *Tx) (err error) {
		op, err = tx.BeginOp("prepare", "k", 7)
		return err
	})
	s.Update(func(tx *Tx) error { return tx.StepOp(op, "device-created") })
	s.View(func(tx *Tx) error {
		ops, err := tx.Ops()
		if err != nil || len(ops) != 1 || ops[0].Steps[0] != "device-created" || ops[0].DeviceID != 7 {
			t.Errorf("ops = %+v, %v", ops, err)
		}
		return nil
	})
	s.Update(func(tx *Tx) error { return tx.EndOp(op) })
	s.View(func(tx *Tx) error {
		if ops, _ := tx.Ops(); len(ops) != 0 {
			t.Errorf("ops left: %+v", ops)
		}
		return nil
	})
}

func TestSecondOpenIsLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(path, Options{LockTimeout: 100 * time.Millisecond})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if want := "database is locked"; err == nil || !contains(err.Error(), want) {
		t.Fatalf("message %q lacks %q", err, want)
	}
	// Callers retry on the errdefs kind; the message does not print it.
	if !errdefs.IsUnavailable(err) {
		t.Errorf("second open: %v is not errdefs.ErrUnavailable", err)
	}
	if strings.HasSuffix(err.Error(), ": unavailable") {
		t.Errorf("message ends in the errdefs kind's name: %q", err)
	}
}

func TestCorruptDatabaseIsRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metadata.db")
	garbage := make([]byte, 64<<10)
	for i := range garbage {
		garbage[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(path, Options{})
	if !errdefs.IsDataLoss(err) || !contains(err.Error(), "mv "+path) {
		t.Fatalf("corrupt open: %v, want DataLoss with recovery advice", err)
	}
	after, _ := os.ReadFile(path)
	if string(after) != string(garbage) {
		t.Fatal("a corrupt database was modified")
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestReserveDeviceIDsThrough(t *testing.T) {
	s := openTemp(t)
	s.Update(func(tx *Tx) error {
		if err := tx.ReserveDeviceIDsThrough(41); err != nil {
			t.Fatal(err)
		}
		if id, _ := tx.AllocateDeviceID(); id != 42 {
			t.Errorf("first id after reserving through 41 = %d", id)
		}
		tx.ReserveDeviceIDsThrough(10) // lower: no change
		if id, _ := tx.AllocateDeviceID(); id != 43 {
			t.Errorf("next id = %d, want 43", id)
		}
		return nil
	})
}

func TestQuarantineUndecodable(t *testing.T) {
	s := openTemp(t)
	s.db.Update(func(tx *bolt.Tx) error {
		tx.Bucket(bucketSnapshots).Put([]byte("bad"), []byte("{not json"))
		tx.Bucket(bucketChildren).Put(childKey("good", "bad"), nil)
		tx.Bucket(bucketDevices).Put(deviceKey(9), []byte("garbage"))
		tx.Bucket(bucketOps).Put(u64(3), []byte("]"))
		return nil
	})
	s.Update(func(tx *Tx) error {
		if err := tx.CreateSnapshot(&Snapshot{Key: "good"}); err != nil {
			t.Fatal(err)
		}
		return nil
	})
	var moved []string
	if err := s.Update(func(tx *Tx) (err error) { moved, err = tx.QuarantineUndecodable(); return err }); err != nil {
		t.Fatal(err)
	}
	if len(moved) != 3 {
		t.Fatalf("moved %v, want 3 records", moved)
	}
	s.View(func(tx *Tx) error {
		if _, err := tx.Snapshot("good"); err != nil {
			t.Errorf("a good record was touched: %v", err)
		}
		if kids := tx.Children("good"); len(kids) != 0 {
			t.Errorf("index still lists the quarantined child: %v", kids)
		}
		if _, err := tx.Ops(); err != nil {
			t.Errorf("ops still undecodable: %v", err)
		}
		d, err := tx.Device(9)
		if err != nil || d.State != DeviceQuarantined {
			t.Errorf("device 9 placeholder: %+v %v", d, err)
		}
		q, err := tx.Quarantine()
		if err != nil || len(q) != 3 || string(q[0].Value) != "{not json" {
			t.Errorf("quarantine bucket: %+v %v", q, err)
		}
		return nil
	})
}
