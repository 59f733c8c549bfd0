package s3fetch

import (
	"context"
	"math/rand/v2"
	"time"
)

// backoff returns the delay before retry number attempt (1-based):
// exponential from RetryBaseDelay, capped at RetryMaxDelay, with jitter in
// [d/2, d] so that parallel part fetches hitting the same throttle do not
// come back in lockstep.
func (c *Client) backoff(attempt int) time.Duration {
	base, max := c.cfg.RetryBaseDelay.Duration(), c.cfg.RetryMaxDelay.Duration()
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// sleep waits d or until ctx ends, returning the context's cause then.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return context.Cause(ctx)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
