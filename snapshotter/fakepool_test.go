package snapshotter

import (
	"context"
	"fmt"
	"sync"

	"github.com/superfly/flyio-image-manager/dmpool"
)

// fakePool keeps thin ids and activations in memory, for fast tests of the
// metadata logic. It proves nothing about device-mapper: the VM tests do.
type fakePool struct {
	mu     sync.Mutex
	thins  map[uint32]uint64 // id -> mapped bytes
	active map[string]uint32
	// origins is the external origin device of each live device that has one.
	origins map[string]string
	fail    map[string]error // operation name -> error to return once
	// failing makes an operation fail with its error every time, until
	// the entry is deleted (a device that stays busy).
	failing map[string]error
	// calls counts the calls of each operation that can fail.
	calls map[string]int
	// discarded lists the thin ids Discard was called for, in order.
	discarded []uint32
	// hooks run once, outside the lock, when the operation is entered:
	// tests use them to interleave operations or change the metadata
	// at a chosen point.
	hooks map[string]func()
	// status is what Events reports: tests set the mode flags and the
	// event counter to play pool trouble.
	status dmpool.Status
}

func newFakePool() *fakePool {
	return &fakePool{thins: map[uint32]uint64{}, active: map[string]uint32{}, origins: map[string]string{}, fail: map[string]error{},
		failing: map[string]error{}, calls: map[string]int{}, hooks: map[string]func(){}}
}

func (p *fakePool) Name() string { return "fake" }

// hook runs and forgets the hook of op, if one is set.
func (p *fakePool) hook(op string) {
	p.mu.Lock()
	h := p.hooks[op]
	delete(p.hooks, op)
	p.mu.Unlock()
	if h != nil {
		h()
	}
}

func (p *fakePool) injected(op string) error {
	p.calls[op]++
	if err, ok := p.fail[op]; ok {
		delete(p.fail, op)
		return err
	}
	if err, ok := p.failing[op]; ok {
		return err
	}
	return nil
}

// setFailing makes op fail with err every time (nil: succeed again).
func (p *fakePool) setFailing(op string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err == nil {
		delete(p.failing, op)
	} else {
		p.failing[op] = err
	}
}

// callCount is how many times op was called.
func (p *fakePool) callCount(op string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls[op]
}

func (p *fakePool) CreateThin(ctx context.Context, id uint32) error {
	p.hook("create")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("create"); err != nil {
		return err
	}
	if _, ok := p.thins[id]; ok {
		return fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceExists)
	}
	p.thins[id] = 0
	return nil
}

func (p *fakePool) CreateSnapshot(ctx context.Context, id, origin uint32) error {
	p.hook("snapshot")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("snapshot"); err != nil {
		return err
	}
	if _, ok := p.thins[origin]; !ok {
		return fmt.Errorf("origin %d: %w", origin, dmpool.ErrNotFound)
	}
	if _, ok := p.thins[id]; ok {
		return fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceExists)
	}
	p.thins[id] = p.thins[origin]
	return nil
}

func (p *fakePool) Activate(ctx context.Context, name string, id uint32, size uint64) (string, error) {
	p.hook("activate")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("activate"); err != nil {
		return "", err
	}
	if _, ok := p.thins[id]; !ok {
		return "", fmt.Errorf("thin %d: %w", id, dmpool.ErrNotFound)
	}
	p.active[name] = id
	return "/dev/mapper/" + name, nil
}

func (p *fakePool) ActivateWithOrigin(ctx context.Context, name string, id uint32, size uint64, origin string) (string, error) {
	p.mu.Lock()
	if have, ok := p.origins[name]; ok && p.active[name] == id && have != origin {
		p.mu.Unlock()
		return "", fmt.Errorf("%s: live with origin %s: %w", name, have, dmpool.ErrDeviceExists)
	}
	p.mu.Unlock()
	path, err := p.Activate(ctx, name, id, size)
	if err == nil {
		p.mu.Lock()
		p.origins[name] = origin
		p.mu.Unlock()
	}
	return path, err
}

func (p *fakePool) ReloadOrigin(ctx context.Context, name, origin string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("reload-origin"); err != nil {
		return err
	}
	if _, ok := p.active[name]; !ok {
		return fmt.Errorf("%s: %w", name, dmpool.ErrNotFound)
	}
	p.origins[name] = origin
	return nil
}

func (p *fakePool) Deactivate(ctx context.Context, name string) error {
	p.hook("deactivate")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("deactivate"); err != nil {
		return err
	}
	// Like dmpool, deactivating a device that is not active succeeds.
	delete(p.active, name)
	delete(p.origins, name)
	return nil
}

func (p *fakePool) Delete(ctx context.Context, id uint32) error {
	p.hook("delete")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("delete"); err != nil {
		return err
	}
	if _, ok := p.thins[id]; !ok {
		return fmt.Errorf("thin %d: %w", id, dmpool.ErrNotFound)
	}
	for _, a := range p.active {
		if a == id {
			return fmt.Errorf("thin %d: %w", id, dmpool.ErrDeviceBusy)
		}
	}
	delete(p.thins, id)
	return nil
}

func (p *fakePool) Discard(ctx context.Context, name string, id uint32, size uint64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("discard"); err != nil {
		return err
	}
	if _, ok := p.thins[id]; !ok {
		return fmt.Errorf("thin %d: %w", id, dmpool.ErrNotFound)
	}
	if _, ok := p.active[name]; ok {
		return fmt.Errorf("%s: %w", name, dmpool.ErrDeviceBusy)
	}
	p.thins[id] = 0
	p.discarded = append(p.discarded, id)
	return nil
}

func (p *fakePool) ThinStatus(ctx context.Context, name string) (dmpool.ThinStatus, error) {
	p.hook("status")
	p.mu.Lock()
	defer p.mu.Unlock()
	id, ok := p.active[name]
	if !ok {
		return dmpool.ThinStatus{}, fmt.Errorf("%s: %w", name, dmpool.ErrNotFound)
	}
	return dmpool.ThinStatus{MappedBytes: p.thins[id]}, nil
}

func (p *fakePool) Events(ctx context.Context) (dmpool.Status, error) {
	p.hook("events")
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.injected("events"); err != nil {
		return dmpool.Status{}, err
	}
	return p.status, nil
}

// setStatus changes what Events reports.
func (p *fakePool) setStatus(f func(*dmpool.Status)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(&p.status)
}
