package nbd

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// fakeSysfs makes sysBlock a directory of nbd devices with the given
// dev numbers, all free (size 0, no pid).
func fakeSysfs(t *testing.T, devs ...string) string {
	t.Helper()
	dir := t.TempDir()
	for i, dev := range devs {
		d := filepath.Join(dir, "nbd"+strconv.Itoa(i))
		if err := os.MkdirAll(filepath.Join(d, "holders"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "dev"), []byte(dev+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "size"), []byte("0\n"), 0o644)
	}
	saved := sysBlock
	sysBlock = dir
	t.Cleanup(func() { sysBlock = saved })
	return dir
}

// TestUsableSkipsDevicesTablesStillName: an index whose device a table
// still names (the kernel shows a holder, or Referenced says so) is not
// connected again, so that the tables of a dead device never read
// another image's bytes; a free one is.
func TestUsableSkipsDevicesTablesStillName(t *testing.T) {
	dir := fakeSysfs(t, "43:0", "43:32", "43:64")
	if err := os.WriteFile(filepath.Join(dir, "nbd0", "holders", "dm-3"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	opt := Options{Referenced: func(major, minor uint32) (bool, error) { return major == 43 && minor == 32, nil }}
	for n, want := range []bool{false, false, true} {
		got, err := usable(n, opt)
		if err != nil || got != want {
			t.Errorf("usable(nbd%d) = %v, %v; want %v", n, got, err, want)
		}
	}
	if ok, err := usable(1, Options{}); err != nil || !ok {
		t.Errorf("without Referenced, nbd1 (no holders) = %v, %v; want usable", ok, err)
	}
}
