package lazy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// origin is one origin directory and its devices. Its background work
// (run) attaches, prefetches and switches it until it is local, retrying
// each step after a failure.
type origin struct {
	m         *Manager
	name, dir string
	files     *originFiles // nil when broken
	cache     *cache
	ctx       context.Context
	cancel    context.CancelFunc
	done      chan struct{} // closed when run returns

	// swMu serializes what changes the device and moves tables: attach,
	// switchToFile, recover.
	swMu   sync.Mutex
	mu     sync.Mutex
	dev    Device // what DevicePath names; nil when none
	served bool   // dev is the served device
	// switching is set while OnSwitch moves the tables: dev is the file
	// device already (new tables get it), but the origin is not local
	// until the switch is done.
	switching bool
	broken    bool
	failing   bool // the last step failed; run retries it
	err       *timedError
	// lost are served devices whose connection ended unrequested, which
	// tables may still name; stops the watchers of the live served
	// devices (lost.go). recovering: recoverLoop runs.
	lost       []Device
	stops      map[Device]chan struct{}
	recovering bool
	bg         sync.WaitGroup // recoverLoop
}

func (m *Manager) newOrigin(name string) *origin {
	ctx, cancel := context.WithCancel(m.ctx)
	done := make(chan struct{})
	close(done) // until start runs something
	return &origin{m: m, name: name, dir: filepath.Join(m.cfg.Dir, name), ctx: ctx, cancel: cancel, done: done}
}

func (o *origin) log() *log.Entry { return log.G(o.ctx).WithField("origin", o.name) }

func (o *origin) setBroken(err error) {
	o.mu.Lock()
	o.broken = true
	o.err = &timedError{err: err, at: time.Now()}
	o.mu.Unlock()
	o.log().WithError(err).Error("lazy: broken origin directory left as it is")
}

func (o *origin) fail(err error) {
	o.mu.Lock()
	o.failing = true
	o.err = &timedError{err: err, at: time.Now()}
	o.mu.Unlock()
	if o.ctx.Err() == nil {
		o.log().WithError(err).Warn("lazy: origin step failed; retrying")
	}
}

// start attaches the origin once, so that DevicePath works when Open or
// Create returns, and leaves the rest to run.
func (o *origin) start(files *originFiles) {
	o.files = files
	o.cache = newCache(o.ctx, files.cache, files.man, files.bm, &o.m.cfg)
	if err := o.attach(o.ctx); err != nil {
		o.fail(err)
	}
	o.done = make(chan struct{})
	go o.run()
}

// run does the next step until the origin is local or closed, backing
// off after each failure.
func (o *origin) run() {
	defer close(o.done)
	cfg := &o.m.cfg
	delay := cfg.RetryMin
	for o.ctx.Err() == nil {
		local, err := o.step(o.ctx)
		if err == nil {
			o.mu.Lock()
			o.failing = false
			o.mu.Unlock()
			if local {
				return
			}
			delay = cfg.RetryMin
			continue
		}
		o.fail(err)
		select {
		case <-o.ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, cfg.RetryMax)
	}
}

// step does the one thing the origin needs next: a device, then every
// chunk, then the switch to a file device.
func (o *origin) step(ctx context.Context) (local bool, err error) {
	o.mu.Lock()
	dev, served := o.dev, o.served
	o.mu.Unlock()
	switch {
	case dev == nil:
		return false, o.attach(ctx)
	case !served:
		return true, nil
	case !o.files.bm.complete():
		return false, o.prefetch(ctx)
	default:
		return o.switchToFile(ctx)
	}
}

// attach gives the origin its first device: the file one if every chunk
// is present (after a restart, without the store), else the served one.
func (o *origin) attach(ctx context.Context) error {
	o.swMu.Lock()
	defer o.swMu.Unlock()
	return o.attachLocked(ctx)
}

// attachLocked is attach under swMu; a device attached meanwhile (by
// recoverLoop) is kept.
func (o *origin) attachLocked(ctx context.Context) error {
	o.mu.Lock()
	has := o.dev != nil
	o.mu.Unlock()
	if has {
		return nil
	}
	size := o.files.man.DeviceSize
	if o.files.bm.complete() {
		d, err := o.attachFile(ctx)
		if err != nil {
			return err
		}
		o.setDevice(d, false)
		// Said, so that an operator (and a test) sees after a restart
		// that the origin needs neither S3 nor the daemon for its reads.
		o.log().WithField("device", d.Path()).Info("lazy: origin attached from its complete local cache")
		return nil
	}
	d, err := o.m.cfg.AttachServed(ctx, size, o.cache)
	if err != nil {
		return fmt.Errorf("attaching the served device: %w", err)
	}
	o.setDevice(d, true)
	o.log().WithField("device", d.Path()).Info("lazy: origin attached, served while its chunks are fetched")
	return nil
}

func (o *origin) setDevice(d Device, served bool) {
	o.mu.Lock()
	o.dev, o.served = d, served
	o.mu.Unlock()
	if served {
		o.watch(d)
	}
}

// attachFile attaches the file device over the cache: opened again
// read-only (without following a symlink) and checked to be the file
// the origin has open, so the device reads the bytes this origin
// fetched and verified even if someone replaced the path.
func (o *origin) attachFile(ctx context.Context) (Device, error) {
	f, err := openNoFollow(o.dir, cacheFile, os.O_RDONLY)
	if err != nil {
		return nil, fmt.Errorf("attaching the cache file: %w", err)
	}
	defer f.Close()
	if err := sameFile(f, o.files.cache); err != nil {
		return nil, fmt.Errorf("attaching the cache file: %w", err)
	}
	d, err := o.m.cfg.AttachFile(ctx, f, o.files.man.DeviceSize)
	if err != nil {
		return nil, fmt.Errorf("attaching the cache file: %w", err)
	}
	return d, nil
}

func (o *origin) devicePath() (string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dev != nil {
		return o.dev.Path(), nil
	}
	what := "has no device"
	if o.broken {
		what = "is broken"
	}
	if o.err != nil {
		return "", fmt.Errorf("origin %q %s: %v: %w", o.name, what, o.err.err, errdefs.ErrUnavailable)
	}
	return "", fmt.Errorf("origin %q %s: %w", o.name, what, errdefs.ErrUnavailable)
}

// sameImage is Create's idempotence check.
func (o *origin) sameImage(man *blockimage.Manifest) error {
	if o.files == nil {
		return fmt.Errorf("origin %q exists and is broken (see status); remove it first: %w", o.name, errdefs.ErrFailedPrecondition)
	}
	have := o.files.man
	if have.DeviceSize != man.DeviceSize || !slices.Equal(have.Chunks, man.Chunks) {
		return fmt.Errorf("origin %q exists for another block image: %w", o.name, errdefs.ErrAlreadyExists)
	}
	_, err := o.devicePath()
	return err
}

// close stops the background work, closes the device (reads in flight
// fail: their context is cancelled) and then the files.
func (o *origin) close() error {
	o.cancel()
	<-o.done
	o.bg.Wait()
	o.mu.Lock()
	dev := o.dev
	o.dev = nil
	o.mu.Unlock()
	var err error
	if dev != nil {
		err = dev.Close()
	}
	if o.files != nil {
		o.files.close()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}
