package extract

import (
	"strconv"

	"github.com/superfly/flyio-image-manager/internal/units"
)

// Sizes are read and printed by internal/units, the one codec the config,
// every flag and every command use (units.ParseSize, units.Bytes).

// ExactSize prints n in bytes, the way limits and sizes appear in error
// messages ("1073741825 bytes"), followed by the short form when that form
// is exact ("1073741824 bytes = 1 GiB"). A rounded form is never printed: a
// file one byte over a limit must not read as equal to it.
func ExactSize(n int64) string {
	s := strconv.FormatInt(n, 10) + " bytes"
	if n >= 1024 {
		if h := units.Bytes(n); mustParse(h) == n {
			s += " = " + h
		}
	}
	return s
}

func mustParse(s string) int64 {
	n, err := units.ParseSize(s)
	if err != nil {
		return -1
	}
	return n
}
