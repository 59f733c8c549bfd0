package dmpool

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// Status returns the pool's kernel status, after the kernel commits the
// pool metadata so that the counts are current and durable.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	return p.status(ctx, statusInfoFlush)
}

// Events returns the pool's status with its event counter, without the
// metadata commit Status makes: the mode flags and the counter are what
// the trouble watch needs, and it runs often.
func (p *Pool) Events(ctx context.Context) (Status, error) {
	return stableEvents(ctx, func() (Status, error) { return p.status(ctx, statusInfoNoFlush) }, func() (uint32, error) {
		info, err := GetDeviceInfo(p.cfg.Name)
		return info.EventNr, err
	})
}

// stableEvents reads the status until its event counter is the one read
// right after it. The kernel reads the counter before the pool's mode in
// one status ioctl: a pool that goes back to write mode between the two
// would be seen "one event, healthy" (a low-water mark) twice instead of
// a trip into trouble and back. When the counter is the same after the
// status, no mode change came between the two reads.
func stableEvents(ctx context.Context, read func() (Status, error), counter func() (uint32, error)) (Status, error) {
	var s Status
	for range 10 {
		var err error
		if s, err = read(); err != nil {
			return s, err
		}
		after, err := counter()
		if err != nil {
			return s, err
		}
		if after == s.EventNr {
			return s, nil
		}
		if err := ctx.Err(); err != nil {
			return s, err
		}
	}
	// Events keep coming: report a counter that cannot pass for one
	// quiet event, so the watcher counts trouble rather than miss it.
	s.EventNr += 2
	return s, nil
}

func (p *Pool) status(ctx context.Context, get func(string) ([]Target, DeviceInfo, error)) (Status, error) {
	ts, info, err := get(p.cfg.Name)
	if err != nil {
		if isErrno(err, unix.ENXIO) {
			return Status{}, fmt.Errorf("pool %q: %w: %w", p.cfg.Name, ErrPoolMissing, err)
		}
		return Status{}, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	if len(ts) != 1 || ts[0].Type != "thin-pool" {
		return Status{}, fmt.Errorf("pool %q: status %q is not a thin-pool's: %w", p.cfg.Name, tableString(ts), ErrPoolMissing)
	}
	s, err := parsePoolStatus(ts[0].Params)
	if err != nil {
		return Status{}, fmt.Errorf("pool %q: %w", p.cfg.Name, err)
	}
	s.DataBlockSize = uint64(p.cfg.BlockSize)
	s.EventNr = info.EventNr
	return s, nil
}

// CheckWritable reports, as ErrPoolFailed, ErrPoolReadOnly or ErrPoolFull,
// a pool that cannot take new devices. It turns such a pool into a clear
// error. Messages still succeed on a pool that is out of data space, so
// this is the only place that reports it before writes fail.
//
// It asks for the status without a metadata commit: the mode flags are
// reported either way, the counts are the in-core ones, and the
// create_thin or create_snap that follows commits anyway (a commit here
// cost a third of a snapshot's time).
func (p *Pool) CheckWritable(ctx context.Context, what string) error {
	s, err := p.status(ctx, statusInfoNoFlush)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	switch {
	case s.Fail:
		return fmt.Errorf("pool %q: %s: %w", p.cfg.Name, what, ErrPoolFailed)
	case s.ReadOnly || s.NeedsCheck:
		return fmt.Errorf("pool %q: %s: %w (mode ro=%v needs_check=%v)", p.cfg.Name, what, ErrPoolReadOnly, s.ReadOnly, s.NeedsCheck)
	case s.Full():
		return fmt.Errorf("pool %q: %s: %w (data %d/%d blocks, metadata %d/%d blocks)", p.cfg.Name, what, ErrPoolFull,
			s.UsedDataBlocks, s.TotalDataBlocks, s.UsedMetaBlocks, s.TotalMetaBlocks)
	}
	return nil
}
