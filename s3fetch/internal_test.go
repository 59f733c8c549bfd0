package s3fetch

import (
	"testing"
	"time"
)

func TestParseContentRange(t *testing.T) {
	f, l, tot, err := parseContentRange("bytes 100-199/1000")
	if err != nil || f != 100 || l != 199 || tot != 1000 {
		t.Errorf("got %d %d %d %v", f, l, tot, err)
	}
	for _, bad := range []string{"", "bytes */1000", "bytes 5-4/10", "bytes 0-10/10", "items 0-1/2", "bytes 0-1"} {
		if _, _, _, err := parseContentRange(bad); err == nil {
			t.Errorf("parseContentRange(%q) accepted", bad)
		}
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{RetryBaseDelay: 0.1, RetryMaxDelay: 1}}
	for attempt, max := range []time.Duration{0, 100, 200, 400, 800, 1000, 1000} {
		if attempt == 0 {
			continue
		}
		max *= time.Millisecond
		for range 20 {
			d := c.backoff(attempt)
			if d < max/2 || d > max {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", attempt, d, max/2, max)
			}
		}
	}
}
