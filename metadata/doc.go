// Package metadata is the snapshotter's bbolt store.
//
// It keeps four things:
//
//   - snapshots: containerd's view (key, kind, parent, labels, timestamps)
//     plus the thin device that backs each one;
//   - a parent→children index, so "does anything depend on this?" is one
//     prefix scan and never a walk over every snapshot;
//   - devices: every thin id the snapshotter ever asked the pool for, with
//     its state, so that after a crash the daemon knows which devices may
//     exist half-made;
//   - operations: the intent and finished steps of every multi-step change
//     (prepare, commit, remove, template creation), written before and after
//     each device-mapper step.
//
// Device-mapper work never happens inside a write transaction: callers
// record an intent, commit, do the slow dm work, then record the outcome.
// That keeps one slow mkfs or suspend from serialising every other Prepare
// (containerd/containerd#12335).
package metadata
