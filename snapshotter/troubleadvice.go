package snapshotter

import (
	"strconv"
	"strings"

	"github.com/containerd/containerd/v2/core/snapshots"
)

// What Commit's lost-writes refusal tells the operator depends on two
// things: what the trouble was (space runs out and comes back; a
// read-only or failed pool needs its devices fixed and a check) and what
// the snapshot is (a layer being unpacked is unpacked again by a retried
// pull; a container's writable layer holds writes nobody can redo).

// snapshotPurpose is what a snapshot is for, as far as its key tells.
type snapshotPurpose int

const (
	// purposeWritable: a container's writable layer, a build step, a
	// direct client's snapshot (ctr snapshots prepare): writes that no
	// retry makes again.
	purposeWritable snapshotPurpose = iota
	// purposeUnpack: containerd's layer applier ("extract-<unique>
	// <chain id>", snapshots.UnpackKeyFormat): a retried pull unpacks
	// the layer again.
	purposeUnpack
	// purposeImport: a process-image run's snapshot ("flyio-import-<run
	// id>", importer): the run is started again.
	purposeImport
	// purposeFill: a remote layer fill ("remote-fill/<ref>/<suffix>"):
	// the fill is removed, the layer filled or fetched again.
	purposeFill
)

// importKeyPrefix is the importer's snapshot key prefix (importer/run.go).
const importKeyPrefix = "flyio-import-"

// purposeOf reads a snapshot key: containerd's "<ns>/<seq>/<name>", or a
// key a client (our importer, a fill) gave directly.
func purposeOf(key string) snapshotPurpose {
	if strings.HasPrefix(key, "remote-fill/") {
		return purposeFill
	}
	name := key
	if ns, rest, ok := strings.Cut(key, "/"); ok && ns != "" {
		if seq, n, ok := strings.Cut(rest, "/"); ok {
			if _, err := strconv.ParseUint(seq, 10, 64); err == nil {
				name = n
			}
		}
	}
	switch {
	case strings.HasPrefix(name, snapshots.UnpackKeyPrefix+"-"):
		return purposeUnpack
	case strings.HasPrefix(name, importKeyPrefix):
		return purposeImport
	}
	return purposeWritable
}

// retryAdvice is what to do about the snapshot once the pool is fixed.
func retryAdvice(p snapshotPurpose, key string) string {
	switch p {
	case purposeUnpack:
		return "then retry the pull: it unpacks the layer again into a new snapshot"
	case purposeImport:
		return "then run process-image again: the import starts over in a new snapshot"
	case purposeFill:
		return "the fill is removed; the next pull fills the layer again, or containerd downloads it"
	}
	return "this is not a layer being unpacked (a container's writable layer, a build step, a client's own snapshot), " +
		"so no retry can write its data again: its writes may be lost. The snapshot stays active and unchanged: " +
		"copy what you need out of it and check it, or remove it; to commit it anyway, accepting that files in it may have holes, " +
		"run 'flyio-image-manager snapshots accept-lost-writes --key " + strconv.Quote(key) + " --generation <the trouble generation above>' " +
		"and commit again (see TROUBLESHOOTING.md, \"commit ... refused: its writes may have been lost\")"
}

// causeAdvice is what to do about the trouble itself: reason is a
// metadata.PoolTrouble reason (or the pool's trouble now), healthy says
// the pool is in write mode again as Commit saw it.
func causeAdvice(reason string, healthy bool) string {
	switch {
	case strings.HasPrefix(reason, kernelReasonPrefix):
		// First: the kernel's own text quoted after it may say anything
		// ("read-only", "failed").
		return "A write to one of the pool's devices failed while the pool stayed in write mode (most often a failing disk under the pool): " +
			"check the kernel log (dmesg) and the disk's health before anything else; 'flyio-image-manager status' shows the pool"
	case strings.Contains(reason, "at start (checked and loaded again)"):
		return "The start-up check (check_on_start) found the pool in trouble and loaded it again; check 'flyio-image-manager status' shows mode: rw"
	case strings.Contains(reason, "metadata space"):
		return "The pool ran out of metadata space: extend its metadata device (freeing data does not free enough metadata), " +
			"then recover it as for a read-only pool (OPERATIONS.md, \"A pool the kernel made read-only (needs_check)\")"
	case strings.Contains(reason, "failed"):
		if healthy {
			return "The pool had failed (its metadata device failed too) and is writable again now; check 'flyio-image-manager status' and the kernel log (dmesg)"
		}
		return "The pool has failed (an error on its metadata device as well): fix the devices, stop the containers running from the pool " +
			"and restart the daemon (check_on_start), or follow OPERATIONS.md, \"A pool the kernel made read-only (needs_check)\""
	case strings.Contains(reason, "read-only") || strings.Contains(reason, "needs_check"):
		if healthy {
			return "The pool was read-only (a write error on its data device) and is writable again now; check 'flyio-image-manager status' and the kernel log (dmesg)"
		}
		return "The pool is read-only (a write error on its data device): fix the device, stop the containers running from the pool " +
			"and restart the daemon (check_on_start runs thin_check and clears needs_check), or follow OPERATIONS.md, \"A pool the kernel made read-only (needs_check)\""
	case strings.Contains(reason, "out of data space"):
		return "Free space in the pool or extend it (see 'flyio-image-manager status')"
	case strings.Contains(reason, "device-mapper event"):
		return "Find the cause in the kernel log (dmesg: device-mapper thin; most often the pool ran out of data space and got it back) " +
			"and 'flyio-image-manager status'; free space in the pool or extend it if it is nearly full"
	}
	return "See 'flyio-image-manager status' and the kernel log (dmesg)"
}
