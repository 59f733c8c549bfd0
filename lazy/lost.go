package lazy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// A served device whose connection ends without our Close (the kernel
// dropped it, the protocol broke) is dead: its tables get EIO, and its
// number may later be reused by another image's device. So it stops
// being the origin's device at once (DevicePath is unavailable rather
// than name it), and recoverLoop attaches a fresh device and moves every
// table still on the dead one onto it through OnSwitch, retrying with
// backoff; Status shows why (LastError) until it is done. nbd itself
// never connects a number a table still names, so the dead device's
// tables read EIO meanwhile, never another image's bytes.

type doner interface{ Done() <-chan struct{} }

// watch starts the watcher of served device d, if it can be watched.
func (o *origin) watch(d Device) {
	dd, ok := d.(doner)
	if !ok {
		return
	}
	stop := make(chan struct{})
	o.mu.Lock()
	if o.stops == nil {
		o.stops = map[Device]chan struct{}{}
	}
	o.stops[d] = stop
	o.mu.Unlock()
	go func() {
		select {
		case <-stop:
			return
		case <-o.ctx.Done():
			return
		case <-dd.Done():
		}
		// Closed by us: stop was closed (or ctx cancelled) before Close.
		select {
		case <-stop:
			return
		default:
		}
		if o.ctx.Err() != nil {
			return
		}
		o.ended(d)
	}()
}

// closeServed closes served device d on purpose: its watcher first.
func (o *origin) closeServed(d Device) error {
	o.mu.Lock()
	stop := o.stops[d]
	delete(o.stops, d)
	dead := slices.Contains(o.lost, d)
	o.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	if dead {
		return nil // closed when it ended
	}
	return d.Close()
}

// ended handles served device d's unrequested end.
func (o *origin) ended(d Device) {
	why := d.Close() // releases it; the reason it ended, if it knows one
	err := fmt.Errorf("served device %s ended unrequested; its tables get EIO until they are moved to a new device", d.Path())
	if why != nil {
		err = fmt.Errorf("%w: %w", err, why)
	}
	o.mu.Lock()
	delete(o.stops, d)
	o.lost = append(o.lost, d)
	if o.dev == d {
		o.dev, o.served = nil, false
	}
	start := !o.recovering
	o.recovering = true
	o.mu.Unlock()
	o.fail(err)
	if start {
		o.bg.Add(1)
		go o.recoverLoop()
	}
}

// recoverLoop runs recover until no lost device is left, backing off
// after each failure.
func (o *origin) recoverLoop() {
	defer o.bg.Done()
	cfg := &o.m.cfg
	delay := cfg.RetryMin
	for o.ctx.Err() == nil {
		err := o.recover(o.ctx)
		o.mu.Lock()
		if err == nil && len(o.lost) == 0 {
			o.recovering = false
			o.failing = false
			o.mu.Unlock()
			return
		}
		o.mu.Unlock()
		if err == nil {
			continue // another device ended meanwhile
		}
		o.fail(err)
		select {
		case <-o.ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, cfg.RetryMax)
	}
	o.mu.Lock()
	o.recovering = false
	o.mu.Unlock()
}

// recover gives the origin a device if it has none and moves the
// tables of every lost device onto it.
func (o *origin) recover(ctx context.Context) error {
	o.swMu.Lock()
	defer o.swMu.Unlock()
	if err := o.attachLocked(ctx); err != nil {
		return err
	}
	o.mu.Lock()
	dev := o.dev
	lost := slices.Clone(o.lost)
	o.mu.Unlock()
	if dev == nil {
		return fmt.Errorf("no device to move the tables to")
	}
	var errs []error
	for _, d := range lost {
		if sw := o.m.cfg.OnSwitch; sw != nil {
			if err := sw(ctx, o.name, d.Path(), dev.Path()); err != nil {
				errs = append(errs, fmt.Errorf("moving the tables of dead %s to %s: %w", d.Path(), dev.Path(), err))
				continue
			}
		}
		o.mu.Lock()
		o.lost = slices.DeleteFunc(o.lost, func(x Device) bool { return x == d })
		o.mu.Unlock()
		o.log().WithField("device", dev.Path()).Infof("lazy: tables of the dead served device %s moved", d.Path())
	}
	return errors.Join(errs...)
}
