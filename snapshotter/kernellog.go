package snapshotter

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/internal/kmsg"
	"github.com/superfly/flyio-image-manager/metadata"
)

// I/O errors the kernel logs for the pool's devices are trouble too.
//
// A write can fail without any change of the pool's mode: a failing data
// disk errors the bios of blocks already provisioned, and dm-thin passes
// the error up as it is; a thin device's own error (a table swapped for
// a test, a dm bug) does the same. Nobody tells Commit: writeback errors
// are logged and dropped ("Buffer I/O error on dev dm-7, ... lost async
// page write", ext4's "I/O error 10 writing to inode"). So every look at
// the pool's trouble (trouble.go) also reads the kernel's log records
// that came since the last look, and one reporting an I/O error on one of
// the pool's devices — a thin device, the pool, its data or metadata
// device — bumps the trouble generation like a mode change.
//
// The records of one boot are numbered; the last one that bumped is
// recorded (PoolTrouble.KernelBoot/KernelSeq) so that a restart, which
// reads the log from its oldest record again, does not count it twice,
// and errors logged while the daemon was down are seen at its start (if
// the kernel still has them). A record is matched by device names in its
// text, and a device-mapper name (dm-N) is gone with its device: the
// kernel names of the pool's devices are recorded for the boot
// (metadata.KernelLogMark; the watcher records what /sys shows, and
// Commit its device's before it deactivates it), so that a restart still
// knows whose dm-N a record names. The mark also keeps the last record
// read: a restart whose first record is newer has lost records to the
// ring's wrap, and counts that as trouble.

// kernelReasonPrefix starts the trouble reason of a kernel log record.
const kernelReasonPrefix = "the kernel logged an I/O error"

// maxKernelRecords is the records read in one round, and
// maxKernelRounds bounds the rounds of one look: a kernel that logs
// faster than that is read no further, and the look says so.
const (
	maxKernelRecords = 10000
	maxKernelRounds  = 100
)

// kernelErrorRecords are the kernel's reports of a failed I/O, each
// anchored at the start of the record's text and capturing the device it
// names: the buffer cache's write-back errors, the block layer's request
// errors (its first words are the status: "I/O", "critical medium",
// "timeout"...), ext4's and XFS's, jbd2's. Only records of the kernel's
// own facility are read: a process can write to /dev/kmsg, and text a
// user controls (a process name in a segfault report) never starts a
// record.
var kernelErrorRecords = []*regexp.Regexp{
	// fs/buffer.c: only the write-back ones ("lost async page write").
	regexp.MustCompile(`^Buffer I/O error on dev(?:ice)? ([\w-]+), logical block \d+, lost (?:a?sync )?page write`),
	// block/blk-core.c (6.x; 5.x prefixes "blk_update_request: "):
	// writes and flushes only, not reads or discards.
	regexp.MustCompile(`^(?:\w+: )?[\w /]*error, dev ([\w-]+), sector \d+ op 0x[0-9a-f]+:\((?:WRITE|WRITE_ZEROES|FLUSH|ZONE_APPEND)\)`),
	regexp.MustCompile(`^EXT[234]-fs warning \(device ([\w-]+)\): ext4_end_bio:\d+: I/O error`),
	regexp.MustCompile(`^EXT[234]-fs error \(device ([\w-]+)\)`),
	regexp.MustCompile(`^EXT4-fs \(([\w-]+)\): (?:I/O error while writing superblock|previous I/O error to superblock detected)`),
	regexp.MustCompile(`^XFS \(([\w-]+)\): .*I/O error`),
	regexp.MustCompile(`^JBD2: (?:Error -5 detected|I/O error) when updating journal superblock for ([\w-]+)\.`),
	regexp.MustCompile(`^JBD2: Detected IO errors while flushing file data on ([\w-]+)`),
	regexp.MustCompile(`^Aborting journal on device ([\w-]+)\.`),
}

// errorDevice returns the device a kernel I/O error report names, or "".
func errorDevice(msg string) string {
	for _, re := range kernelErrorRecords {
		if m := re.FindStringSubmatch(msg); m != nil {
			return m[1]
		}
	}
	return ""
}

// kernelLogPath is the kernel log device (kmsg.Path); a test's file
// otherwise.
var kernelLogPath = kmsg.Path

// sysBlock is where the kernel names device-mapper devices
// (/sys/block/dm-N/dm/name); a test's directory otherwise.
var sysBlock = "/sys/block"

// kernelNamer is the part of *dmpool.Pool that knows its devices' kernel
// names. A pool without it (the unit tests' fake) has no kernel log.
type kernelNamer interface {
	BlockDevices() ([]string, error)
	KernelName(name string) (string, error)
}

// kernelLog is the snapshotter's reader of the kernel log.
type kernelLog struct {
	mu     sync.Mutex
	reader *kmsg.Reader // nil: not read
	closed bool         // it was read, and Close closed it
	boot   string
	// known are, for a kernel name (dm-N), the pool's devices seen or
	// noted with it, oldest first (at most maxNamesPerMinor), for records
	// read after a device went or its minor was reused; notePoolDevices
	// forgets what no record can name any more.
	known map[string][]string
	// fixed are the pool's own kernel names: the pool, its data and
	// metadata devices.
	fixed map[string]bool
	// pending is a reason read but not on record yet (recording it
	// failed): the records are read once, so it is kept for the next
	// look until recorded says it is durable.
	pendingReason string
	pendingSeq    uint64
	pendingLost   bool
	// pendingDevs are the devices the pending records name (bounded by
	// maxReasonDevices+1), pendingGen counts changes of what is pending:
	// recorded clears only what the look that recorded it had read.
	pendingDevs []string
	pendingGen  uint64
	// prunable are known names ("dm-N\x00name") that /sys did not show
	// on their minor at the watcher's last tick: forgotten at the next
	// if still so and nothing is pending (notePoolDevices).
	prunable map[string]bool
	// dismissed says an I/O error record was read and not counted
	// (another's device, an abandoned one) since the position was last
	// written: it is written at the next tick, not markEvery later, so
	// that a restart does not judge it again against whatever holds its
	// minor then.
	dismissed bool
	// drainFailed is when the watcher last logged a failed drain.
	drainFailed time.Time
	// mark is the metadata.KernelLogMark on record for this boot: read
	// at open (its ReadSeq judges the first record read: the ring may
	// have wrapped while the daemon was down), written when names are
	// noted and, now and then, as the reading goes on.
	mark        metadata.KernelLogMark
	markWritten time.Time
	firstRead   bool   // a record was read since open
	readSeq     uint64 // the last record read, when readAny
	readAny     bool
}

// markEvery is how often the read position is written when nothing else
// changed: a position on record older than the one read only makes a
// restart take records it had read for overwritten ones (trouble, in
// doubt), and only if the ring wrapped past it.
const markEvery = 10 * time.Second

// recorded says the reason scanKernelLog returned with pending
// generation gen is on record. What was read since (the watcher drains
// while a look records) stays pending: the next look records it.
func (k *kernelLog) recorded(gen uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if gen != k.pendingGen {
		return
	}
	k.pendingReason, k.pendingSeq, k.pendingLost, k.pendingDevs = "", 0, false, nil
}

// maxReasonDevices bounds the devices a kernel trouble reason names.
const maxReasonDevices = 8

// pend adds a record of ours on dev to what is pending; k.mu held. The
// reason quotes the first record and names every other device (a
// failing data disk errors the writes of all active devices at once): a
// template is judged by the devices its trouble names (template.go).
func (k *kernelLog) pend(seq uint64, dev, msg string) {
	k.pendingSeq = max(k.pendingSeq, seq)
	k.pendingGen++
	if k.pendingReason == "" {
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
		k.pendingReason = fmt.Sprintf("%s on %s: %q", kernelReasonPrefix, dev, msg)
		k.pendingDevs = []string{dev}
		return
	}
	if slices.Contains(k.pendingDevs, dev) || len(k.pendingDevs) > maxReasonDevices {
		return
	}
	k.pendingDevs = append(k.pendingDevs, dev)
	if len(k.pendingDevs) > maxReasonDevices {
		k.pendingReason += "; and on more devices"
		return
	}
	k.pendingReason += "; also on " + dev
}

// openKernelLog starts reading the kernel log, when the pool can name its
// devices and the log can be read (root, not a container without
// /dev/kmsg): otherwise only the pool's mode is watched, and a warning
// says so.
func (s *Snapshotter) openKernelLog(ctx context.Context, path string) {
	k := &s.klog
	namer, ok := s.pool.(kernelNamer)
	if !ok {
		return
	}
	boot, err := kmsg.BootID()
	if err != nil {
		log.G(ctx).WithError(err).Warn("cannot read the boot id: I/O errors the kernel logs are not watched")
		return
	}
	// firstInBoot: the mark on record is of another boot (or there is
	// none), read without error: no start of this boot has been here.
	var mark metadata.KernelLogMark
	firstInBoot := false
	if err := s.store.View(func(tx *metadata.Tx) (err error) { mark, err = tx.KernelLogMark(); return err }); err != nil {
		// Not fatal: what it would tell (names of devices gone, a
		// wrapped ring, whether this boot had a start) is unknown
		// this time; in doubt, every record is judged.
		log.G(ctx).WithError(err).Warn("reading the kernel log mark")
		mark = metadata.KernelLogMark{Boot: boot}
	} else if mark.Boot != boot {
		firstInBoot = true
		mark = metadata.KernelLogMark{Boot: boot}
	}
	// unwatched: this boot had a start all the same, so a later start
	// that can read the log judges every record, this run's included.
	unwatched := func(err error, msg string) {
		log.G(ctx).WithError(err).Warn(msg)
		if !firstInBoot {
			return
		}
		if err := s.store.Update(func(tx *metadata.Tx) error { return tx.PutKernelLogMark(mark) }); err != nil {
			log.G(ctx).WithError(err).Warn("recording the kernel log mark")
		}
	}
	devs, err := namer.BlockDevices()
	if err != nil {
		unwatched(err, "cannot name the pool's devices: I/O errors the kernel logs for them are not watched")
		return
	}
	r, err := kmsg.Open(path)
	if err != nil {
		unwatched(err, "cannot read the kernel log: I/O errors it reports for the pool's devices are not watched (Commit still refuses after the pool's mode changed)")
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.reader, k.boot, k.known, k.fixed = r, boot, map[string][]string{}, map[string]bool{}
	for _, d := range devs {
		k.fixed[d] = true
	}
	k.mark = mark
	for kn, names := range mark.Names {
		k.known[kn] = slices.Clone(names)
	}
	if firstInBoot {
		s.skipKernelLogBacklog(ctx)
	}
}

// skipKernelLogBacklog reads the records the kernel has at the first
// start in a boot (the mark on record is of another boot) without judging
// them, and records the position; k.mu held. None of them can be about a
// write of ours: only the snapshotter activates the pool's thin devices
// (the daemon, or offline gc, which records the mark the same way), and
// every start records the boot, even one that cannot read the log.
// Judged, they would be matched against whatever holds their minors now:
// another pool's or a test's device of earlier in the boot, whose minor
// one of ours took since, would refuse every snapshot.
func (s *Snapshotter) skipKernelLogBacklog(ctx context.Context) {
	k := &s.klog
	skipped := 0
	if _, err := k.readKernelRecords(func(kmsg.Record) { k.firstRead = true; skipped++ }); err != nil {
		// What is left is judged as usual: in doubt, trouble. (What
		// was read before the error is not.)
		log.G(ctx).WithError(err).Warn("reading the kernel log's records from before the first start in this boot")
		return
	}
	if k.readAny {
		log.G(ctx).Debugf("kernel log: first start in this boot, %d records up to %d logged before it are not judged", skipped, k.readSeq)
		s.writeKernelLogMark(ctx, true)
	}
}

// open reports whether the kernel log is being read.
func (k *kernelLog) open() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.reader != nil
}

// closeKernelLog records the mark (the position read, when nothing is
// pending) and closes the log.
func (s *Snapshotter) closeKernelLog(ctx context.Context) {
	s.klog.mu.Lock()
	s.writeKernelLogMark(ctx, true)
	s.klog.mu.Unlock()
	s.klog.close()
}

func (k *kernelLog) close() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.reader != nil {
		k.reader.Close()
		k.reader = nil
		k.closed = true
	}
}

// noteDevice remembers the kernel name of the pool's device name while it
// is active, for records about it read after it is gone. An error says
// the name is not on record: the caller must not deactivate the device
// (once it is gone, a record about it could go unattributed and a lost
// write unseen), and fails instead.
func (s *Snapshotter) noteDevice(ctx context.Context, name string) error {
	namer, ok := s.pool.(kernelNamer)
	if !ok {
		return nil
	}
	k := &s.klog
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.reader == nil {
		return nil
	}
	kn, err := namer.KernelName(name)
	if err != nil {
		return fmt.Errorf("noting the kernel name of %s for the kernel log watch: %w: %w", name, err, errdefs.ErrUnavailable)
	}
	if kn == "" {
		return nil // not active: it writes nothing more
	}
	if !k.know(kn, name) {
		return fmt.Errorf("noting the kernel name %s of %s for the kernel log watch: %d names kept already (records are pending): %w", kn, name, maxKnownNames, errdefs.ErrUnavailable)
	}
	if names := k.mark.Names[kn]; len(names) == 0 || names[len(names)-1] != name {
		// On record before the device goes: a daemon killed after
		// the deactivation reads the records about it at its next
		// start, when only the record says whose dm-N it was. The
		// watcher has written most names already (it sees a device
		// within a second), so this write is seldom made.
		if err := s.writeKernelLogMark(ctx, true); err != nil {
			return fmt.Errorf("noting the kernel name %s of %s for the kernel log watch: %w: %w", kn, name, err, errdefs.ErrUnavailable)
		}
	}
	return nil
}

// know notes that kernel name kn is the pool's device name now; k.mu
// held. The names it had before are kept (a record read later may be
// about one of them) until notePoolDevices forgets them.
// It reports false when kn could not be noted.
func (k *kernelLog) know(kn, name string) bool {
	names := k.known[kn]
	if len(names) > 0 && names[len(names)-1] == name {
		return true
	}
	if _, ok := k.known[kn]; !ok && len(k.known) >= maxKnownNames {
		// More minors than a node has devices: notePoolDevices
		// forgets gone ones within two seconds, so this holds only
		// while records stay pending. The newest device is then
		// judged by what /sys says while it exists (and Commit does
		// not deactivate it: noteDevice).
		return false
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == name })
	names = append(names, name)
	if len(names) > maxNamesPerMinor {
		names = names[len(names)-maxNamesPerMinor:]
	}
	k.known[kn] = names
	return true
}

// maxKnownNames bounds the kernel names kept and recorded, and
// maxNamesPerMinor the names kept for one: a minor reused that often
// within two seconds is not a node's.
const (
	maxKnownNames    = 4096
	maxNamesPerMinor = 4
)

// notePoolDevices notes the kernel names of the pool's thin devices that
// exist now, as /sys names them, and forgets names no record can be
// about any more; k.mu held, after a drain read the log to its end.
//
// A device gone (or its minor now another's) at one tick was gone before
// the next tick's drain began, so that drain read every record the kernel
// logged about it (a device's I/O errors are logged before it can be
// removed). Such a name is forgotten at the tick after the one that first
// saw it gone, and only while nothing read is pending: a record read but
// not on record yet is read again by a restart, which needs the name.
func (s *Snapshotter) notePoolDevices() {
	k := &s.klog
	paths, _ := filepath.Glob(filepath.Join(sysBlock, "dm-*", "dm", "name"))
	prefix := s.pool.Name() + "-thin-"
	now := make(map[string]string, len(paths))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		kn := filepath.Base(filepath.Dir(filepath.Dir(p)))
		now[kn] = strings.TrimSpace(string(b))
		if strings.HasPrefix(now[kn], prefix) {
			k.know(kn, now[kn])
		}
	}
	if k.pendingReason != "" || k.pendingLost {
		k.prunable = nil
		return
	}
	prunable := map[string]bool{}
	for kn, names := range k.known {
		keep := names[:0:0]
		for _, name := range names {
			id := kn + "\x00" + name
			switch {
			case now[kn] == name:
				keep = append(keep, name)
			case k.prunable[id]:
				// Gone since the last tick: forgotten.
			default:
				prunable[id] = true
				keep = append(keep, name)
			}
		}
		if len(keep) == 0 {
			delete(k.known, kn)
		} else {
			k.known[kn] = keep
		}
	}
	k.prunable = prunable
}

// writeKernelLogMark records the names noted and the read position when
// they changed (the position only every markEvery, unless now); k.mu
// held. The position is not written while a reason read is not on
// record yet: a restart must find that record again, or find it
// overwritten.
func (s *Snapshotter) writeKernelLogMark(ctx context.Context, now bool) error {
	k := &s.klog
	if k.reader == nil {
		return nil
	}
	next := k.mark
	namesChanged := !maps.EqualFunc(k.known, k.mark.Names, slices.Equal[[]string])
	if namesChanged {
		next.Names = make(map[string][]string, len(k.known))
		for kn, names := range k.known {
			next.Names[kn] = slices.Clone(names)
		}
	}
	posChanged := k.readAny && (!k.mark.Read || k.readSeq != k.mark.ReadSeq) &&
		k.pendingReason == "" && !k.pendingLost &&
		(now || k.dismissed || time.Since(k.markWritten) >= markEvery)
	if posChanged {
		next.ReadSeq, next.Read = k.readSeq, true
	}
	if !namesChanged && !posChanged {
		return nil
	}
	if err := s.store.Update(func(tx *metadata.Tx) error { return tx.PutKernelLogMark(next) }); err != nil {
		log.G(ctx).WithError(err).Warn("recording the kernel log mark")
		return fmt.Errorf("recording the kernel log mark: %w", err)
	}
	k.mark, k.markWritten = next, time.Now()
	if posChanged {
		k.dismissed = false
	}
	return nil
}

// scanKernelLog reads the records since the last look and returns the
// first I/O error on one of the pool's devices as a trouble reason, with
// the sequence number to record (that of the last such record); "" when
// none. pt is the trouble on record: records it accounted for are skipped.
// errKernelLogUnread is a look that could not read the kernel log to
// its end: a Commit then cannot vouch for its writes and is refused this
// once (nothing is bumped: the records are read at the next look).
var errKernelLogUnread = errors.New("the kernel log could not be read to its end")

// readKernelRecords reads the records the kernel has now, in rounds of
// maxKernelRecords until none is left (at most maxKernelRounds), moving
// the read position and handing each to fn; k.mu held. lost says records
// were overwritten before they were read; an error, that the log could
// not be read to its end (what was read is read).
func (k *kernelLog) readKernelRecords(fn func(kmsg.Record)) (lost bool, err error) {
	for round := 0; round < maxKernelRounds; round++ {
		n, lostNow, err := k.reader.ReadAvailable(maxKernelRecords, func(rec kmsg.Record) {
			if !k.readAny || rec.Seq > k.readSeq {
				k.readSeq, k.readAny = rec.Seq, true
			}
			fn(rec)
		})
		lost = lost || lostNow
		if err != nil {
			return lost, fmt.Errorf("%w: %w", errKernelLogUnread, err)
		}
		if n < maxKernelRecords {
			return lost, nil
		}
	}
	return lost, fmt.Errorf("%w: more than %d records at once", errKernelLogUnread, maxKernelRounds*maxKernelRecords)
}

// drainKernelLog reads the records the kernel has now into the pending
// reason; k.mu held.
func (s *Snapshotter) drainKernelLog(ctx context.Context, after uint64) error {
	k := &s.klog
	prefix := s.pool.Name()
	lost, err := k.readKernelRecords(func(rec kmsg.Record) {
		if !k.firstRead {
			k.firstRead = true
			if k.mark.Read && rec.Seq > k.mark.ReadSeq+1 && !k.pendingLost {
				log.G(ctx).Warnf("kernel log records %d to %d were overwritten while the daemon was not running: counted as trouble, since an I/O error on the pool's devices may have been among them", k.mark.ReadSeq+1, rec.Seq-1)
				k.pendingLost = true
				k.pendingGen++
			}
		}
		// Records up to the position on record were judged
		// by an earlier start of this boot: the position is
		// written only when nothing read is pending, so what
		// they bumped is on record (after) and what they did
		// not must not be judged again against the devices
		// that have their minors now.
		if rec.Seq <= after || rec.Facility != 0 || (k.mark.Read && rec.Seq <= k.mark.ReadSeq) {
			return
		}
		// Every device the record may be about counts unless
		// all are abandoned: a minor reused names two.
		tok := errorDevice(rec.Message)
		devs := k.ourDevices(tok, prefix)
		if !slices.ContainsFunc(devs, func(d string) bool { return !s.abandonedDevice(d) }) {
			k.dismissed = k.dismissed || tok != ""
			return
		}
		for _, dev := range devs {
			k.pend(rec.Seq, dev, rec.Message)
		}
	})
	if lost && !k.pendingLost {
		// What was overwritten may have held an error of ours: in
		// doubt, trouble. The drain every second (watchKernelLog)
		// makes this need a flood of records.
		log.G(ctx).Warn("kernel log records were overwritten before the daemon read them: counted as trouble, since an I/O error on the pool's devices may have been among them")
		k.pendingLost = true
		k.pendingGen++
	}
	return err
}

// scanKernelLog reads the records since the last look and returns the
// first I/O error on one of the pool's devices as a trouble reason, with
// the sequence number to record (that of the last such record), or
// records lost before they were read; "" when none. pt is the trouble on
// record: records it accounted for are skipped. An error says the log
// could not be read to its end (or is closed: the daemon is stopping).
func (s *Snapshotter) scanKernelLog(ctx context.Context, pt metadata.PoolTrouble) (reason string, seq, gen uint64, err error) {
	k := &s.klog
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.reader == nil {
		if k.closed {
			// A call the daemon's drain abandoned, still running
			// after Close: it cannot vouch for writes.
			return "", 0, 0, fmt.Errorf("%w: it is closed, the daemon is stopping", errKernelLogUnread)
		}
		return "", 0, 0, nil
	}
	if err := s.drainKernelLog(ctx, k.countedUpTo(pt)); err != nil {
		log.G(ctx).WithError(err).Warn("reading the kernel log")
		return "", 0, 0, err
	}
	reason = k.pendingReason
	if k.pendingLost {
		if reason != "" {
			reason += "; "
		}
		reason += kernelReasonPrefix + " (maybe: kernel log records were overwritten before the daemon read them)"
	}
	return reason, k.pendingSeq, k.pendingGen, nil
}

// watchKernelLog drains the kernel log every second, so that its ring
// buffer seldom overwrites records before they are read, and has the
// trouble recorded as soon as a record of ours is there. It ends when
// stop is closed.
func (s *Snapshotter) watchKernelLog(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		k := &s.klog
		k.mu.Lock()
		found := false
		if k.reader != nil {
			found = s.kernelLogTick(ctx)
		}
		k.mu.Unlock()
		if found {
			if _, _, err := s.observeTrouble(ctx); err != nil {
				log.G(ctx).WithError(err).Debug("pool trouble check failed")
			}
		}
	}
}

// countedUpTo is the last record of this boot the trouble on record
// counted (0: none).
func (k *kernelLog) countedUpTo(pt metadata.PoolTrouble) uint64 {
	if pt.KernelBoot != k.boot {
		return 0
	}
	return pt.KernelSeq
}

// kernelLogTick is one round of watchKernelLog; k.mu held. It reports
// whether a record of ours is pending.
func (s *Snapshotter) kernelLogTick(ctx context.Context) bool {
	k := &s.klog
	var pt metadata.PoolTrouble
	if err := s.store.View(func(tx *metadata.Tx) (err error) { pt, err = tx.PoolTrouble(); return err }); err != nil {
		// Without the record of what was counted, records already
		// counted would be counted again: wait for the next tick.
		s.drainFailedWarn(ctx, fmt.Errorf("reading the pool trouble record: %w", err))
		return false
	}
	if err := s.drainKernelLog(ctx, k.countedUpTo(pt)); err != nil {
		s.drainFailedWarn(ctx, err)
		return false
	}
	s.notePoolDevices()
	s.writeKernelLogMark(ctx, false)
	return k.pendingReason != "" || k.pendingLost
}

// drainFailedWarn logs a failed round of the watcher, once a minute at
// most: every Commit's own look reads the log too and refuses while it
// cannot be read, so this says why before an operator meets a refusal.
func (s *Snapshotter) drainFailedWarn(ctx context.Context, err error) {
	k := &s.klog
	if time.Since(k.drainFailed) < time.Minute {
		return
	}
	k.drainFailed = time.Now()
	log.G(ctx).WithError(err).Warn("kernel log watch: this round failed; Commits look again themselves")
}

// abandonedDevice reports whether dev (as ourDevice describes it) is a
// thin device whose data nobody keeps: marked deleting or orphaned, or
// with no record. Its writes failing loses nothing (the write-back of a
// fill mount a kill -9 left, torn down at the next start, fails this way),
// and counting it would refuse every snapshot prepared before. Anything
// else of the pool (a snapshot's, a template's, the pool's own devices)
// counts.
func (s *Snapshotter) abandonedDevice(dev string) bool {
	// dev is "dm-N (<pool>-thin-<id>)" for a thin device.
	_, name, ok := strings.Cut(strings.TrimSuffix(dev, ")"), " (")
	if !ok {
		return false
	}
	rest, ok := strings.CutPrefix(name, s.pool.Name()+"-thin-")
	if !ok {
		return false
	}
	id, err := strconv.ParseUint(rest, 10, 32)
	if err != nil {
		return false
	}
	abandoned := false
	s.store.View(func(tx *metadata.Tx) error {
		d, err := tx.Device(uint32(id))
		switch {
		case errdefs.IsNotFound(err):
			abandoned = true
		case err == nil:
			abandoned = d.State == metadata.DeviceDeleting || d.State == metadata.DeviceOrphaned
		}
		return nil
	})
	return abandoned
}

// ourDevices returns descriptions of the pool's devices kernel device tok
// may be ("dm-7 (pool-thin-12)", "loop1"), or none. A dm-N is the
// device /sys names now, when it is the pool's, and every device of the
// pool noted with that minor and not forgotten: the kernel reuses minors
// at once, so a record read now can be about a device gone since.
func (k *kernelLog) ourDevices(tok, pool string) []string {
	if tok == "" {
		return nil
	}
	if strings.HasPrefix(tok, "dm-") {
		// jbd2 names a journal "dm-7-8" (device, inode).
		if i := strings.IndexByte(tok[3:], '-'); i >= 0 {
			tok = tok[:3+i]
		}
	}
	if k.fixed[tok] {
		return []string{tok}
	}
	if !strings.HasPrefix(tok, "dm-") {
		return nil
	}
	ours := func(name string) bool { return name == pool || strings.HasPrefix(name, pool+"-thin-") }
	var devs []string
	if b, err := os.ReadFile(filepath.Join(sysBlock, tok, "dm", "name")); err == nil {
		if name := strings.TrimSpace(string(b)); ours(name) {
			devs = append(devs, tok+" ("+name+")")
		}
	}
	for _, name := range slices.Backward(k.known[tok]) {
		if d := tok + " (" + name + ")"; ours(name) && !slices.Contains(devs, d) {
			devs = append(devs, d)
		}
	}
	return devs
}
