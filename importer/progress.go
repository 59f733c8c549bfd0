package importer

import (
	"io"
	"sync"
	"time"
)

// How often a run's live figures follow the bytes read from S3. The
// extractor's own Progress comes every few MiB of uncompressed stream, so
// a run whose download stalls, or whose archive is smaller than that,
// would otherwise show 0 B until it ends.
const (
	readReportBytes    = 64 << 10
	readReportInterval = 100 * time.Millisecond
)

// readCounter counts the bytes read through it and reports the running
// total: at once when readReportBytes or more are unreported (or the
// reader returns an error or EOF), otherwise from a timer within
// readReportInterval, so the last bytes before a stall are not left out.
// Totals are reported in increasing order, never from two goroutines at
// once.
type readCounter struct {
	r        io.Reader
	every    int64
	interval time.Duration
	report   func(total int64)

	mu      sync.Mutex
	n, sent int64
	timer   *time.Timer
	stopped bool
}

func newReadCounter(r io.Reader, report func(total int64)) *readCounter {
	return &readCounter{r: r, every: readReportBytes, interval: readReportInterval, report: report}
}

func (c *readCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n += int64(n)
	switch {
	case c.stopped || c.n == c.sent:
	case err != nil || c.n-c.sent >= c.every:
		c.flushLocked()
	case c.timer == nil:
		c.timer = time.AfterFunc(c.interval, c.flush)
	}
	return n, err
}

// Stop reports what is left and ends the reports; call it once the
// reader is no longer read.
func (c *readCounter) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
	c.stopped = true
}

func (c *readCounter) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timer = nil
	if !c.stopped {
		c.flushLocked()
	}
}

// flushLocked reports the total if it grew; c.mu is held, which keeps
// reports in order.
func (c *readCounter) flushLocked() {
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	if c.n > c.sent {
		c.sent = c.n
		c.report(c.n)
	}
}
