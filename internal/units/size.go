package units

import (
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// This file is the one codec for sizes and durations that operators
// write: in config.toml, in flags and in environment variables. Config
// keys, flags and env vars that hold a size or a duration use Size,
// ParseSize, Seconds and ParseSeconds, so every one of them takes the same
// spellings and says the same thing when it is wrong.

// sizeExamples ends every size error: it says what is accepted.
const sizeExamples = "want a number of bytes or a number with a unit, e.g. 512, 128KiB, 1.5GiB, 20GiB, 1TiB"

// shifts maps a unit, lower-cased, to its power of two. KB, MB... and the
// bare K, M... are binary too: operators write "1GB" and mean a gibibyte,
// and extract's and the predecessor's messages printed them that way.
var shifts = map[string]uint{
	"": 0, "b": 0,
	"k": 10, "kb": 10, "kib": 10,
	"m": 20, "mb": 20, "mib": 20,
	"g": 30, "gb": 30, "gib": 30,
	"t": 40, "tb": 40, "tib": 40,
	"p": 50, "pb": 50, "pib": 50,
	"e": 60, "eb": 60, "eib": 60,
}

// ParseSize reads a byte count: a plain number of bytes ("1073741824") or
// a number with a binary unit ("128KiB", "1.5 GiB", "20G", "1TB"; case and
// a space before the unit do not matter). Negative sizes, sizes of 8EiB
// or more (which do not fit in 63 bits) and sizes that do not come to a
// whole number of bytes ("1.1KiB", "0.5") are errors.
func ParseSize(text string) (int64, error) {
	in := strings.TrimSpace(text)
	i := strings.IndexFunc(in, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := in, ""
	if i >= 0 {
		num, unit = in[:i], strings.TrimSpace(in[i:])
	}
	if num == "" {
		return 0, fmt.Errorf("invalid size %q: %s", text, sizeExamples)
	}
	shift, ok := shifts[strings.ToLower(unit)]
	if !ok {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q; %s", text, unit, sizeExamples)
	}
	tooLarge := fmt.Errorf("invalid size %q: too large, the most is 8EiB", text)
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 64)
		if err != nil || n > math.MaxInt64>>shift {
			return 0, tooLarge
		}
		return int64(n) << shift, nil
	}
	// A fraction is read exactly (a float64 would round past 2^53), and
	// must come to whole bytes: "1.5KiB" is 1536, "1.1KiB" (1126.4) is
	// refused rather than truncated.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, fmt.Errorf("invalid size %q: %s", text, sizeExamples)
	}
	r.Mul(r, new(big.Rat).SetInt(new(big.Int).Lsh(big.NewInt(1), shift)))
	if r.Cmp(new(big.Rat).SetInt64(math.MaxInt64)) > 0 {
		return 0, tooLarge
	}
	if !r.IsInt() {
		exact := strings.TrimRight(r.FloatString(3), "0")
		if !new(big.Rat).Mul(r, big.NewRat(1000, 1)).IsInt() {
			exact = "about " + exact
		}
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes (%s); write the bytes, or a number that comes to whole bytes, e.g. 1.5KiB", text, exact)
	}
	return r.Num().Int64(), nil
}

// Size is a byte count in configuration: a TOML integer (bytes) or a
// string ParseSize reads ("128KiB", "20GiB").
type Size int64

// UnmarshalText reads a size as ParseSize does.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = Size(v)
	return nil
}

// MarshalText writes String.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String writes s exactly, in the largest IEC unit that divides it
// ("128KiB", "20GiB", "1500B"), so ParseSize reads it back to s.
func (s Size) String() string {
	v, i := int64(s), 0
	for v != 0 && v%1024 == 0 && i < len(iec)-1 {
		v /= 1024
		i++
	}
	return strconv.FormatInt(v, 10) + iec[i]
}

// Set makes a *Size a flag.Value (and so a urfave/cli Generic flag).
func (s *Size) Set(text string) error { return s.UnmarshalText([]byte(text)) }

// durationExamples ends every duration error.
const durationExamples = `want a number of seconds or a duration, e.g. 300, 0.5, "90s", "5m", "1h30m"`

// ParseSeconds reads a duration: a number of seconds ("300", "0.5") or a
// Go duration ("90s", "5m", "1h30m", "250ms"). Negative durations are
// errors; zero is not (callers that need a positive one say so).
func ParseSeconds(text string) (Seconds, error) {
	t := strings.TrimSpace(text)
	if f, err := strconv.ParseFloat(t, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		if f < 0 {
			return 0, fmt.Errorf("invalid duration %q: negative; %s", text, durationExamples)
		}
		return Seconds(f), nil
	}
	d, err := time.ParseDuration(t)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %s", text, durationExamples)
	}
	if d < 0 {
		return 0, fmt.Errorf("invalid duration %q: negative; %s", text, durationExamples)
	}
	return Seconds(d.Seconds()), nil
}

// Seconds is a duration in configuration: a TOML number of seconds
// (`download_timeout = 300`, `part_timeout = 0.5`) or a string
// ParseSeconds reads (`download_timeout = "5m"`). A float so that tests
// can ask for sub-second timeouts.
type Seconds float64

// UnmarshalText reads a duration as ParseSeconds does.
func (s *Seconds) UnmarshalText(b []byte) error {
	v, err := ParseSeconds(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Duration converts s to a time.Duration. A value longer than a
// time.Duration holds (about 292 years) becomes the longest one: converting
// it as it is would wrap into a negative duration, a timeout already past.
func (s Seconds) Duration() time.Duration {
	ns := float64(s) * float64(time.Second)
	if ns >= math.MaxInt64 {
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

// String renders s the way error messages name it, e.g. "300s" or "0.5s".
func (s Seconds) String() string { return strconv.FormatFloat(float64(s), 'f', -1, 64) + "s" }
