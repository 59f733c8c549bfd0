package thinmeta

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// fakeDM is a pool's held-root status and its two messages.
type fakeDM struct {
	held     string // "-" or a block number
	reserved string // the root a reserve takes
	msgs     []string
	// during runs at the status read that follows the metadata read.
	during func(*fakeDM)
	reads  int
}

func (f *fakeDM) dm() dm {
	return dm{
		pool: "p",
		heldRoot: func() (string, error) {
			f.reads++
			if f.reads == 3 && f.during != nil {
				f.during(f)
			}
			return f.held, nil
		},
		message: func(msg string) error {
			f.msgs = append(f.msgs, msg)
			switch msg {
			case "reserve_metadata_snap":
				if f.held != "-" {
					return errors.New("EBUSY")
				}
				f.held = f.reserved
			case "release_metadata_snap":
				f.held = "-"
			}
			return nil
		},
	}
}

func poolImage() image {
	im := newImage(8)
	im.superblock(5, 2, 128)
	im.node(2, leafNode, 126, deviceDetailsSize, []uint64{1, 2}, [][]byte{details(1, 1), details(2, 1)})
	// An old snapshot at block 6 knows only device 1.
	im.superblock(6, 3, 128)
	im.node(3, leafNode, 126, deviceDetailsSize, []uint64{1}, [][]byte{details(1, 1)})
	return im
}

func TestReadReservedTakesAndReleasesItsOwnSnapshot(t *testing.T) {
	f := &fakeDM{held: "-", reserved: "5"}
	md, err := readReserved(context.Background(), f.dm(), bytes.NewReader(poolImage()))
	if err != nil {
		t.Fatal(err)
	}
	if len(md.Devices) != 2 {
		t.Errorf("devices %+v, want 2", md.Devices)
	}
	if f.held != "-" || strings.Join(f.msgs, ",") != "reserve_metadata_snap,release_metadata_snap" {
		t.Errorf("held %q after messages %v", f.held, f.msgs)
	}
}

// A snapshot held before the read (thin_dump -m, a failed release, a
// crash inside a read) is never read: its view may predate devices
// created since, which gc would then think were gone.
func TestReadReservedRefusesASnapshotItDidNotTake(t *testing.T) {
	f := &fakeDM{held: "6", reserved: "5"}
	md, err := readReserved(context.Background(), f.dm(), bytes.NewReader(poolImage()))
	if !errors.Is(err, ErrSnapshotHeld) {
		t.Fatalf("read a held snapshot: %+v, %v", md, err)
	}
	if !strings.Contains(err.Error(), "release_metadata_snap") || !strings.Contains(err.Error(), "pool release-metadata-snap") {
		t.Errorf("the refusal does not say how to release it: %v", err)
	}
	if f.held != "6" || len(f.msgs) != 0 {
		t.Errorf("the other holder's snapshot was touched: held %q, messages %v", f.held, f.msgs)
	}
}

// Someone releasing our snapshot and taking theirs while we read: the
// read fails, and theirs is not released.
func TestReadReservedNoticesItsSnapshotReplaced(t *testing.T) {
	f := &fakeDM{held: "-", reserved: "5", during: func(f *fakeDM) { f.held = "6" }}
	if _, err := readReserved(context.Background(), f.dm(), bytes.NewReader(poolImage())); err == nil {
		t.Fatal("read succeeded although its snapshot was replaced")
	}
	if f.held != "6" {
		t.Errorf("the other holder's snapshot was released: held %q, messages %v", f.held, f.msgs)
	}
}

// Usage's read never waits behind gc's: while another reader of this
// process holds the metadata snapshot, it fails at once, sending no
// message to the pool.
func TestTryUnderSnapshotDoesNotWaitForAnotherReader(t *testing.T) {
	snapMu.Lock()
	f := &fakeDM{held: "-", reserved: "5"}
	err := tryUnderSnapshot(context.Background(), f.dm(), func(uint64) error { return nil })
	snapMu.Unlock()
	if !errors.Is(err, ErrReaderBusy) || len(f.msgs) != 0 {
		t.Fatalf("with another reader: %v after messages %v; want ErrReaderBusy and none", err, f.msgs)
	}
	if err := tryUnderSnapshot(context.Background(), f.dm(), func(uint64) error { return nil }); err != nil {
		t.Fatalf("alone: %v", err)
	}
}
