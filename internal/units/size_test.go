package units

import (
	"strings"
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1073741824": 1 << 30, "1GiB": 1 << 30, "1GB": 1 << 30, "1g": 1 << 30, "1 G": 1 << 30, "1 GiB": 1 << 30,
		"64GiB": 64 << 30, "512": 512, "512B": 512, "2k": 2048, "1.5MB": 3 << 19, "1.5 MiB": 3 << 19, "0": 0,
		"1TB": 1 << 40, "5MiB": 5 << 20, "1PiB": 1 << 50, "7EiB": 7 << 60, " 128KiB ": 128 << 10,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"":                     "want a number of bytes",
		"GB":                   "want a number of bytes",
		"1XB":                  `unknown unit "XB"`,
		"-1":                   "want a number of bytes",
		"99999999999TiB":       "too large, the most is 8EiB",
		"99999999999999999999": "too large",
		"8EiB":                 "too large",
		"9000000PB":            "too large",
		"1e30":                 `unknown unit "e30"`,
		"1.5.5MiB":             "want a number of bytes",
	} {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseSize(%q) = %v, want an error saying %q", in, err, msg)
		}
	}
}

// TestSizeRoundTrip: what we print (String, Bytes) reads back.
func TestSizeRoundTrip(t *testing.T) {
	for n, want := range map[Size]string{512: "512B", 1 << 30: "1GiB", 128 << 10: "128KiB", 1 << 50: "1PiB", 1500: "1500B", 3 << 19: "1536KiB"} {
		if got := n.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", n, got, want)
		}
		if back, err := ParseSize(n.String()); err != nil || Size(back) != n {
			t.Errorf("round trip %d: %d %v", n, back, err)
		}
		if back, err := ParseSize(Bytes(int64(n))); err != nil || (Size(back) != n && n != 1500) {
			t.Errorf("Bytes round trip %d (%s): %d %v", n, Bytes(int64(n)), back, err)
		}
	}
	var s Size
	if err := s.Set("2GiB"); err != nil || s != 2<<30 {
		t.Errorf("Set(2GiB) = %d, %v", s, err)
	}
}

func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"300": 300 * time.Second, "0.5": 500 * time.Millisecond, "5m": 5 * time.Minute, "90s": 90 * time.Second,
		"1h30m": 90 * time.Minute, "250ms": 250 * time.Millisecond, "0": 0,
	} {
		got, err := ParseSeconds(in)
		if err != nil || got.Duration() != want {
			t.Errorf("ParseSeconds(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "soon", "-5", "-1m", "5 minutes", "NaN", "Inf"} {
		_, err := ParseSeconds(bad)
		if err == nil || !strings.Contains(err.Error(), "want a number of seconds or a duration") {
			t.Errorf("ParseSeconds(%q) = %v, want an error saying what is accepted", bad, err)
		}
	}
	if s := Seconds(300); s.String() != "300s" {
		t.Errorf("Seconds(300).String() = %q", s)
	}
}

// TestSecondsDurationSaturates: a timeout longer than time.Duration can
// hold (about 292 years; `download_timeout = 10000000000` or "1e300") is
// read as "as long as can be", never wrapped into a negative duration
// that would time every download out at once.
func TestSecondsDurationSaturates(t *testing.T) {
	for _, in := range []string{"10000000000", "1e300", "9223372037"} {
		s, err := ParseSeconds(in)
		if err != nil {
			t.Fatalf("ParseSeconds(%q): %v", in, err)
		}
		if d := s.Duration(); d != time.Duration(1<<63-1) {
			t.Errorf("ParseSeconds(%q).Duration() = %v, want the longest duration", in, d)
		}
	}
	if d := Seconds(1.5).Duration(); d != 1500*time.Millisecond {
		t.Errorf("Seconds(1.5).Duration() = %v", d)
	}
}

// TestParseSizeWholeBytes: a size that does not come to whole bytes
// ("1.1KiB" is 1126.4) is refused, saying so, where it was truncated
// silently; one that does ("1.5KiB", "0.5MiB") is exact, also where a
// float64 would round ("4.000000000000000001EiB" is not 4EiB).
func TestParseSizeWholeBytes(t *testing.T) {
	for in, want := range map[string]int64{
		"1.5KiB": 1536, "0.5MiB": 512 << 10, "1.25GiB": 5 << 28, "1.0": 1, "2.000B": 2, "0.0009765625KiB": 1,
		"7.5EiB": 15 << 59, "1.5 kb": 1536,
	} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"1.1KiB":                   `invalid size "1.1KiB": not a whole number of bytes (1126.4)`,
		"0.5":                      "not a whole number of bytes (0.5)",
		"1.5B":                     "not a whole number of bytes (1.5)",
		"0.3K":                     "not a whole number of bytes (307.2)",
		"4.000000000000000001EiB":  "not a whole number of bytes",
		"1.1GiB":                   "not a whole number of bytes",
		"7.999999999999999999EiB":  "not a whole number of bytes (about 9223372036854775806.847)",
		"7.9999999999999999999EiB": "too large",
		"8.0EiB":                   "too large",
	} {
		_, err := ParseSize(in)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("ParseSize(%q) = %v, want an error saying %q", in, err, msg)
		}
	}
}

// TestBytesReadsBack: what the commands print (Bytes) ParseSize reads
// back exactly when it is exact (the cases extract's own FormatSize had).
func TestBytesReadsBack(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 1 << 30: "1 GiB", 2 << 30: "2 GiB", 3 << 19: "1.5 MiB", 64 << 30: "64 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
		if back, err := ParseSize(Bytes(n)); err != nil || back != n {
			t.Errorf("round trip %d: %d %v", n, back, err)
		}
	}
}
