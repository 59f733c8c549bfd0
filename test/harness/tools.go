package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FlyioBin is the absolute path of our binary, built on the host: the
// FLYIO_BIN environment variable, or bin/flyio-image-manager at the
// module root for a test package two directories down (test/e2e,
// test/crash). A missing binary fails the test.
func FlyioBin(t testing.TB) string {
	t.Helper()
	p := os.Getenv("FLYIO_BIN")
	if p == "" {
		p = "../../bin/flyio-image-manager"
	}
	p, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("flyio-image-manager binary: %v (build it: go build -o bin/flyio-image-manager ./cmd/flyio-image-manager, or set FLYIO_BIN)", err)
	}
	return p
}

// ToolsBin is the directory test/tools.sh installs containerd, ctr and
// the runc shim into: FLYIO_TOOLS_BIN, or its default. A missing tool
// fails the test.
func ToolsBin(t testing.TB) string {
	t.Helper()
	d := os.Getenv("FLYIO_TOOLS_BIN")
	if d == "" {
		d = "/var/cache/flyio-image-manager/tools/bin"
	}
	for _, b := range []string{"containerd", "ctr", "containerd-shim-runc-v2"} {
		if _, err := os.Stat(filepath.Join(d, b)); err != nil {
			t.Fatalf("%v (run test/tools.sh, or set FLYIO_TOOLS_BIN)", err)
		}
	}
	return d
}

// ToolsPath is the PATH containerd, ctr and the shim run with: the tools
// directory first, so the shim containerd finds is the one installed with
// it, then the system directories (runc, mkfs).
func ToolsPath(tools string) string {
	return tools + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
}

// Run runs name with args under timeout, with PATH set to path and extra
// appended to the environment, and returns the combined output. The
// error names the command and carries the output.
func Run(timeout time.Duration, path string, extra []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(append(os.Environ(), "PATH="+path), extra...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		err = fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

// Tail is the last lines of s, saying how many were cut.
func Tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = append([]string{fmt.Sprintf("... (%d lines cut)", len(l)-lines)}, l[len(l)-lines:]...)
	}
	return strings.Join(l, "\n")
}

// ContainerdConfig is the configuration of a private containerd 2.x
// under dir (root and state), serving address (ttrpc beside it), with our
// daemon at snapshotterAddress as the "flyio" proxy snapshotter that the
// transfer service unpacks into. The CRI plugins are disabled: the tests
// drive containerd with ctr, and CRI only slows its start.
func ContainerdConfig(dir, address, snapshotterAddress string) string {
	return containerdTOML(dir, address, snapshotterAddress,
		`disabled_plugins = ["io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.grpc.v1.cri"]`+"\n", "")
}

// containerdTOML is what every private containerd's configuration
// starts with: root and state under dir, its sockets, and our daemon at
// snapshotterAddress as the "flyio" proxy snapshotter the transfer
// service unpacks into. top is more top-level keys, proxy more keys of
// the proxy plugin, each ending in a newline.
func containerdTOML(dir, address, snapshotterAddress, top, proxy string) string {
	return fmt.Sprintf(`version = 3
root = %q
state = %q
%s[grpc]
  address = %q
[ttrpc]
  address = %q
[proxy_plugins.flyio]
  type = "snapshot"
  address = %q
%s[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = "linux/amd64"
  snapshotter = "flyio"
`, filepath.Join(dir, "root"), ContainerdState(dir), top, address, address+".ttrpc", snapshotterAddress, proxy)
}

// ContainerdState is the state directory ContainerdConfig(dir, ...)
// names: what a reboot empties.
func ContainerdState(dir string) string { return filepath.Join(dir, "state") }
