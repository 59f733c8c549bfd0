package metadata

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// TestBackupWhileWriting takes a backup while another goroutine keeps
// writing, and checks the copy is one consistent state: every record
// written before the backup, and of the concurrent writes a prefix in
// which each snapshot has the device its transaction wrote with it.
func TestBackupWhileWriting(t *testing.T) {
	s := openTemp(t)
	put := func(tx *Tx, key string, id uint32) error {
		if err := tx.CreateSnapshot(&Snapshot{Key: key, Kind: snapshots.KindCommitted, State: SnapshotReady, DeviceID: id}); err != nil {
			return err
		}
		return tx.PutDevice(&Device{ID: id, State: DeviceReady, Role: RoleSnapshot, Owner: key})
	}
	const before = 200
	for i := 1; i <= before; i++ {
		if err := s.Update(func(tx *Tx) error { return put(tx, fmt.Sprintf("before-%d", i), uint32(i)) }); err != nil {
			t.Fatal(err)
		}
	}

	// Grow the file and free the space again first: a write that has to
	// grow bbolt's mmap waits for open read transactions (the backup's),
	// a write into free pages does not.
	pad := bytes.Repeat([]byte("x"), 32<<10)
	for i := 0; i < 64; i++ {
		if err := s.Update(func(tx *Tx) error {
			return tx.PutTemplate(&Template{Name: fmt.Sprintf("pad-%d", i), FSType: string(pad)})
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Update(func(tx *Tx) error {
		for i := 0; i < 64; i++ {
			if err := tx.DeleteTemplate(fmt.Sprintf("pad-%d", i)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := s.Update(func(tx *Tx) error { return put(tx, fmt.Sprintf("during-%d", i), uint32(1000+i)) }); err != nil {
				t.Error(err)
				return
			}
			written.Store(int64(i))
		}
	}()

	// The copy's first write waits until the writer has committed more
	// transactions, so they certainly land while the backup runs.
	var buf bytes.Buffer
	w := &stallingWriter{w: &buf, until: func() bool { return written.Load() >= 50 }}
	n, err := s.Backup(w)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(buf.Len()) {
		t.Errorf("Backup returned %d, wrote %d bytes", n, buf.Len())
	}

	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("opening the backup: %v", err)
	}
	defer c.Close()
	during := 0
	err = c.View(func(tx *Tx) error {
		for i := 1; i <= before; i++ {
			if _, err := tx.Snapshot(fmt.Sprintf("before-%d", i)); err != nil {
				return err
			}
		}
		return tx.Snapshots(func(key string, sn *Snapshot, err error) error {
			if err != nil {
				return err
			}
			d, err := tx.Device(sn.DeviceID)
			if err != nil || d.Owner != key {
				return fmt.Errorf("snapshot %s: device %d = %+v, %v; want its device", key, sn.DeviceID, d, err)
			}
			if sn.DeviceID > 1000 {
				during++
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	// A prefix: during-1..during-N all present when N were copied.
	c.View(func(tx *Tx) error {
		for i := 1; i <= during; i++ {
			if _, err := tx.Snapshot(fmt.Sprintf("during-%d", i)); err != nil {
				t.Errorf("backup holds %d concurrent writes but not during-%d: %v", during, i, err)
			}
		}
		return nil
	})
	if int64(during) >= written.Load() {
		t.Errorf("backup holds all %d concurrent writes; it should be the state as of its start", during)
	}
	t.Logf("backup of %d bytes holds %d of the %d concurrent writes", n, during, written.Load())
}

// stallingWriter holds its first Write until until() is true.
type stallingWriter struct {
	w       *bytes.Buffer
	until   func() bool
	started bool
}

func (s *stallingWriter) Write(p []byte) (int, error) {
	for deadline := time.Now().Add(10 * time.Second); !s.started && !s.until() && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	s.started = true
	return s.w.Write(p)
}

// TestBackupReadOnly backs up a store opened read-only, as the backup
// command does when no daemon runs.
func TestBackupReadOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "metadata.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *Tx) error { return tx.PutImage(&Image{ID: "img"}) }); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	var buf bytes.Buffer
	if _, err := ro.Backup(&buf); err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(dir, "copy.db")
	os.WriteFile(copyPath, buf.Bytes(), 0o600)
	c, err := Open(copyPath, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.View(func(tx *Tx) error { _, err := tx.Image("img"); return err }); err != nil {
		t.Fatalf("image in the copy: %v", err)
	}
}

func TestForgetSpares(t *testing.T) {
	s := openTemp(t)
	err := s.Update(func(tx *Tx) error {
		for _, d := range []*Device{
			{ID: 1, State: DeviceReady, Role: RoleTemplate, Owner: "ext4"},
			{ID: 2, State: DeviceReady, Role: RoleSpare, Owner: "ext4", Origin: 1},
			{ID: 3, State: DeviceCreating, Role: RoleSpare, Owner: "ext4", Origin: 1},
			{ID: 4, State: DeviceReady, Role: RoleSnapshot, Owner: "k"},
		} {
			if err := tx.PutDevice(d); err != nil {
				return err
			}
		}
		ids, err := tx.ForgetSpares()
		if err != nil || len(ids) != 1 || ids[0] != 2 {
			t.Errorf("ForgetSpares = %v, %v; want [2]", ids, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.View(func(tx *Tx) error {
		for _, id := range []uint32{1, 3, 4} {
			if _, err := tx.Device(id); err != nil {
				t.Errorf("device %d: %v", id, err)
			}
		}
		if _, err := tx.Device(2); err == nil {
			t.Errorf("spare 2 still recorded")
		}
		return nil
	})
}
