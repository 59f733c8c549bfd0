package diag

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/superfly/flyio-image-manager/dmpool"
	"github.com/superfly/flyio-image-manager/gc"
	"github.com/superfly/flyio-image-manager/metadata"
)

// JSON is a source writing what fn returns as indented JSON.
func JSON(name string, fn func(ctx context.Context) (any, error)) Source {
	return Source{Name: name, Gather: func(ctx context.Context) ([]byte, error) {
		v, err := fn(ctx)
		if err != nil {
			return nil, err
		}
		b, err := json.MarshalIndent(v, "", "  ")
		return append(b, '\n'), err
	}}
}

// Text is a source of fixed content.
func Text(name, content string) Source {
	return Source{Name: name, Gather: func(context.Context) ([]byte, error) { return []byte(content), nil }}
}

// Version describes the binary: its version string and Go build info.
func Version(name, version string) Source {
	return Source{Name: name, Gather: func(context.Context) ([]byte, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "flyio-image-manager %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		if bi, ok := debug.ReadBuildInfo(); ok {
			fmt.Fprintf(&b, "\n%s", bi)
		}
		return []byte(b.String()), nil
	}}
}

// Kernel is uname, /proc/version and the kernel command line.
func Kernel() Source {
	return Source{Name: "kernel.txt", Gather: func(context.Context) ([]byte, error) {
		var b strings.Builder
		var errs []error
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			errs = append(errs, fmt.Errorf("uname: %w", err))
		} else {
			fmt.Fprintf(&b, "uname: %s %s %s %s %s\n", unix.ByteSliceToString(u.Sysname[:]), unix.ByteSliceToString(u.Nodename[:]),
				unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:]), unix.ByteSliceToString(u.Machine[:]))
		}
		for _, f := range []string{"/proc/version", "/proc/cmdline"} {
			data, err := os.ReadFile(f)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			fmt.Fprintf(&b, "%s: %s", f, data)
		}
		return []byte(b.String()), errors.Join(errs...)
	}}
}

// DMVersion is the kernel's device-mapper driver (ioctl interface)
// version, the DM_VERSION ioctl's answer.
func DMVersion() Source {
	return Source{Name: "dm-version.txt", Gather: func(context.Context) ([]byte, error) {
		v, err := dmpool.DriverVersion()
		if err != nil {
			return nil, err
		}
		return []byte("device-mapper driver " + v + "\n"), nil
	}}
}

// Pool is the pool's dm table and status (raw and parsed) and every
// device-mapper device of the pool (its thin devices) with its table
// and status, as `dmsetup table` and `dmsetup status` show them.
func Pool(pool string) Source {
	return Source{Name: "pool.txt", Gather: func(context.Context) ([]byte, error) {
		var b strings.Builder
		var errs []error
		info, err := dmpool.GetDeviceInfo(pool)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "pool %s: %+v\n", pool, info)
		if !info.Exists {
			return []byte(b.String()), fmt.Errorf("pool %q is not active (no device-mapper device of that name)", pool)
		}
		if t, err := dmpool.Table(pool); err != nil {
			errs = append(errs, fmt.Errorf("table of %s: %w", pool, err))
		} else {
			fmt.Fprintf(&b, "table: %s\n", targets(t))
		}
		if st, err := dmpool.TargetStatus(pool); err != nil {
			errs = append(errs, fmt.Errorf("status of %s: %w", pool, err))
		} else {
			fmt.Fprintf(&b, "status: %s\n", targets(st))
		}
		names, err := dmpool.ListDevices()
		if err != nil {
			errs = append(errs, err)
		}
		fmt.Fprintf(&b, "\nthin devices of %s:\n", pool)
		for _, n := range names {
			if !strings.HasPrefix(n.Name, pool+"-") {
				continue
			}
			t, err1 := dmpool.Table(n.Name)
			st, err2 := dmpool.TargetStatus(n.Name)
			i, err3 := dmpool.GetDeviceInfo(n.Name)
			fmt.Fprintf(&b, "%s (%d:%d open %d suspended %v): table %s; status %s\n", n.Name, i.Major, i.Minor, i.OpenCount, i.Suspended, targets(t), targets(st))
			errs = append(errs, err1, err2, err3)
		}
		return []byte(b.String()), errors.Join(errs...)
	}}
}

func targets(ts []dmpool.Target) string {
	var parts []string
	for _, t := range ts {
		parts = append(parts, fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, "; ")
}

// Mounts lists the mounts (from /proc/self/mountinfo) of the pool's
// devices: by device number, and by /dev/mapper name for mounts made in
// another way.
func Mounts(pool string) Source {
	return Source{Name: "mounts.txt", Gather: func(context.Context) ([]byte, error) {
		devs := map[string]string{}
		names, err := dmpool.ListDevices()
		for _, n := range names {
			if n.Name == pool || strings.HasPrefix(n.Name, pool+"-") {
				if i, err := dmpool.GetDeviceInfo(n.Name); err == nil && i.Exists {
					devs[fmt.Sprintf("%d:%d", i.Major, i.Minor)] = n.Name
				}
			}
		}
		mi, merr := os.ReadFile("/proc/self/mountinfo")
		if merr != nil {
			return nil, errors.Join(err, merr)
		}
		var b strings.Builder
		fmt.Fprintf(&b, "# mounts of %d device(s) of pool %s (from /proc/self/mountinfo)\n", len(devs), pool)
		sc := bufio.NewScanner(bytes.NewReader(mi))
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		n := 0
		for sc.Scan() {
			l := sc.Text()
			f := strings.Fields(l)
			if len(f) < 5 {
				continue
			}
			if name, ok := devs[f[2]]; ok {
				fmt.Fprintf(&b, "%s: %s\n", name, l)
				n++
			} else if strings.Contains(l, "/dev/mapper/"+pool+"-") {
				fmt.Fprintf(&b, "?: %s\n", l)
				n++
			}
		}
		fmt.Fprintf(&b, "# %d mount(s)\n", n)
		return []byte(b.String()), err
	}}
}

// Journal is the daemon's log from journald, for when the daemon (and
// its in-memory log) is gone.
func Journal(name, unit string, lines int) Source {
	return Source{Name: name, Gather: func(ctx context.Context) ([]byte, error) {
		path, err := exec.LookPath("journalctl")
		if err != nil {
			return nil, fmt.Errorf("the daemon is not running, so its in-memory log is gone, and journalctl is not installed to read %s's journal: %w", unit, err)
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var out, errb bytes.Buffer
		cmd := exec.CommandContext(ctx, path, "-u", unit, "-n", fmt.Sprint(lines), "--no-pager", "-o", "short-iso-precise")
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return out.Bytes(), fmt.Errorf("journalctl -u %s: %w: %s", unit, err, strings.TrimSpace(errb.String()))
		}
		return out.Bytes(), nil
	}}
}

// Bolt is the metadata database's statistics.
func Bolt(store *metadata.Store) Source {
	return JSON("bolt-stats.json", func(context.Context) (any, error) { return store.Stats() })
}

// GCDryRun is the report of a gc dry run, as a table and as JSON.
func GCDryRun(plan func(ctx context.Context) (*gc.Report, error)) Source {
	return Source{Name: "gc-dry-run.txt", Gather: func(ctx context.Context) ([]byte, error) {
		rep, err := plan(ctx)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		if err := rep.WriteTable(&b); err != nil {
			return nil, err
		}
		b.WriteString("\n")
		j, err := json.MarshalIndent(rep, "", "  ")
		b.Write(j)
		b.WriteString("\n")
		return b.Bytes(), err
	}}
}
