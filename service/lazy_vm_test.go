package service

// VM test: a lazily-backed origin over the kernel's real NBD driver and
// a real loop device. It skips without device-mapper (the marker of a
// machine that also has nbd here) and runs in the VM.

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/superfly/flyio-image-manager/blockimage"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/lazy"
	"github.com/superfly/flyio-image-manager/s3fetch/s3test"
)

func TestLazyOriginOverRealNBD(t *testing.T) {
	dmtest.Require(t)
	srv := s3test.Start(t)
	cfg := srv.Config()
	cfg.PartSize = blockimage.MaxChunkSize
	st := blockimage.NewS3Store(srv.Client(t, cfg))
	const size = 24 << 20
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	extents := []blockimage.Extent{{Offset: 0, Length: 9 << 20}, {Offset: 16 << 20, Length: 5 << 20}}
	for _, e := range extents {
		for i := e.Offset; i < e.Offset+e.Length; i++ {
			data[i] = byte(r.Uint32())
		}
	}
	man, _, err := blockimage.Publish(context.Background(), st, bytes.NewReader(data), extents,
		blockimage.Meta{DeviceSize: size, FSType: "ext4", Source: blockimage.Source{Key: "images/x.tar", ETag: `"e"`}},
		blockimage.PublishOptions{Prefix: "blocks/"})
	if err != nil {
		t.Fatal(err)
	}
	switched := make(chan string, 1)
	// The switch waits until the served device has been read whole.
	served := make(chan struct{})
	m, err := lazy.Open(context.Background(), lazy.Config{
		Dir: t.TempDir(), Store: st, Prefix: "blocks/", Prefetch: 1,
		AttachServed: attachServed, AttachFile: attachFile,
		OnSwitch: func(ctx context.Context, name, oldDev, dev string) error { <-served; switched <- dev; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Create(context.Background(), "bi-test", man); err != nil {
		t.Fatal(err)
	}
	dev, err := m.DevicePath("bi-test")
	if err != nil {
		t.Fatal(err)
	}
	readAll := func(path string) {
		t.Helper()
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		if !bytes.Equal(got, data) {
			for i := range data {
				if i >= len(got) || got[i] != data[i] {
					t.Fatalf("%s: %d bytes read, first difference at %d", path, len(got), i)
				}
			}
		}
	}
	readAll(dev)
	close(served)
	select {
	case file := <-switched:
		t.Logf("switched from %s to %s", dev, file)
		readAll(file)
	case <-time.After(2 * time.Minute):
		t.Fatal(fmt.Sprintf("no switch; status %+v", m.Status()))
	}
}
