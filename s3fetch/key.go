package s3fetch

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/containerd/errdefs"
)

// MaxKeyLength is S3's limit on the UTF-8 length of an object key.
const MaxKeyLength = 1024

// ErrInvalidKey is matched (errors.Is) by every ValidateKey failure. It wraps
// errdefs.ErrInvalidArgument.
var ErrInvalidKey = fmt.Errorf("invalid S3 key: %w", errdefs.ErrInvalidArgument)

// KeyError says why a key was refused.
type KeyError struct {
	Key    string
	Reason string
}

func (e *KeyError) Error() string {
	return "S3 key validation failed: " + e.Reason + ": " + quoteKey(e.Key)
}

// Unwrap lets errors.Is match ErrInvalidKey and errdefs.ErrInvalidArgument.
func (e *KeyError) Unwrap() error { return ErrInvalidKey }

// ValidateKey refuses keys that are never image or layer names before any
// request is made: keys come from image references and config, and a key
// such as "images/../secrets" or one with control characters should fail
// loudly here rather than fetch something unintended or corrupt logs.
func ValidateKey(key string) error {
	fail := func(reason string) error { return &KeyError{Key: key, Reason: reason} }
	switch {
	case key == "":
		return fail("empty key")
	case len(key) > MaxKeyLength:
		return fail(fmt.Sprintf("key is %d bytes, longer than %d", len(key), MaxKeyLength))
	case !utf8.ValidString(key):
		return fail("invalid UTF-8")
	case strings.HasPrefix(key, "/"):
		return fail("path traversal detected (absolute key)")
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fail(fmt.Sprintf("control character %U", r))
		}
	}
	if strings.ContainsRune(key, '\\') {
		// Not special to S3, but a path separator to anything that later
		// maps keys onto files on other systems.
		return fail("backslash in key")
	}
	for _, seg := range strings.Split(key, "/") {
		switch seg {
		case "..":
			return fail("path traversal detected")
		case ".":
			return fail("path traversal detected (\".\" segment)")
		}
	}
	return nil
}

// validatePrefix is ValidateKey for List prefixes, where "" and a trailing
// "/" are normal.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := ValidateKey(strings.TrimSuffix(prefix, "/") + "/x"); err != nil {
		if ke, ok := err.(*KeyError); ok {
			return &KeyError{Key: prefix, Reason: ke.Reason}
		}
		return err
	}
	return nil
}

// quoteKey names a key in a message without letting control bytes through
// and without printing a whole 1 KiB key.
func quoteKey(key string) string {
	const max = 200
	if len(key) > max {
		return strconv.Quote(key[:max]) + fmt.Sprintf("...(%d bytes)", len(key))
	}
	return strconv.Quote(key)
}
