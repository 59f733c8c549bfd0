package lazy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/lazy"
)

const (
	MiB    = 1 << 20
	prefix = "blocks/"
)

// memStore is an in-memory Store that counts gets per key and can fail
// them.
type memStore struct {
	mu   sync.Mutex
	objs map[string][]byte
	gets map[string]int
	fail func(key string) error
	// delay holds every get this long, so concurrent readers overlap.
	delay time.Duration
}

func newMemStore() *memStore { return &memStore{objs: map[string][]byte{}, gets: map[string]int{}} }

func (s *memStore) Exists(_ context.Context, key string) (int64, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.objs[key]
	return int64(len(b)), ok, nil
}

func (s *memStore) Put(_ context.Context, key string, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objs[key] = bytes.Clone(data)
	return nil
}

func (s *memStore) Get(ctx context.Context, key string) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	s.gets[key]++
	fail, delay := s.fail, s.delay
	b, ok := s.objs[key]
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if fail != nil {
		if err := fail(key); err != nil {
			return nil, 0, err
		}
	}
	if !ok {
		return nil, 0, fmt.Errorf("no such key %q: %w", key, errdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(b)), int64(len(b)), nil
}

func (s *memStore) setFail(f func(string) error) {
	s.mu.Lock()
	s.fail = f
	s.mu.Unlock()
}

func (s *memStore) totalGets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, g := range s.gets {
		n += g
	}
	return n
}

func (s *memStore) getsOf(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[key]
}

// testImage is a device image published to a store.
type testImage struct {
	data []byte
	man  *blockimage.Manifest
}

func randomBytes(n int64, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// publishImage publishes a size-byte image with random data in extents
// and zeros elsewhere.
func publishImage(t *testing.T, st blockimage.Store, size int64, seed uint64, extents ...blockimage.Extent) *testImage {
	t.Helper()
	data := make([]byte, size)
	for i, e := range extents {
		copy(data[e.Offset:], randomBytes(e.Length, seed+uint64(i)))
	}
	meta := blockimage.Meta{DeviceSize: size, FSType: "ext4", Source: blockimage.Source{Key: fmt.Sprintf("images/lazy-%d.tar", seed), ETag: `"e"`}}
	m, _, err := blockimage.Publish(context.Background(), st, bytes.NewReader(data), extents, meta, blockimage.PublishOptions{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return &testImage{data: data, man: m}
}

// fakeDevice is an attached device.
type fakeDevice struct {
	path   string
	r      io.ReaderAt // served devices
	closed atomic.Bool
	a      *fakeAttach
	done   chan struct{} // served devices: closed when the connection ends
	once   sync.Once
}

func (d *fakeDevice) Path() string { return d.path }

// Done is nbd.Device's: only served devices have a connection.
func (d *fakeDevice) Done() <-chan struct{} { return d.done }

// kill ends a served device's connection without Close, as the kernel
// dropping it would.
func (d *fakeDevice) kill() { d.once.Do(func() { close(d.done) }) }

func (d *fakeDevice) Close() error {
	if d.done != nil {
		d.kill()
	}
	if d.closed.Swap(true) {
		return fmt.Errorf("%s closed twice", d.path)
	}
	d.a.record("close " + d.path)
	return nil
}

// fakeAttach makes fake devices and records what happens to them, and
// is the OnSwitch callback.
type fakeAttach struct {
	mu       sync.Mutex
	n        int
	events   []string
	served   map[string]*fakeDevice // by origin path order
	files    []*fakeDevice
	switchFn func(name, path string) error
	switched chan string
	moves    []string // every OnSwitch call: "old -> new"
}

func newFakeAttach() *fakeAttach {
	return &fakeAttach{served: map[string]*fakeDevice{}, switched: make(chan string, 16)}
}

func (a *fakeAttach) record(e string) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
}

func (a *fakeAttach) eventList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.events...)
}

func (a *fakeAttach) servedDev(path string) *fakeDevice {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.served[path]
}

func (a *fakeAttach) moveList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.moves...)
}

func (a *fakeAttach) fileCount() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.files)
}

func (a *fakeAttach) config(dir string, st blockimage.Store) lazy.Config {
	return lazy.Config{
		Dir: dir, Store: st, Prefix: prefix,
		RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond,
		// Short, so the prefetch of these small images is not held long.
		PrefetchQuiet: 10 * time.Millisecond,
		AttachServed: func(_ context.Context, size int64, r io.ReaderAt) (lazy.Device, error) {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.n++
			d := &fakeDevice{path: fmt.Sprintf("/dev/nbd%d", a.n), r: r, a: a, done: make(chan struct{})}
			a.served[d.path] = d
			a.events = append(a.events, "served "+d.path)
			return d, nil
		},
		AttachFile: func(_ context.Context, f *os.File, size int64) (lazy.Device, error) {
			path := f.Name()
			a.mu.Lock()
			defer a.mu.Unlock()
			a.n++
			d := &fakeDevice{path: fmt.Sprintf("/dev/loop%d", a.n), a: a}
			a.files = append(a.files, d)
			a.events = append(a.events, "file "+d.path+" "+path)
			return d, nil
		},
		OnSwitch: func(_ context.Context, name, oldPath, path string) error {
			a.mu.Lock()
			fn := a.switchFn
			a.moves = append(a.moves, oldPath+" -> "+path)
			a.mu.Unlock()
			if fn != nil {
				if err := fn(name, path); err != nil {
					a.record("switch failed " + path)
					return err
				}
			}
			a.record("switch " + name + " " + path)
			a.switched <- path
			return nil
		},
	}
}

func openManager(t *testing.T, cfg lazy.Config) *lazy.Manager {
	t.Helper()
	m, err := lazy.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func statusOf(t *testing.T, m *lazy.Manager, name string) lazy.OriginStatus {
	t.Helper()
	for _, s := range m.Status() {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %q in %+v", name, m.Status())
	return lazy.OriginStatus{}
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameBytes(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("content differs first at byte %d (of %d)", i, len(want))
			}
		}
		t.Fatalf("content differs: %d bytes, want %d", len(got), len(want))
	}
}
