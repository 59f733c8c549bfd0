package extract

import (
	"strconv"

	"github.com/superfly/flyio-image-manager/internal/units"
)

// ParseSize parses a byte count for limits: a plain number of bytes
// ("1073741824") or a number with a binary unit ("1GiB", "1GB", "1.5 MiB").
// It is internal/units' codec, the one the config and every flag use.
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }

// FormatSize prints n with an IEC unit ("1 GiB", "1.5 MiB", "512 B"), the
// way every command prints sizes; ParseSize reads it back.
func FormatSize(n int64) string { return units.Bytes(n) }

// ExactSize prints n in bytes, the way limits and sizes appear in error
// messages ("1073741825 bytes"), followed by the short form when that form
// is exact ("1073741824 bytes = 1 GiB"). A rounded form is never printed: a
// file one byte over a limit must not read as equal to it.
func ExactSize(n int64) string {
	s := strconv.FormatInt(n, 10) + " bytes"
	if n >= 1024 {
		if h := FormatSize(n); mustParse(h) == n {
			s += " = " + h
		}
	}
	return s
}

func mustParse(s string) int64 {
	n, err := ParseSize(s)
	if err != nil {
		return -1
	}
	return n
}
