// Package units formats numbers the way operators read them: binary sizes
// with IEC units (MiB, GiB), short durations and percentages. The
// operator commands and the dashboard share it so a figure looks the same
// everywhere.
package units

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

var iec = []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}

// Bytes prints n with an IEC unit and at most one decimal: "512 B",
// "1.5 MiB", "20 GiB".
func Bytes[T ~int64 | ~uint64 | ~int](n T) string {
	if n < 0 {
		// As a uint64: -MinInt64 does not fit in an int64.
		return "-" + Bytes(uint64(-int64(n)))
	}
	v := float64(n)
	u := 0
	for v >= 1024 && u < len(iec)-1 {
		v /= 1024
		u++
	}
	if u == 0 {
		return strconv.FormatUint(uint64(n), 10) + " B"
	}
	s := strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0")
	return s + " " + iec[u]
}

// Duration prints d rounded to what matters at its scale: "850ms",
// "4.2s", "3m12s", "2h05m", "3d04h".
func Duration(d time.Duration) string {
	if d < 0 {
		return "-" + Duration(-d)
	}
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return strings.TrimSuffix(strconv.FormatFloat(d.Seconds(), 'f', 1, 64), ".0") + "s"
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	default:
		d = d.Round(time.Hour)
		return fmt.Sprintf("%dd%02dh", int(d.Hours())/24, int(d.Hours())%24)
	}
}

// Ago prints how long before now t was ("3m12s ago"), or "-" for a zero
// time.
func Ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return Duration(now.Sub(t)) + " ago"
}

// Percent prints part of whole as "42.0%", and "0.0%" when whole is 0.
func Percent[T ~int64 | ~uint64 | ~int](part, whole T) string {
	if whole == 0 {
		return "0.0%"
	}
	return strconv.FormatFloat(100*float64(part)/float64(whole), 'f', 1, 64) + "%"
}
