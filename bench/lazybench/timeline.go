package main

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// sample is what status said of the lazy origin at one moment of a lazy
// start: where the time goes is read off how the on-demand and prefetch
// counters move while the container starts.
type sample struct {
	at                         time.Duration // since process-image began
	present, onDemand, prefets int64
}

// timeline polls status every period until stop is called, recording
// the fetching origin's counters; it is how a run shows whether the
// start waits for on-demand chunks or for the prefetch.
type timeline struct {
	t0      time.Time
	samples []sample
	stop    func()
}

func watch(e *env, t0 time.Time, period time.Duration) *timeline {
	ctx, cancel := context.WithCancel(context.Background())
	tl := &timeline{t0: t0}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if st, err := e.status(ctx); err == nil {
				for _, o := range st.Origins {
					if o.State == "fetching" {
						tl.samples = append(tl.samples, sample{at: time.Since(t0), present: int64(o.ChunksPresent),
							onDemand: o.OnDemandFetches, prefets: o.Prefetched})
						break
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-time.After(period):
			}
		}
	}()
	tl.stop = func() { cancel(); <-done }
	return tl
}

// String is the samples where a counter moved, "t:present(od/pf)".
func (tl *timeline) String() string {
	var l []string
	var last sample
	for i, s := range tl.samples {
		if i > 0 && s.present == last.present && s.onDemand == last.onDemand {
			continue
		}
		l = append(l, fmt.Sprintf("%.1fs:%d(%d/%d)", s.at.Seconds(), s.present, s.onDemand, s.prefets))
		last = s
	}
	return strings.Join(l, " ")
}
