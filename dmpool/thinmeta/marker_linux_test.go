package thinmeta

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func withMarker(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), MarkerName)
	SetMarker(path)
	t.Cleanup(func() { SetMarker("") })
	return path
}

// A read records its hold in the marker before reserving and removes it
// after the release; a failed release leaves it for the next start.
func TestReadReservedRecordsItsHold(t *testing.T) {
	path := withMarker(t)
	f := &fakeDM{held: "-", reserved: "5"}
	var during marker
	d := f.dm()
	msg := d.message
	d.message = func(m string) error {
		if m == "reserve_metadata_snap" {
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("no marker before reserving: %v", err)
			}
			if err := json.Unmarshal(b, &during); err != nil {
				t.Fatal(err)
			}
		}
		return msg(m)
	}
	if _, err := readReserved(context.Background(), d, bytes.NewReader(poolImage())); err != nil {
		t.Fatal(err)
	}
	if during.Pool != "p" || during.PID != os.Getpid() || during.Time.IsZero() {
		t.Errorf("marker %+v", during)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after the release: %v", err)
	}

	f = &fakeDM{held: "-", reserved: "5"}
	d = f.dm()
	msg = d.message
	d.message = func(m string) error {
		if m == "release_metadata_snap" {
			return errors.New("EIO")
		}
		return msg(m)
	}
	readReserved(context.Background(), d, bytes.NewReader(poolImage()))
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a hold not released lost its marker: %v", err)
	}
}

// At start, a hold our marker names for this pool is released (a daemon
// died inside a read); one without our marker, or with a marker for
// another pool, is left alone.
func TestReleaseLeftover(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), MarkerName)
	write := func(pool string) {
		b, _ := json.Marshal(marker{Pool: pool, PID: 999999})
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}

	f := &fakeDM{held: "7"}
	if got, err := releaseLeftover(ctx, f.dm(), path); err != nil || got != "" || f.held != "7" || len(f.msgs) != 0 {
		t.Fatalf("no marker: released %q, %v; held %q after %v; want left alone", got, err, f.held, f.msgs)
	}

	write("other")
	if got, err := releaseLeftover(ctx, f.dm(), path); err != nil || got != "" || f.held != "7" || len(f.msgs) != 0 {
		t.Fatalf("marker of another pool: released %q, %v; held %q after %v; want left alone", got, err, f.held, f.msgs)
	}

	write("p")
	if got, err := releaseLeftover(ctx, f.dm(), path); err != nil || got != "7" || f.held != "-" || strings.Join(f.msgs, ",") != "release_metadata_snap" {
		t.Fatalf("our marker: released %q, %v; held %q after %v; want released", got, err, f.held, f.msgs)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker after releasing: %v", err)
	}

	// A crash between the marker and the reserve: nothing held, the
	// marker is removed and nothing is sent.
	write("p")
	f = &fakeDM{held: "-"}
	if got, err := releaseLeftover(ctx, f.dm(), path); err != nil || got != "" || len(f.msgs) != 0 {
		t.Fatalf("marker, nothing held: %q, %v after %v", got, err, f.msgs)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("marker left: %v", err)
	}
}
