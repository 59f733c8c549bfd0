package extract

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestNotATar: input that is no tar at all (a text file, with or without
// compression) says so, rather than "truncated archive: <start of
// archive>"; a real tar damaged after its first entry still reads as
// damaged.
func TestNotATar(t *testing.T) {
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"short-text", []byte("hello\n"), "not a tar archive: the input is neither a tar archive nor a gzip- or zstd-compressed one"},
		{"long-text", []byte(strings.Repeat("not a tar at all\n", 200)), "not a tar archive: the input is neither"},
		{"gzip-of-text", gz(t, []byte(strings.Repeat("hello\n", 200))), "not a tar archive: the gzip stream does not hold a tar archive"},
	} {
		_, err := Validate(context.Background(), bytes.NewReader(c.in), Options{})
		if !errors.Is(err, ErrNotTar) || err.Error() != c.want && !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	b := mkTar(t, file("a", "aaaa"), file("b", "bbbb"))
	if _, err := Validate(context.Background(), bytes.NewReader(b[:1024+300]), Options{}); !errors.Is(err, ErrTruncated) {
		t.Errorf("tar truncated in its second header: %v, want ErrTruncated", err)
	}
}
