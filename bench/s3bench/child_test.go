package main

import (
	"encoding/json"
	"testing"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

// TestWireConfigRoundTrip: the parent hands the child its S3 config as
// JSON, and units.Seconds does not read back the number it writes.
func TestWireConfigRoundTrip(t *testing.T) {
	c := s3fetch.DefaultConfig()
	c.Endpoint, c.DownloadTimeout, c.PartTimeout = "http://127.0.0.1:1", 3600, 0.5
	b, err := json.Marshal(childArgs{S3: toWire(c)})
	if err != nil {
		t.Fatal(err)
	}
	var a childArgs
	if err := json.Unmarshal(b, &a); err != nil {
		t.Fatal(err)
	}
	if got := a.S3.config(); got.Endpoint != c.Endpoint || got.DownloadTimeout != 3600 || got.PartTimeout != 0.5 ||
		got.RetryBaseDelay != c.RetryBaseDelay || got.PartSize != c.PartSize {
		t.Fatalf("round trip: %+v, want %+v", got, c)
	}
}
