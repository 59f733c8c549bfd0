package lazy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/superfly/flyio-image-manager/blockimage"
)

// Device is an attached origin block device. A served device may also
// have Done() <-chan struct{}, closed when its connection ends for any
// reason (nbd): one that ends without Close is replaced (lost.go).
type Device interface {
	Path() string
	Close() error
}

// Config is what a Manager needs. The attach functions are how the
// caller makes devices (nbd for served ones, loop for files), so this
// package knows no kernel interface and its tests run anywhere.
type Config struct {
	// Dir is the cache directory: one subdirectory per origin.
	Dir    string
	Store  blockimage.Store
	Prefix string // the [s3] block_prefix
	// Prefetch is how many chunks the background prefetch of an origin
	// fetches at once (0: 4).
	Prefetch int
	// PrefetchQuiet is how long the origin must have had no read before
	// its prefetch starts another chunk, and how long after the attach
	// the prefetch starts (0: 5s; negative: no wait). Reads waiting for
	// chunks always hold the prefetch back; reads served from the cache
	// at most max(30s, PrefetchQuiet) at a time (gate.go).
	PrefetchQuiet time.Duration
	// MaxFetches bounds an origin's chunk fetches in flight, on demand
	// and prefetch together, and so the memory they hold: two chunk
	// buffers each (0: Prefetch+8).
	MaxFetches int
	// ReadTimeout bounds the fetches one read of a served device waits
	// for (0: 60s); the read then fails with EIO rather than hang.
	ReadTimeout time.Duration
	// RetryMin and RetryMax bound the backoff of the background work
	// (attach, prefetch, switch) after a failure (0: 1s, 1m).
	RetryMin, RetryMax time.Duration

	// AttachServed attaches a device of size bytes served by r (nbd).
	AttachServed func(ctx context.Context, size int64, r io.ReaderAt) (Device, error)
	// AttachFile attaches a read-only device over the open file f (a
	// loop over the very file this package opened and checked, never a
	// path looked up again); f stays the caller's to close.
	AttachFile func(ctx context.Context, f *os.File, size int64) (Device, error)
	// OnSwitch is called once an origin's cache is complete and its file
	// device attached at newPath, before its served device (oldPath) is
	// closed: the caller reloads every thin table using oldPath onto
	// newPath. An error keeps the served device; the switch is retried
	// after a backoff and the error reported in Status. Nil: nothing
	// to reload.
	OnSwitch func(ctx context.Context, name, oldPath, newPath string) error
}

func (c *Config) defaults() error {
	if c.Dir == "" || c.Store == nil || c.AttachServed == nil || c.AttachFile == nil {
		return fmt.Errorf("lazy: Config needs Dir, Store, AttachServed and AttachFile: %w", errdefs.ErrInvalidArgument)
	}
	if c.Prefetch <= 0 {
		c.Prefetch = 4
	}
	switch {
	case c.PrefetchQuiet == 0:
		c.PrefetchQuiet = 5 * time.Second
	case c.PrefetchQuiet < 0:
		c.PrefetchQuiet = 0
	}
	if c.MaxFetches <= 0 {
		c.MaxFetches = c.Prefetch + 8
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 60 * time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = time.Second
	}
	if c.RetryMax < c.RetryMin {
		c.RetryMax = max(c.RetryMin, time.Minute)
	}
	return nil
}

// Manager owns the origins under Config.Dir: their caches, their devices
// and their background prefetch.
type Manager struct {
	cfg    Config
	ctx    context.Context // cancelled by Close; carries the logger
	cancel context.CancelFunc

	ops     sync.Mutex // serializes Create and Remove
	mu      sync.Mutex
	origins map[string]*origin
	closed  bool
}

// Open loads every origin under cfg.Dir and attaches it: a complete one
// as a file device, a partial one as a served device with its prefetch
// resumed from its bitmap. An origin directory that does not check out
// (a bad name, a manifest ParseManifest refuses, files of the wrong
// size) is reported in Status as broken and left as it is.
func Open(ctx context.Context, cfg Config) (*Manager, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	m := &Manager{cfg: cfg, ctx: mctx, cancel: cancel, origins: map[string]*origin{}}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			// A Create that crashed before its rename: nothing uses it.
			log.G(ctx).WithField("path", filepath.Join(cfg.Dir, name)).Warn("lazy: leftover temporary origin directory; remove it")
			continue
		}
		o := m.newOrigin(name)
		m.origins[name] = o
		if err := ValidateName(name); err != nil {
			o.setBroken(err)
			continue
		}
		files, err := loadOrigin(o.dir)
		if err != nil {
			o.setBroken(err)
			continue
		}
		o.start(files)
	}
	return m, nil
}

func (m *Manager) lookup(name string) (*origin, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("lazy: manager closed: %w", errdefs.ErrUnavailable)
	}
	o, ok := m.origins[name]
	if !ok {
		return nil, fmt.Errorf("origin %q: %w", name, errdefs.ErrNotFound)
	}
	return o, nil
}

// Create makes the origin name for the block image man and attaches its
// served device. It is idempotent: an origin of that name with the same
// device size and chunk table is success (once it has a device); another
// one is ErrAlreadyExists.
func (m *Manager) Create(ctx context.Context, name string, man *blockimage.Manifest) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if err := man.Validate(); err != nil {
		return err
	}
	m.ops.Lock()
	defer m.ops.Unlock()
	o, err := m.lookup(name)
	switch {
	case err == nil:
		return o.sameImage(man)
	case !errors.Is(err, errdefs.ErrNotFound):
		return err
	}
	o = m.newOrigin(name)
	if err := createOrigin(o.dir, man); err != nil {
		return fmt.Errorf("origin %q: %w", name, err)
	}
	files, err := loadOrigin(o.dir)
	if err != nil {
		// What we just wrote does not load: keep it for the operator.
		o.setBroken(err)
	} else {
		o.start(files)
	}
	m.mu.Lock()
	if m.closed {
		// Close ran while this Create attached, and did not see o: close
		// it here, or its device outlives the manager. The directory
		// stays for the next Open, like every other origin's.
		m.mu.Unlock()
		if cerr := o.close(); cerr != nil {
			log.G(ctx).WithError(cerr).WithField("origin", name).Warn("lazy: closing the origin's device")
		}
		return fmt.Errorf("origin %q: lazy: manager closed: %w", name, errdefs.ErrUnavailable)
	}
	m.origins[name] = o
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("origin %q: %w", name, err)
	}
	if _, err := o.devicePath(); err != nil {
		return err
	}
	log.G(ctx).WithField("origin", name).WithField("chunks", len(man.Chunks)).Info("lazy: origin created")
	return nil
}

// DevicePath is the origin's current device: the served one while it is
// fetched, the file one once it is local. ErrNotFound: no such origin;
// ErrUnavailable: it has no device now (broken, or attaching failed).
func (m *Manager) DevicePath(name string) (string, error) {
	o, err := m.lookup(name)
	if err != nil {
		return "", err
	}
	return o.devicePath()
}

// Remove closes the origin's devices and deletes its directory. The
// caller has made sure no thin device uses the origin.
func (m *Manager) Remove(ctx context.Context, name string) error {
	m.ops.Lock()
	defer m.ops.Unlock()
	o, err := m.lookup(name)
	if err != nil {
		return err
	}
	return m.removeLocked(ctx, name, o)
}

// removeLocked removes origin o; m.ops is held.
func (m *Manager) removeLocked(ctx context.Context, name string, o *origin) error {
	m.mu.Lock()
	delete(m.origins, name)
	m.mu.Unlock()
	if err := o.close(); err != nil {
		log.G(ctx).WithError(err).WithField("origin", name).Warn("lazy: closing the origin's device")
	}
	if err := os.RemoveAll(o.dir); err != nil {
		return fmt.Errorf("origin %q: removing %s: %w", name, o.dir, err)
	}
	return syncDir(m.cfg.Dir)
}

// RemoveIf is Remove of origin name if unused, called with the origin's
// current device ("" if it has none), says nothing uses it. It runs
// under the lock Create takes, so the origin cannot be created or looked
// up by Create between the judgement and the removal. removed is false,
// without an error, when unused says it is used.
func (m *Manager) RemoveIf(ctx context.Context, name string, unused func(dev string) (bool, error)) (removed bool, err error) {
	m.ops.Lock()
	defer m.ops.Unlock()
	o, err := m.lookup(name)
	if err != nil {
		return false, err
	}
	o.mu.Lock()
	broken := o.broken
	o.mu.Unlock()
	if broken {
		// Kept for the operator (doc.go): a directory that did not load
		// may hold a good cache a transient error hid.
		return false, nil
	}
	dev, _ := o.devicePath()
	if ok, err := unused(dev); err != nil || !ok {
		return false, err
	}
	return true, m.removeLocked(ctx, name, o)
}

// Close stops every prefetch and closes every device. The origins stay
// on disk for the next Open.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	// A copy: Remove may delete from the map meanwhile. A Create that
	// passed its lookup before closed was set closes its own origin
	// (Create), so Close need not wait for it.
	origins := make([]*origin, 0, len(m.origins))
	for _, o := range m.origins {
		origins = append(origins, o)
	}
	m.mu.Unlock()
	m.cancel()
	var errs []error
	for _, o := range origins {
		if err := o.close(); err != nil {
			errs = append(errs, fmt.Errorf("origin %q: %w", o.name, err))
		}
	}
	return errors.Join(errs...)
}
