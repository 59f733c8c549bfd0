package extract

import "testing"

// TestExactSizeNeverRounds: the short form is printed only when it reads
// back to the exact count. "1.1 KiB" is 1126.4 bytes, which ParseSize
// used to truncate to 1126, so 1126 bytes were printed as "= 1.1 KiB".
func TestExactSizeNeverRounds(t *testing.T) {
	for n, want := range map[int64]string{
		1126:      "1126 bytes",
		1536:      "1536 bytes = 1.5 KiB",
		1 << 30:   "1073741824 bytes = 1 GiB",
		1<<30 + 1: "1073741825 bytes",
		512:       "512 bytes",
	} {
		if got := ExactSize(n); got != want {
			t.Errorf("ExactSize(%d) = %q, want %q", n, got, want)
		}
	}
}
