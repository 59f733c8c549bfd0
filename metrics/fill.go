package metrics

import (
	"sync"
	"time"

	"github.com/superfly/flyio-image-manager/extract"
)

// The source label values of the S3 fill metrics.
const (
	// SourceImage is a process-image run filling a base from an image
	// tarball.
	SourceImage = "image"
	// SourceLayer is the snapshotter filling a layer from the S3 layer
	// store during a Prepare.
	SourceLayer = "layer"
)

// Fills records the S3 fills of one source. A nil *Fills records
// nothing, so code that may run without metrics needs no checks.
type Fills struct {
	m      *Metrics
	source string
}

// Fills returns the recorder of source's fills (SourceImage, SourceLayer).
func (m *Metrics) Fills(source string) *Fills { return &Fills{m: m, source: source} }

// Start begins timing one fill.
func (f *Fills) Start() *Fill {
	if f == nil {
		return nil
	}
	return &Fill{f: f, start: time.Now()}
}

// Fill is one fill in progress. Bytes are counted as the extractor
// reports progress, so a long import shows up in rate() while it runs
// rather than in one step at its end.
type Fill struct {
	f     *Fills
	start time.Time

	mu                 sync.Mutex
	fetched, extracted int64 // counted so far
}

// Progress counts the bytes read and extracted since the last call. It
// is meant as (part of) extract.Options.Progress.
func (fl *Fill) Progress(p extract.Progress) {
	if fl == nil {
		return
	}
	fl.count(p.CompressedBytes, p.Bytes)
}

// Done counts the bytes not yet reported, the fill's duration and its
// result (ok or the error kind). Call it once.
func (fl *Fill) Done(res extract.Result, err error) {
	if fl == nil {
		return
	}
	fl.count(res.CompressedBytes, res.Bytes)
	fl.f.m.fillRuns.WithLabelValues(fl.f.source, Result(err)).Inc()
	fl.f.m.fillDuration.WithLabelValues(fl.f.source).Observe(time.Since(fl.start).Seconds())
}

// count adds what the cumulative figures grew by since the last call.
func (fl *Fill) count(fetched, extracted int64) {
	fl.mu.Lock()
	df, de := fetched-fl.fetched, extracted-fl.extracted
	if df > 0 {
		fl.fetched = fetched
	}
	if de > 0 {
		fl.extracted = extracted
	}
	fl.mu.Unlock()
	if df > 0 {
		fl.f.m.fetched.WithLabelValues(fl.f.source).Add(float64(df))
	}
	if de > 0 {
		fl.f.m.extracted.WithLabelValues(fl.f.source).Add(float64(de))
	}
}
