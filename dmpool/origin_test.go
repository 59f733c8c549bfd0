package dmpool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func TestThinTableOrigin(t *testing.T) {
	for _, c := range []struct {
		params string
		want   thinTable
	}{
		{"253:0 42", thinTable{PoolDev: "253:0", ID: 42}},
		{"253:0 42 7:3", thinTable{PoolDev: "253:0", ID: 42, Origin: "7:3"}},
		{"253:0 0 43:12", thinTable{PoolDev: "253:0", ID: 0, Origin: "43:12"}},
	} {
		tt, err := parseThinTable(c.params)
		if err != nil || tt != c.want {
			t.Errorf("parseThinTable(%q) = %+v, %v; want %+v", c.params, tt, err, c.want)
		}
		if got := tt.String(); got != c.params {
			t.Errorf("String() of %+v = %q, want %q", tt, got, c.params)
		}
	}
}

func TestSameThinOrigin(t *testing.T) {
	thin := func(params string) Target { return Target{Length: 2048, Type: "thin", Params: params} }
	cases := []struct {
		have, want string
		same       bool
	}{
		{"253:0 1", "253:0 1", true},
		{"253:0 1 7:3", "253:0 1 7:3", true},
		{"253:0 1 7:3", "253:0 1 7:4", false},
		{"253:0 1 7:3", "253:0 1", false}, // plain Activate of a device with an origin
		{"253:0 1", "253:0 1 7:3", false},
		{"253:0 1 7:3", "253:0 2 7:3", false},
	}
	for _, c := range cases {
		if got := sameThin(thin(c.have), thin(c.want)); got != c.same {
			t.Errorf("sameThin(%q, %q) = %v, want %v", c.have, c.want, got, c.same)
		}
	}
}

func TestOriginDeviceRejectsNonBlock(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "cache")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{file, dir, filepath.Join(dir, "missing"), "/dev/null"} {
		_, err := OriginDevice(path)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), path) {
			t.Errorf("OriginDevice(%s) = %v, want ErrInvalidArgument naming the path", path, err)
		}
	}
}

// TestReloadOriginFailures runs a thin device's origin reload through the
// failures TestReloadTableFailures injects into a pool's: the device ends
// on the new table, or on the old one resumed with nothing loaded, or is
// reported as ErrDeviceSuspended.
func TestReloadOriginFailures(t *testing.T) {
	oldT := []Target{{Length: 2048, Type: "thin", Params: "253:0 1 7:3"}}
	newT := []Target{{Length: 2048, Type: "thin", Params: "253:0 1 7:4"}}
	k := reloadKind{noun: "thin device", suspended: ErrDeviceSuspended, waits: "its I/O waits",
		isNew: func(ts []Target) (bool, error) { return len(ts) == 1 && sameThin(ts[0], newT[0]), nil }}
	cases := []struct {
		name string
		dev  fakeDM
		want string
	}{
		{name: "ok", want: "new"},
		{name: "load-fails", dev: fakeDM{loadFails: true}, want: "old"},
		{name: "suspend-fails", dev: fakeDM{suspendFails: true}, want: "old"},
		{name: "swap-fails", dev: fakeDM{swapFails: true}, want: "old"},
		{name: "resume-fails-once", dev: fakeDM{resumeFails: 1}, want: "new"},
		{name: "resume-fails-then-old-table-resumes", dev: fakeDM{resumeFails: 6}, want: "old"},
		{name: "resume-fails-always", dev: fakeDM{resumeFails: 1 << 30}, want: "suspended"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.dev
			d.live = oldT
			err := reloadTable(context.Background(), d.ops(), "thin", oldT, newT, k)
			t.Logf("%v", err)
			live := "old"
			if d.live[0].Params == newT[0].Params {
				live = "new"
			}
			switch c.want {
			case "new":
				if err != nil || live != "new" || d.suspended || d.inactive != nil {
					t.Fatalf("err %v, live %s, suspended %v: want the new table running", err, live, d.suspended)
				}
			case "old":
				if !errors.Is(err, ErrTableReload) || live != "old" || d.suspended || d.inactive != nil ||
					!strings.Contains(err.Error(), "thin device") || !strings.Contains(err.Error(), "old table") {
					t.Fatalf("err %v, live %s, suspended %v, inactive %v: want ErrTableReload naming the thin device on its old table", err, live, d.suspended, d.inactive)
				}
			case "suspended":
				if !errors.Is(err, ErrDeviceSuspended) || errors.Is(err, ErrPoolSuspended) || !d.suspended || !strings.Contains(err.Error(), "dmsetup resume thin") {
					t.Fatalf("err %v: want a loud ErrDeviceSuspended", err)
				}
			}
		})
	}
}
