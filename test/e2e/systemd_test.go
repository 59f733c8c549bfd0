package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/core/snapshots"
	snproxy "github.com/containerd/containerd/v2/core/snapshots/proxy"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/config"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/service"
	"github.com/superfly/flyio-image-manager/test/harness"
)

// systemdNotify plays systemd for the daemon: the unixgram socket a
// Type=notify unit's NOTIFY_SOCKET names. Each datagram may carry several
// newline-separated assignments.
type systemdNotify struct {
	path string
	msgs chan datagram
}

// datagram is one sd_notify message and when the test read it.
type datagram struct {
	at   time.Time
	text string
}

func newSystemdNotify(t *testing.T, dir string) *systemdNotify {
	t.Helper()
	n := &systemdNotify{path: filepath.Join(dir, "notify.sock"), msgs: make(chan datagram, 1000)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(n.msgs)
		buf := make([]byte, 64<<10)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.msgs <- datagram{time.Now(), string(buf[:k])}
		}
	}()
	return n
}

// until reads datagrams until one has an assignment for which stop
// holds (given the time it was read), and returns every assignment read,
// in order.
func (n *systemdNotify) until(t *testing.T, p *proc, timeout time.Duration, what string, stop func(a string, at time.Time) bool) []string {
	t.Helper()
	var seen []string
	deadline := time.After(timeout)
	for {
		select {
		case m := <-n.msgs:
			hit := false
			for _, a := range strings.Split(m.text, "\n") {
				seen = append(seen, a)
				hit = stop(a, m.at) || hit
			}
			if hit {
				return seen
			}
		case <-deadline:
			b, _ := os.ReadFile(p.Log)
			t.Fatalf("no %s within %s; got %q\n%s", what, timeout, seen, tail(string(b), 40))
		}
	}
}

// The daemon speaks sd_notify as a Type=notify unit needs: STATUS lines for
// each start-up phase, READY=1 only when both sockets answer (so the
// containerd the unit starts after READY finds the snapshotter serving),
// watchdog pings while the pool answers, and STOPPING=1 on SIGTERM. It
// runs twice on one root: the second start recovers an existing pool.
func TestSystemdNotify(t *testing.T) {
	dmtest.Require(t)
	dir := t.TempDir()
	pool := fmt.Sprintf("fim-sd-%d", os.Getpid())
	cfgPath := filepath.Join(dir, "flyio.toml")
	writeFile(t, cfgPath, fmt.Sprintf(`root_dir = %q
address = %q
admin_address = %q
[pool]
name = %q
data_size = "2GiB"
metadata_size = "16MiB"
[snapshotter]
base_size = "64MiB"
spare_devices = 0
[containerd]
address = %q
`, filepath.Join(dir, "flyio"), filepath.Join(dir, "snapshotter.sock"), filepath.Join(dir, "admin.sock"), pool,
		filepath.Join(dir, "containerd.sock")))
	cfg, err := config.Load(cfgPath, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := harness.RemovePool(context.Background(), service.PoolConfig(cfg)); err != nil {
			t.Errorf("removing pool: %v", err)
		}
	})
	notify := newSystemdNotify(t, dir)
	bin, tools := flyioBin(t), toolsBin(t)

	for i, start := range []string{"first start", "restart"} {
		t.Logf("%s", start)
		d := harness.StartProc(t, "daemon", filepath.Join(dir, fmt.Sprintf("daemon-%d.log", i)), harness.ToolsPath(tools),
			exec.Command(bin, "--config", cfgPath, "daemon"),
			"NOTIFY_SOCKET="+notify.path,
			// systemd sets WATCHDOG_PID too; without it the pid check is skipped.
			"WATCHDOG_USEC=2000000")
		stopped := false
		t.Cleanup(func() {
			if !stopped {
				d.Kill()
			}
		})

		seen := notify.until(t, d, 2*time.Minute, "READY=1", func(a string, _ time.Time) bool { return a == "READY=1" })
		// At the moment READY=1 arrives both sockets must answer, on the
		// first try: no retries, no waiting.
		if n := checkServing(t, cfg); n != i {
			// The restart must show the snapshot made before the "reboot":
			// recovery is done by READY.
			t.Errorf("%d snapshots at READY=1, want %d", n, i)
		}
		t.Logf("before READY: %q", seen)
		wantInOrder(t, seen, []string{
			"STATUS=opening pool " + pool,
			"STATUS=recovering: reconciling snapshots with pool " + pool,
			"STATUS=resuming 0 process-image runs",
			"READY=1",
			fmt.Sprintf("STATUS=serving snapshots API on %s, admin API on %s", cfg.Address, cfg.AdminAddress),
		})

		// Watchdog pings at half of WATCHDOG_USEC (1s) while healthy.
		var pings []time.Time
		notify.until(t, d, 30*time.Second, "three WATCHDOG=1", func(a string, at time.Time) bool {
			if a == "WATCHDOG=1" {
				pings = append(pings, at)
			}
			return len(pings) == 3
		})
		for j := 1; j < len(pings); j++ {
			// Generous bounds: TCG delays both the daemon and the reader.
			if gap := pings[j].Sub(pings[j-1]); gap < 500*time.Millisecond || gap > 3*time.Second {
				t.Errorf("watchdog pings %s apart, want about 1s (half of WATCHDOG_USEC)", gap)
			}
		}
		t.Logf("watchdog pings at +%s, +%s", pings[1].Sub(pings[0]).Round(time.Millisecond), pings[2].Sub(pings[0]).Round(time.Millisecond))

		if start == "first start" {
			prepare(t, cfg, "systemd-test")
		}

		if start == "restart" {
			// Take the pool away under the daemon: its health check fails,
			// so it says why and stops pinging, and systemd would restart it.
			if err := harness.RemovePool(context.Background(), service.PoolConfig(cfg)); err != nil {
				t.Fatal(err)
			}
			seen := notify.until(t, d, 30*time.Second, "STATUS=unhealthy", func(a string, _ time.Time) bool {
				return strings.HasPrefix(a, "STATUS=unhealthy: ") && strings.Contains(a, pool)
			})
			t.Logf("pool removed: %q", seen[len(seen)-1])
			quiet := time.After(4 * time.Second)
		wait:
			for {
				select {
				case m := <-notify.msgs:
					t.Errorf("sent %q with the pool gone", m.text)
				case <-quiet:
					break wait
				}
			}
		}

		if err := d.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		notify.until(t, d, 30*time.Second, "STOPPING=1", func(a string, _ time.Time) bool { return a == "STOPPING=1" })
		if err, ok := d.Wait(60 * time.Second); !ok {
			t.Fatal("daemon did not exit within 60s of SIGTERM")
		} else if err != nil {
			b, _ := os.ReadFile(d.Log)
			t.Fatalf("daemon exited with %v after SIGTERM\n%s", err, tail(string(b), 40))
		}
		stopped = true
		// Drain the pings sent between STOPPING=1 and the exit, so the
		// restart reads only its own messages.
		for len(notify.msgs) > 0 {
			<-notify.msgs
		}
		if start == "first start" {
			// As after a reboot: no pool, no thin devices; the next start
			// re-creates them from the pool's files and the database.
			if err := harness.RemovePool(context.Background(), service.PoolConfig(cfg)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// checkServing asks the admin socket for the daemon's status and the
// snapshots socket (through containerd's own proxy client, as containerd
// would) for its snapshots, once each with a short deadline, and returns
// how many snapshots there are.
func checkServing(t *testing.T, cfg config.Config) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := admin.NewClient(cfg.AdminAddress).Status(ctx); err != nil {
		t.Errorf("admin socket at READY=1: %v", err)
	}
	n := 0
	err := snapshotsClient(t, cfg).Walk(ctx, func(context.Context, snapshots.Info) error { n++; return nil })
	if err != nil {
		t.Errorf("snapshots socket at READY=1: %v", err)
	}
	t.Logf("at READY=1: admin status answered, snapshots Walk answered (%d snapshots)", n)
	return n
}

// snapshotsClient is containerd's proxy snapshotter on the daemon's socket.
func snapshotsClient(t *testing.T, cfg config.Config) snapshots.Snapshotter {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return snproxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "flyio")
}

// prepare makes an active snapshot (a thin device) for recovery to find.
func prepare(t *testing.T, cfg config.Config, key string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if _, err := snapshotsClient(t, cfg).Prepare(ctx, key, ""); err != nil {
		t.Fatalf("prepare %s: %v", key, err)
	}
}

// wantInOrder checks that want appears in seen as a subsequence.
func wantInOrder(t *testing.T, seen, want []string) {
	t.Helper()
	i := 0
	for _, s := range seen {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("sd_notify messages %q lack %q (in this order: %q)", seen, want[i], want)
	}
}
