// Package dmtest lets tests that need real device-mapper thin provisioning
// be written as ordinary Go tests.
//
// Such a test calls Require first. On a machine whose kernel has no
// device-mapper the test is skipped, so `go test ./...` stays green
// anywhere. The VM harness (test/vm) runs the same test binaries inside a
// guest that has dm-thin and sets FLYIO_REQUIRE_DM=1, which turns the skip
// into a failure: a VM run can never pass by silently skipping.
package dmtest

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv is the environment variable that makes a missing
// device-mapper a test failure instead of a skip.
const RequireEnv = "FLYIO_REQUIRE_DM"

// Available reports whether /dev/mapper/control answers and the
// thin-pool target can be used by this process.
func Available() bool {
	if os.Geteuid() != 0 {
		return false
	}
	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// Required reports whether the environment demands real device-mapper.
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Require skips t when device-mapper is unavailable, or fails it when
// FLYIO_REQUIRE_DM=1.
func Require(t testing.TB) {
	t.Helper()
	if Available() {
		return
	}
	if Required() {
		t.Fatalf("%s=1 but /dev/mapper/control is not usable (uid %d); device-mapper tests cannot run", RequireEnv, os.Geteuid())
	}
	t.Skip("device-mapper not available on this machine (run `make test` to use the VM)")
}

// KernelRelease returns `uname -r`, for test logs.
func KernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}
