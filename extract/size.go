package extract

import "github.com/superfly/flyio-image-manager/internal/units"

// ParseSize parses a byte count for limits: a plain number of bytes
// ("1073741824") or a number with a binary unit ("1GiB", "1GB", "1.5 MiB").
// It is internal/units' codec, the one the config and every flag use.
func ParseSize(s string) (int64, error) { return units.ParseSize(s) }

// FormatSize prints n with an IEC unit ("1 GiB", "1.5 MiB", "512 B"), the
// way every command prints sizes; ParseSize reads it back.
func FormatSize(n int64) string { return units.Bytes(n) }
