package thinmeta

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/internal/atomicfile"
)

// MarkerName is the file, under root_dir, that says a process of ours
// (the daemon, an offline gc) is holding (or was, when it died) the
// pool's metadata snapshot.
// The hold is in the pool's superblock and outlives the process: without
// the file a hold left by a crash would refuse every later gc until an
// operator released it.
const MarkerName = "metadata-snap.reserved"

// marker is MarkerName's content.
type marker struct {
	Pool   string    `json:"pool"`
	PID    int       `json:"pid"`
	BootID string    `json:"boot_id"`
	Time   time.Time `json:"time"`
}

// markerPath is where reserveAndRead records its hold; "" records none.
// Set by service.Open (the daemon's and the offline commands'), read
// under snapMu.
var markerPath string

// SetMarker makes this process's metadata snapshot reads record their
// hold in path (see MarkerName) before reserving and remove it after the
// release.
func SetMarker(path string) {
	snapMu.Lock()
	markerPath = path
	snapMu.Unlock()
}

// Marker is where this process's metadata snapshot reads record their
// hold ("" for nowhere).
func Marker() string {
	snapMu.Lock()
	defer snapMu.Unlock()
	return markerPath
}

// writeMarker records that this process is about to reserve the pool's
// metadata snapshot. snapMu is held.
func writeMarker(pool string) error {
	if markerPath == "" {
		return nil
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	b, err := json.Marshal(marker{Pool: pool, PID: os.Getpid(), BootID: strings.TrimSpace(string(boot)), Time: time.Now().UTC()})
	if err != nil {
		return err
	}
	f, err := atomicfile.Create(markerPath)
	if err != nil {
		return fmt.Errorf("recording the metadata snapshot hold: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Abort()
		return fmt.Errorf("recording the metadata snapshot hold: %w", err)
	}
	if err := f.Commit(); err != nil {
		return fmt.Errorf("recording the metadata snapshot hold: %w", err)
	}
	return nil
}

// removeMarker is called once our hold is released. snapMu is held.
func removeMarker(ctx context.Context) {
	if markerPath == "" {
		return
	}
	if err := os.Remove(markerPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		log.G(ctx).WithError(err).Warnf("removing %s", markerPath)
	}
}

// ReleaseLeftover releases the pool's held metadata snapshot when path
// (see MarkerName) names this pool: a process of ours reserved it and
// died before releasing. Call it holding the database lock alone (the
// daemon's start, an offline gc --force), so that no other process of
// ours can be reading whatever pid the file names. A held snapshot
// without our file is left alone (an operator's thin_dump may be using
// it). released is the root let go.
func ReleaseLeftover(ctx context.Context, pool, path string) (released string, _ error) {
	snapMu.Lock()
	defer snapMu.Unlock()
	return releaseLeftover(ctx, liveDM(pool), path)
}

func releaseLeftover(ctx context.Context, d dm, path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if m.Pool != d.pool {
		log.G(ctx).Warnf("%s names pool %q, not %q: left alone", path, m.Pool, d.pool)
		return "", nil
	}
	held, err := d.heldRoot()
	if err != nil {
		return "", fmt.Errorf("pool %q: %w", d.pool, err)
	}
	if held != "-" {
		if err := d.message("release_metadata_snap"); err != nil {
			return "", fmt.Errorf("pool %q: releasing the metadata snapshot (root %s) a previous daemon or gc (pid %d, %s) left: %w", d.pool, held, m.PID, m.Time.Format(time.RFC3339), err)
		}
		log.G(ctx).Warnf("pool %q: released the metadata snapshot (root %s) a previous daemon or gc (pid %d, boot %s, %s) reserved and did not release", d.pool, held, m.PID, m.BootID, m.Time.Format(time.RFC3339))
	} else {
		held = ""
	}
	if err := os.Remove(path); err != nil {
		return held, err
	}
	return held, nil
}
