package dmpool

import (
	"context"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeDM is one device-mapper device as the kernel's DM_DEV_SUSPEND
// handles it (drivers/md/dm-ioctl.c do_resume): a resume with an inactive
// table suspends, swaps and resumes, and each step can fail as chosen.
type fakeDM struct {
	live, inactive []Target
	suspended      bool

	loadFails, clearFails bool
	suspendFails          bool // the new table is put back as inactive
	swapFails             bool // the new table is dropped, the device stays suspended
	resumeFails           int  // this many resumes fail (preresume), device stays suspended
}

var errInjected = unix.EIO

func (d *fakeDM) ops() tableOps {
	return tableOps{
		load: func(_ string, t []Target) error {
			if d.loadFails {
				return errInjected
			}
			d.inactive = t
			return nil
		},
		clear: func(string) error {
			if d.clearFails {
				return errInjected
			}
			d.inactive = nil
			return nil
		},
		resume: func(string) error {
			if d.inactive != nil {
				if !d.suspended {
					if d.suspendFails {
						return errInjected
					}
					d.suspended = true
				}
				t := d.inactive
				d.inactive = nil
				if d.swapFails {
					return errInjected
				}
				d.live = t
			}
			if d.suspended {
				if d.resumeFails > 0 {
					d.resumeFails--
					return errInjected
				}
				d.suspended = false
			}
			return nil
		},
		info: func(name string) (DeviceInfo, error) {
			return DeviceInfo{Name: name, Exists: true, Active: d.live != nil, Suspended: d.suspended, InactiveTable: d.inactive != nil}, nil
		},
		table: func(string) ([]Target, error) { return d.live, nil },
	}
}

// TestReloadTableFailures injects a failure at each step of a pool table
// reload and checks that every outcome is one of: the new table live and
// the pool running; the old table live, the pool running, no inactive
// table left, and ErrTableReload; or a loud ErrPoolSuspended (or a named
// inactive table) when nothing could restore it. Never a silent
// suspended pool, never a loaded table a later resume would swap in.
func TestReloadTableFailures(t *testing.T) {
	oldT := []Target{{Length: 1024, Type: "thin-pool", Params: "7:1 7:0 256 0 1 error_if_no_space"}}
	newT := []Target{{Length: 1024, Type: "thin-pool", Params: "7:1 7:0 256 0 2 skip_block_zeroing error_if_no_space"}}
	cases := []struct {
		name   string
		dev    fakeDM
		stale  bool // an inactive table was already loaded before the reload
		want   string
		reason string
	}{
		{name: "ok", want: "new"},
		{name: "load-fails", dev: fakeDM{loadFails: true}, want: "old"},
		{name: "load-fails-stale-inactive", dev: fakeDM{loadFails: true}, stale: true, want: "old"},
		{name: "suspend-fails", dev: fakeDM{suspendFails: true}, want: "old"},
		{name: "suspend-fails-clear-fails", dev: fakeDM{suspendFails: true, clearFails: true}, want: "inactive-left"},
		{name: "swap-fails", dev: fakeDM{swapFails: true}, want: "old"},
		{name: "resume-fails-once", dev: fakeDM{resumeFails: 1}, want: "new"},
		{name: "resume-fails-then-old-table-resumes", dev: fakeDM{resumeFails: 6}, want: "old"},
		{name: "resume-fails-always", dev: fakeDM{resumeFails: 1 << 30}, want: "suspended"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := c.dev
			d.live = oldT
			if c.stale {
				d.inactive = newT
			}
			err := reloadTable(context.Background(), d.ops(), "pool", oldT, newT, poolReload(true))
			t.Logf("%v", err)
			live := "old"
			if d.live[0].Params == newT[0].Params {
				live = "new"
			}
			switch c.want {
			case "new":
				if err != nil || live != "new" || d.suspended || d.inactive != nil {
					t.Fatalf("err %v, live %s, suspended %v, inactive %v: want the new table running", err, live, d.suspended, d.inactive)
				}
			case "old":
				if !errors.Is(err, ErrTableReload) || errors.Is(err, ErrPoolSuspended) || live != "old" || d.suspended || d.inactive != nil {
					t.Fatalf("err %v, live %s, suspended %v, inactive %v: want ErrTableReload and the old table running, nothing loaded", err, live, d.suspended, d.inactive)
				}
				if !strings.Contains(err.Error(), "old table") {
					t.Errorf("%v: does not say the pool runs on its old table", err)
				}
			case "inactive-left":
				if !errors.Is(err, ErrTableReload) || d.suspended || !strings.Contains(err.Error(), "inactive table is left loaded") {
					t.Fatalf("err %v, suspended %v: want ErrTableReload naming the inactive table left loaded", err, d.suspended)
				}
			case "suspended":
				if !errors.Is(err, ErrPoolSuspended) || !d.suspended || !strings.Contains(err.Error(), "dmsetup resume pool") {
					t.Fatalf("err %v, suspended %v: want a loud ErrPoolSuspended saying how to resume", err, d.suspended)
				}
				if d.inactive != nil {
					t.Errorf("a suspended pool also has an inactive table left: %v", d.inactive)
				}
			}
		})
	}
}
