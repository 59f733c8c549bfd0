package s3fetch_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/superfly/flyio-image-manager/s3fetch"
)

func TestValidateKey(t *testing.T) {
	for _, key := range []string{
		"images/alpine.tar",
		"images/sha256:abc/layer.tar.zst",
		"a",
		"images/ünïcode-名前.tar",
		"images/dir/", // a directory marker is a legal key
		"images/..hidden",
		strings.Repeat("k", s3fetch.MaxKeyLength),
	} {
		if err := s3fetch.ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
	}
	for _, tc := range []struct{ key, msg string }{
		{"", "S3 key validation failed: empty key"},
		{"../etc/passwd", `S3 key validation failed: path traversal detected: "../etc/passwd"`},
		{"images/../../etc", `S3 key validation failed: path traversal detected: "images/../../etc"`},
		{"images/..", "S3 key validation failed: path traversal detected"},
		{"/etc/passwd", `S3 key validation failed: path traversal detected (absolute key): "/etc/passwd"`},
		{"images/./x", `S3 key validation failed: path traversal detected ("." segment)`},
		{"images/a\x00b", `S3 key validation failed: control character U+0000: "images/a\x00b"`},
		{"images/a\x7fb", "control character U+007F"},
		{"images/a\nb", "control character U+000A"},
		{"images/\xff\xfe", "S3 key validation failed: invalid UTF-8"},
		{"images\\..\\x", "S3 key validation failed: backslash in key"},
		{strings.Repeat("k", s3fetch.MaxKeyLength+1), "S3 key validation failed: key is 1025 bytes, longer than 1024"},
	} {
		err := s3fetch.ValidateKey(tc.key)
		if err == nil {
			t.Errorf("ValidateKey(%q) = nil, want error", tc.key)
			continue
		}
		if !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("ValidateKey(%q) = %q, want it to contain %q", tc.key, err, tc.msg)
		}
		if !errors.Is(err, s3fetch.ErrInvalidKey) || !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("ValidateKey(%q) = %v: not ErrInvalidKey/ErrInvalidArgument", tc.key, err)
		}
	}
}
