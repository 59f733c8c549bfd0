package importer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/extract"
	"github.com/superfly/flyio-image-manager/internal/failpoint"
	"github.com/superfly/flyio-image-manager/metadata"
	"github.com/superfly/flyio-image-manager/snapshotter"
)

// blockStore is the bucket as a block image store. Its fetches share the
// importer's S3 download queue with tarball imports.
func (im *Importer) blockStore() blockimage.Store { return blockimage.NewS3Store(im.s3) }

// chooseBlock decides at Submit whether a run of key (at etag) fills from
// a block image, and returns the manifest's key if so. A block image is
// used when block_prefix is set and the bucket has one for this very
// version of the tarball; --from-block (required) makes its absence, or
// a bad manifest, an error instead of falling back to the tarball.
func (im *Importer) chooseBlock(ctx context.Context, key, etag string, required bool) (string, error) {
	prefix := im.cfg.BlockPrefix
	if prefix == "" {
		if required {
			return "", fmt.Errorf("--from-block: [s3] block_prefix is not set: %w", errdefs.ErrFailedPrecondition)
		}
		return "", nil
	}
	m, ok, err := blockimage.LoadManifest(ctx, im.blockStore(), prefix, key)
	switch {
	case err != nil && required:
		return "", fmt.Errorf("block image of %q: %w", key, err)
	case err != nil:
		log.G(ctx).WithError(err).Warnf("block image of %q unusable; extracting the tarball", key)
		return "", nil
	case !ok && required:
		return "", fmt.Errorf("no block image of %q under %q (publish-base makes one): %w", key, prefix, errdefs.ErrNotFound)
	case !ok:
		return "", nil
	case m.Source.ETag != etag:
		// Stale: published from an older version of the tarball.
		if required {
			return "", fmt.Errorf("block image of %q is of etag %s, the tarball is now %s: %w", key, m.Source.ETag, etag, errdefs.ErrFailedPrecondition)
		}
		log.G(ctx).Infof("block image of %q is of etag %s, not %s; extracting the tarball", key, m.Source.ETag, etag)
		return "", nil
	}
	if _, err := resultOf(m); err != nil {
		if required {
			return "", err
		}
		log.G(ctx).WithError(err).Warnf("block image of %q unusable; extracting the tarball", key)
		return "", nil
	}
	return blockimage.ManifestKey(prefix, key), nil
}

// loadBlock reads the run's manifest again (a resumed run has only its
// key) and checks it is still the one chosen: same tarball version.
func (im *Importer) loadBlock(ctx context.Context, r metadata.Run) (*blockimage.Manifest, extract.Result, error) {
	m, ok, err := blockimage.LoadManifest(ctx, im.blockStore(), im.cfg.BlockPrefix, r.Key)
	if err == nil && !ok {
		err = fmt.Errorf("block image %s is gone from the bucket: %w", r.Block, errdefs.ErrNotFound)
	}
	if err == nil && m.Source.ETag != r.ETag {
		err = fmt.Errorf("block image %s is now of etag %s, not %s: %w", r.Block, m.Source.ETag, r.ETag, errdefs.ErrFailedPrecondition)
	}
	if err != nil {
		return nil, extract.Result{}, err
	}
	res, err := resultOf(m)
	return m, res, err
}

// chunkTable fingerprints what BlockDone's indices refer to: a manifest
// published again (same key and etag, another host's base) may cut the
// device differently, and its chunk i is not the one done.
func chunkTable(m *blockimage.Manifest) string {
	h := sha256.New()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], uint64(m.DeviceSize))
	h.Write(b[:])
	for _, c := range m.Chunks {
		binary.LittleEndian.PutUint64(b[:], uint64(c.Offset))
		h.Write(b[:])
		binary.LittleEndian.PutUint64(b[:], uint64(c.Length))
		h.Write(b[:])
		h.Write([]byte(c.Digest))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// canResumeBlock reports whether an interrupted block run's snapshot may
// be kept and its fill continued: it must have journalled chunks, and
// its snapshot must still exist. The manifest is checked in fillBlock.
func canResumeBlock(ctx context.Context, sn snapshots.Snapshotter, r metadata.Run) bool {
	if r.Block == "" || r.BlockTable == "" || len(r.BlockDone) == 0 || r.SnapshotKey == "" {
		return false
	}
	_, err := sn.Stat(ctx, r.SnapshotKey)
	return err == nil
}

// fillBlock writes the run's block image onto a blank thin device of
// the manifest's size. Only the chunks are written (a fresh thin device
// reads zeros elsewhere and leaves those blocks unprovisioned), then the
// device is synced; committing is the caller's, as for a tarball.
//
// Each chunk is journalled in the run record once the device has been
// synced after it, so that a run resumed after a crash keeps its
// snapshot (process does not remove it) and fetches only the rest.
func (im *Importer) fillBlock(ctx context.Context, sn snapshots.Snapshotter, key string, rs *runState, resume bool) (extract.Result, error) {
	r := rs.snapshot()
	m, res, err := im.loadBlock(ctx, r)
	if err != nil {
		return res, err
	}
	table := chunkTable(m)
	done := r.BlockDone
	if !resume || r.BlockTable != table || len(done) != (len(m.Chunks)+7)/8 {
		if resume {
			// Another manifest under the same key: its chunks are not
			// the ones journalled. Start over on a fresh device.
			log.G(ctx).Infof("block image %s changed since the run started; filling from scratch", r.Block)
			if err := sn.Remove(ctx, key); err != nil && !errdefs.IsNotFound(err) {
				return res, err
			}
		}
		resume = false
		done = make([]byte, (len(m.Chunks)+7)/8)
	}
	im.setState(rs, metadata.RunExtracting, func(r *metadata.Run) { r.BlockTable, r.BlockDone = table, done })
	var mounts []mount.Mount
	if resume {
		mounts, err = sn.Mounts(ctx, key)
	} else {
		mounts, err = sn.Prepare(ctx, key, "", snapshots.WithLabels(map[string]string{
			"flyio.io/import-run":          r.ID,
			"flyio.io/s3-key":              r.Key,
			snapshotter.LabelBlank:         m.FSType,
			snapshots.LabelSnapshotMaxSize: strconv.FormatInt(m.DeviceSize, 10),
			"flyio.io/block-image":         r.Block,
		}))
	}
	if err != nil {
		return res, fmt.Errorf("preparing a blank device for block image %s: %w", r.Block, err)
	}
	if len(mounts) != 1 || !strings.HasPrefix(mounts[0].Source, "/dev/") {
		return res, fmt.Errorf("snapshot %s: mounts %+v are not one block device: %w", key, mounts, errdefs.ErrFailedPrecondition)
	}
	dev, err := os.OpenFile(mounts[0].Source, os.O_RDWR, 0)
	if err != nil {
		return res, err
	}
	defer dev.Close()
	isDone := func(i int) bool { return done[i/8]&(1<<(i%8)) != 0 }
	for i := range m.Chunks {
		if isDone(i) {
			c := m.Chunks[i]
			rs.mu.Lock()
			rs.run.Bytes += c.Length
			rs.run.CompressedBytes += c.CompressedSize
			rs.mu.Unlock()
		}
	}
	stats, err := blockimage.Fill(ctx, im.blockStore(), m, dev, blockimage.FillOptions{
		Prefix: im.cfg.BlockPrefix,
		Done:   isDone,
		OnChunk: func(i int) error {
			// Synced before it is journalled: a chunk on record is on
			// the device, whatever happens next.
			if err := dev.Sync(); err != nil {
				return err
			}
			c := m.Chunks[i]
			rs.mu.Lock()
			done[i/8] |= 1 << (i % 8)
			// A copy: setState marshals the record outside rs.mu.
			rs.run.BlockDone = append([]byte(nil), done...)
			rs.run.Bytes += c.Length
			rs.run.CompressedBytes += c.CompressedSize
			rec := rs.run
			rs.mu.Unlock()
			if err := im.store.Update(func(tx *metadata.Tx) error { return tx.PutRun(&rec) }); err != nil {
				return err
			}
			failpoint.Hit(failpoint.ImportMidBlockFill)
			return nil
		},
	})
	if err != nil {
		return res, fmt.Errorf("filling snapshot %s from block image s3://%s/%s: %w", key, r.Bucket, r.Block, err)
	}
	if err := dev.Sync(); err != nil {
		return res, fmt.Errorf("syncing snapshot %s: %w", key, err)
	}
	log.G(ctx).Infof("filled from block image %s: %d chunks written, %d done before, %d bytes", r.Block, stats.Written, stats.Skipped, stats.Bytes)
	return res, nil
}
