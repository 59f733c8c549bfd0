package extract

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize parses a byte count for command-line flags: a plain number of
// bytes ("1073741824") or a number with a unit. Units are binary whether or
// not they carry the "i": "1G", "1GB" and "1GiB" are all 1<<30, matching how
// sizes are printed in errors ("file too large: x: 2GB (max 1GB)"), so a
// limit read back from an error message means the same thing. Case and a
// space before the unit are ignored; fractions are allowed ("1.5GB").
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("invalid size %q: empty", s)
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: no number", s)
	}
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "b"), "i")
	shift := 0
	switch unit {
	case "":
	case "k":
		shift = 10
	case "m":
		shift = 20
	case "g":
		shift = 30
	case "t":
		shift = 40
	case "p":
		shift = 50
	default:
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, in[i:])
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("invalid size %q: %w", s, err)
		}
		if n > math.MaxInt64>>shift {
			return 0, fmt.Errorf("invalid size %q: overflows int64", s)
		}
		return n << shift, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	v := f * float64(int64(1)<<shift)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: overflows int64", s)
	}
	return int64(v), nil
}

// FormatSize prints n with a binary unit and a short label ("1GB" for
// 1<<30, "1.5MB", "512B"), the way limits appear in error messages.
// ParseSize reads its output back to the same value when it is exact.
func FormatSize(n int64) string {
	units := []string{"B", "KB", "MB", "GB", "TB", "PB", "EB"}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + "B"
	}
	v := float64(n)
	u := 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + units[u]
}

// ExactSize prints n in bytes, the way limits and sizes appear in error
// messages ("1073741825 bytes"), followed by the short form when that form
// is exact ("1073741824 bytes = 1GB"). A rounded form is never printed: a
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
