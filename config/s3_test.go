package config

import "testing"

// Moved from s3fetch with the overrides: [s3] is config's own section.
func TestS3ApplyEnv(t *testing.T) {
	c := defaultS3()
	t.Setenv("DOWNLOAD_TIMEOUT", "42")
	t.Setenv("DOWNLOAD_QUEUE_SIZE", "7")
	if err := c.applyEnv(); err != nil {
		t.Fatal(err)
	}
	if c.DownloadTimeout != 42 || c.DownloadQueueSize != 7 {
		t.Errorf("after applyEnv: timeout %v queue %d", c.DownloadTimeout, c.DownloadQueueSize)
	}
	t.Setenv("DOWNLOAD_QUEUE_SIZE", "many")
	if err := c.applyEnv(); err == nil {
		t.Error("applyEnv accepted DOWNLOAD_QUEUE_SIZE=many")
	}
}

// The [s3] defaults are written once (internal/defaults): config's and
// s3fetch's are the same values, which TestS3ConfigMatches in service
// checks field by field.
func TestS3DefaultsValid(t *testing.T) {
	c := defaultS3()
	if c.Bucket != "" || c.Region != "us-east-1" || c.Prefix != "images/" || c.PartSize != 5<<20 || c.Concurrency != 4 ||
		c.DownloadTimeout != 300 || c.DownloadQueueSize != 3 || c.MaxRetries != 5 {
		t.Errorf("defaultS3() = %+v", c)
	}
	if err := c.validate(); err != nil {
		t.Error(err)
	}
}

// TestS3ValidateRules: [s3] is checked at load by internal/s3check's
// rules, the ones s3fetch.New checks too, with the same words.
func TestS3ValidateRules(t *testing.T) {
	c := defaultS3()
	c.Concurrency = 0
	if err := c.validate(); err == nil || err.Error() != "s3: concurrency must be positive, got 0" {
		t.Errorf("concurrency = 0: %v", err)
	}
}
