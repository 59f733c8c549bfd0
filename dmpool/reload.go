package dmpool

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/containerd/log"
)

const skipZeroing = "skip_block_zeroing"

// tableOps are the ioctls a table reload uses. The kernel's failures in
// the middle of a reload cannot be caused on demand, so unit tests swap
// these for ones that fail where they choose.
type tableOps struct {
	load   func(name string, t []Target) error
	resume func(name string) error
	clear  func(name string) error
	info   func(name string) (DeviceInfo, error)
	table  func(name string) ([]Target, error)
}

var kernelOps = tableOps{load: LoadTable, resume: Resume, clear: ClearTable, info: GetDeviceInfo, table: Table}

// applyFeatures reloads the table of the active pool when its
// skip_block_zeroing differs from the configuration, so that a changed
// zero_new_blocks takes effect on an existing pool at start. Everything
// else in the table (devices, length, block size, low-water mark, other
// features such as an operator's read_only) stays as it is. The kernel
// keeps the pool and its thin devices across the reload.
func (p *Pool) applyFeatures(ctx context.Context) error {
	name := p.cfg.Name
	t, pt, err := liveTable(name)
	if err != nil {
		return err
	}
	if slices.Contains(pt.Features, skipZeroing) == p.cfg.SkipBlockZeroing {
		return nil
	}
	old := pt.Features
	pt.Features = slices.DeleteFunc(slices.Clone(old), func(f string) bool { return f == skipZeroing })
	if p.cfg.SkipBlockZeroing {
		pt.Features = append([]string{skipZeroing}, pt.Features...)
	}
	newTable := []Target{{Start: t.Start, Length: t.Length, Type: "thin-pool", Params: pt.String()}}
	before, berr := GetDeviceInfo(name)
	if err := reloadTable(ctx, kernelOps, name, []Target{t}, newTable, poolReload(p.cfg.SkipBlockZeroing)); err != nil {
		return fmt.Errorf("%w ([pool] zero_new_blocks decides %s; features active: %v, wanted: %v)", err, skipZeroing, old, pt.Features)
	}
	// The reload may raise a device-mapper event (the new table's pool
	// target binds with the mode the pool had): remember the counter on
	// both sides so the snapshotter's trouble watch does not take it for
	// a mode change.
	if after, aerr := GetDeviceInfo(name); berr == nil && aerr == nil && after.EventNr != before.EventNr {
		p.reload = &ReloadEvents{Before: before.EventNr, After: after.EventNr}
	}
	log.G(ctx).WithField("pool", name).Infof("pool features changed from %v to %v", old, pt.Features)
	return nil
}

// reloadKind is what reloadTable reloads: how its errors name the device,
// what a device left suspended means, and how the live table is told to
// be the new one after a failed resume left the device active again.
type reloadKind struct {
	noun string // "pool", "thin device"
	// suspended is the error kind of a device left suspended, and waits
	// says whose I/O then waits.
	suspended error
	waits     string
	// isNew reports whether live, the device's live table, is the new
	// table.
	isNew func(live []Target) (bool, error)
}

// poolReload is the kind of a pool table reload whose new table has
// skip_block_zeroing wantSkip.
func poolReload(wantSkip bool) reloadKind {
	return reloadKind{noun: "pool", suspended: ErrPoolSuspended, waits: "its thin devices' I/O waits",
		isNew: func(live []Target) (bool, error) {
			skip, err := liveSkip(live)
			return skip == wantSkip, err
		}}
}

// reloadTable swaps the live table oldTable of name for newTable. Every
// way out leaves the device active (not suspended) on newTable (nil),
// active on oldTable with no inactive table left behind (ErrTableReload),
// or says loudly that it could not (k.suspended, or ErrTableReload naming
// the table left loaded).
//
// A resume with an inactive table suspends, swaps and resumes, and the
// kernel can fail at each step: a failed suspend puts the new table back
// as the inactive one (cleared here), a failed swap leaves the device
// suspended on its old table, a failed resume leaves it suspended on the
// new one. Each case is told apart by what the device reports afterwards.
func reloadTable(ctx context.Context, ops tableOps, name string, oldTable, newTable []Target, k reloadKind) error {
	fail := func(errs ...error) error {
		return fmt.Errorf("%s %q: %w: %w", k.noun, name, ErrTableReload, errors.Join(errs...))
	}
	onOld := errors.New("the " + k.noun + " is active on its old table")
	if err := ops.load(name, newTable); err != nil {
		// A failed load loads nothing, but a table someone else loaded
		// must not be swapped in by a later resume either.
		if cerr := clearInactive(ops, name); cerr != nil {
			return fail(err, cerr)
		}
		return fail(err, onOld)
	}
	rerr := ops.resume(name)
	if rerr == nil {
		return nil
	}
	log.G(ctx).WithError(rerr).Warnf("%s %q: resume with the reloaded table failed; restoring an active %s", k.noun, name, k.noun)
	info, err := ops.info(name)
	if err != nil {
		return fmt.Errorf("%s %q: %w: state unknown after a failed reload (check 'dmsetup info %s'): %w", k.noun, name, k.suspended, name, errors.Join(rerr, err))
	}
	if info.InactiveTable {
		// The suspend failed and the new table is still waiting.
		if err := clearInactive(ops, name); err != nil {
			return fail(rerr, err)
		}
	}
	if info.Suspended {
		if err := resumeRetrying(ctx, name, ops.resume); err != nil {
			// Neither the swap nor the resume of whatever is live
			// worked: go back to the old table explicitly.
			if err := restoreOld(ctx, ops, name, oldTable); err != nil {
				log.G(ctx).WithError(err).Errorf("%s %q left suspended after a failed table reload: resume it with 'dmsetup resume %s'", k.noun, name, name)
				return fmt.Errorf("%s %q: %w after a failed table reload (%s; 'dmsetup resume %s' once the cause is fixed): %w",
					k.noun, name, k.suspended, k.waits, name, errors.Join(rerr, err))
			}
			return fail(rerr, errors.New("the "+k.noun+" was resumed on its old table"))
		}
	}
	// Active again: on which table?
	live, err := ops.table(name)
	if err != nil {
		return fail(rerr, err)
	}
	isNew, err := k.isNew(live)
	if err != nil {
		return fail(rerr, err)
	}
	if isNew {
		log.G(ctx).WithError(rerr).Warnf("%s %q: the reloaded table is live after a retried resume", k.noun, name)
		return nil
	}
	return fail(rerr, onOld)
}

// restoreOld loads oldTable again and resumes onto it.
func restoreOld(ctx context.Context, ops tableOps, name string, oldTable []Target) error {
	if err := ops.load(name, oldTable); err != nil {
		return fmt.Errorf("reload of the old table: %w", err)
	}
	if err := resumeRetrying(ctx, name, ops.resume); err != nil {
		return errors.Join(fmt.Errorf("resume on the old table: %w", err), clearInactive(ops, name))
	}
	return nil
}

// clearInactive drops an inactive table of name if there is one.
func clearInactive(ops tableOps, name string) error {
	info, err := ops.info(name)
	if err != nil {
		return fmt.Errorf("is an inactive table left loaded? %w", err)
	}
	if !info.InactiveTable {
		return nil
	}
	if err := ops.clear(name); err != nil {
		return fmt.Errorf("an inactive table is left loaded (a later resume would swap it in; 'dmsetup clear %s'): %w", name, err)
	}
	return nil
}

// liveSkip says whether the live pool table ts has skip_block_zeroing.
func liveSkip(ts []Target) (bool, error) {
	if len(ts) != 1 || ts[0].Type != "thin-pool" {
		return false, fmt.Errorf("device has table %q, not a thin-pool: %w", tableString(ts), ErrMismatch)
	}
	pt, err := parsePoolTable(ts[0].Params)
	if err != nil {
		return false, err
	}
	return slices.Contains(pt.Features, skipZeroing), nil
}
