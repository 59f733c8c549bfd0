package dashboard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// fakeSource is a Source the tests script: what status, runs and the S3
// listing return, and a record of the imports asked for.
type fakeSource struct {
	mu        sync.Mutex
	status    admin.Status
	statusErr error
	runs      []admin.Run
	objs      []s3fetch.ObjectInfo
	listErr   error
	listDelay time.Duration
	lists     int
	requests  []admin.ProcessImageRequest
	deleted   map[string]bool // keys whose image was deleted after its run
	cancels   []string        // run ids Cancel was called with
	cancelErr error           // what Cancel refuses with, if set
}

// Cancel records the call and, unless cancelErr is set, marks the run
// cancelled as the daemon does once the run has cleaned up.
func (f *fakeSource) Cancel(ctx context.Context, id string) (admin.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cancels = append(f.cancels, id)
	for i := range f.runs {
		if f.runs[i].ID != id {
			continue
		}
		if f.cancelErr != nil {
			return f.runs[i], f.cancelErr
		}
		f.runs[i].State, f.runs[i].Error = admin.RunCancelled, "cancelled by the operator"
		return f.runs[i], nil
	}
	return admin.Run{}, errors.New("process-image run " + id + ": no such run: not found")
}

func (f *fakeSource) cancelled() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cancels...)
}

// Images are the done runs' images, less the deleted ones.
func (f *fakeSource) Images(ctx context.Context) ([]admin.ImageInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []admin.ImageInfo
	for _, r := range f.runs {
		if r.State == admin.RunDone && !f.deleted[r.Key] {
			out = append(out, admin.ImageInfo{ID: r.ImageID, Ref: r.Ref, Key: r.Key, ETag: r.ETag, RunID: r.ID})
		}
	}
	return out, nil
}

func (f *fakeSource) Status(ctx context.Context) (admin.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status, f.statusErr
}

func (f *fakeSource) Runs(ctx context.Context) ([]admin.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]admin.Run(nil), f.runs...), nil
}

func (f *fakeSource) ListImages(ctx context.Context) ([]s3fetch.ObjectInfo, error) {
	f.mu.Lock()
	delay := f.listDelay
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, fmt.Errorf("ListObjectsV2: %w", ctx.Err())
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]s3fetch.ObjectInfo(nil), f.objs...), nil
}

// ProcessImage starts a run in the downloading state, as the daemon
// answers an accepted request.
func (f *fakeSource) ProcessImage(ctx context.Context, req admin.ProcessImageRequest) (admin.Run, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests = append(f.requests, req)
	var etag string
	var size int64
	for _, o := range f.objs {
		if o.Key == req.Key {
			etag, size = o.ETag, o.Size
		}
	}
	if etag == "" {
		return admin.Run{}, errors.New("no such key " + req.Key)
	}
	r := admin.Run{
		ID: fmt.Sprintf("run-%d", len(f.requests)), Bucket: "b", Key: req.Key, ETag: etag,
		ImageID: req.ImageID, Ref: "images.flyio.local/" + req.ImageID + ":latest", State: admin.RunDownloading,
		Size: size, CompressedBytes: size / 4, Created: time.Now(),
	}
	f.runs = append(f.runs, r)
	return r, nil
}

func (f *fakeSource) set(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeSource) imports() []admin.ProcessImageRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]admin.ProcessImageRequest(nil), f.requests...)
}

// newFake is a node with a 10 GiB pool (64 KiB blocks) 25% used, three
// images in S3: one ready, one importing at 50%, one not imported.
func newFake() *fakeSource {
	mod := time.Date(2026, 11, 20, 10, 30, 0, 0, time.UTC)
	return &fakeSource{
		status: admin.Status{
			Pool: "flyio-pool",
			PoolState: admin.PoolStatus{
				DataBlockSize:   64 << 10,
				TotalDataBlocks: 163840, // 10 GiB
				UsedDataBlocks:  40960,  // 2.5 GiB
				TotalMetaBlocks: 4096,   // 16 MiB
				UsedMetaBlocks:  512,    // 2 MiB
			},
			FullThreshold: 90,
			Images:        1,
			Snapshots:     map[string]int{"committed": 1},
		},
		objs: []s3fetch.ObjectInfo{
			{Key: "images/alpine.tar", Size: 8 << 20, ETag: `"e-alpine"`, LastModified: mod},
			{Key: "images/busybox.tar.gz", Size: 2 << 20, ETag: `"e-busybox"`, LastModified: mod},
			{Key: "images/debian.tar.zst", Size: 40 << 20, ETag: `"e-debian"`, LastModified: mod},
		},
		runs: []admin.Run{
			{ID: "r-alpine", Key: "images/alpine.tar", ETag: `"e-alpine"`, State: admin.RunDone, Ref: "images.flyio.local/alpine:latest", Size: 8 << 20, CompressedBytes: 8 << 20},
			{ID: "r-busybox", Key: "images/busybox.tar.gz", ETag: `"e-busybox"`, State: admin.RunExtracting, Size: 2 << 20, CompressedBytes: 1 << 20, Entries: 120},
		},
	}
}
