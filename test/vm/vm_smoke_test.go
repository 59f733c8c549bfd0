package vm_test

import (
	"os"
	"strings"
	"testing"

	"github.com/superfly/flyio-image-manager/internal/dmtest"
)

// TestDeviceMapperReachable proves the harness: it passes in the VM (where
// FLYIO_REQUIRE_DM=1 forbids skipping) and skips on a host without dm.
func TestDeviceMapperReachable(t *testing.T) {
	dmtest.Require(t)
	t.Logf("kernel %s", dmtest.KernelRelease())

	f, err := os.OpenFile("/dev/mapper/control", os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open /dev/mapper/control: %v", err)
	}
	f.Close()

	mods, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(mods), "dm_thin_pool") {
		t.Fatalf("dm_thin_pool is not loaded:\n%s", mods)
	}
}
