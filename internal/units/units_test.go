package units

import (
	"testing"
	"time"
)

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"}, {512, "512 B"}, {1024, "1 KiB"}, {1536 << 10, "1.5 MiB"},
		{20 << 30, "20 GiB"}, {-2048, "-2 KiB"},
	} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
	if got := Bytes(uint64(3 << 40)); got != "3 TiB" {
		t.Errorf("Bytes(3TiB) = %q", got)
	}
}

func TestDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{850 * time.Millisecond, "850ms"}, {4200 * time.Millisecond, "4.2s"},
		{3*time.Minute + 12*time.Second, "3m12s"}, {2*time.Hour + 5*time.Minute, "2h05m"},
		{76 * time.Hour, "3d04h"},
	} {
		if got := Duration(c.d); got != c.want {
			t.Errorf("Duration(%s) = %q, want %q", c.d, got, c.want)
		}
	}
}

func TestAgoAndPercent(t *testing.T) {
	now := time.Now()
	if got := Ago(now.Add(-90*time.Second), now); got != "1m30s ago" {
		t.Errorf("Ago = %q", got)
	}
	if got := Ago(time.Time{}, now); got != "-" {
		t.Errorf("Ago(zero) = %q", got)
	}
	if got := Percent(1, 8); got != "12.5%" {
		t.Errorf("Percent = %q", got)
	}
	if got := Percent(1, 0); got != "0.0%" {
		t.Errorf("Percent(_, 0) = %q", got)
	}
}

// TestBytesMinInt64: the most negative int64 has no positive twin; Bytes
// printed it by negating it, which recursed until the stack overflowed.
func TestBytesMinInt64(t *testing.T) {
	if got := Bytes(int64(-1 << 63)); got != "-8 EiB" {
		t.Errorf("Bytes(MinInt64) = %q, want -8 EiB", got)
	}
	if got := Bytes(int64(-1536)); got != "-1.5 KiB" {
		t.Errorf("Bytes(-1536) = %q", got)
	}
}
