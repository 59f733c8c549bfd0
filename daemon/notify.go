package daemon

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/log"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/superfly/flyio-image-manager/metadata"
)

// notifier tells systemd what the daemon is doing (sd_notify(3)), for the
// Type=notify unit in contrib/systemd. Outside such a unit NOTIFY_SOCKET
// is unset and every method is a no-op, so Run calls them unconditionally.
//
// The unit orders containerd after this daemon, and systemd starts
// containerd once READY=1 arrives: Ready must only be sent once recovery
// is done and both sockets accept connections, or containerd's first
// requests to the proxy snapshotter would fail.
type notifier struct {
	ctx    context.Context // for logging only
	status string          // Ready's status, shown again when health returns
}

func newNotifier(ctx context.Context) *notifier { return &notifier{ctx: ctx} }

// send writes one datagram of newline-separated assignments. A failure is
// logged, not returned: a daemon systemd cannot hear still serves, and
// systemd will say so itself (start timeout, watchdog).
func (n *notifier) send(states ...string) {
	if _, err := sddaemon.SdNotify(false, strings.Join(states, "\n")); err != nil {
		log.G(n.ctx).WithError(err).Warnf("sd_notify %q", states)
	}
}

// Status sets the one-line status `systemctl status` shows.
func (n *notifier) Status(format string, args ...any) {
	n.send("STATUS=" + fmt.Sprintf(format, args...))
}

// Ready reports the end of start-up, with the status to show from now on.
// MAINPID is not sent: the daemon is ExecStart's own process, which
// systemd already tracks.
func (n *notifier) Ready(status string) {
	n.status = status
	n.send(sddaemon.SdNotifyReady, "STATUS="+status)
}

// Stopping reports that shutdown began, so systemd shows "deactivating"
// while running requests finish instead of believing the service died.
func (n *notifier) Stopping() {
	n.send(sddaemon.SdNotifyStopping, "STATUS=shutting down")
}

// Watchdog pings systemd (WATCHDOG=1) at half of the unit's WatchdogSec
// until ctx ends, but only while healthy succeeds: a daemon whose pool no
// longer answers, or that is wedged altogether, stops pinging and systemd
// restarts it (Restart=on-failure). Without WatchdogSec it returns at
// once. Each health check gets the ping interval as its deadline; a check
// that hangs (a stuck dm ioctl) simply means no ping.
func (n *notifier) Watchdog(ctx context.Context, healthy func(context.Context) error) {
	timeout, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		log.G(ctx).WithError(err).Warn("systemd watchdog: bad WATCHDOG_USEC/WATCHDOG_PID; not pinging")
		return
	}
	if timeout == 0 {
		return
	}
	interval := timeout / 2
	log.G(ctx).Infof("systemd watchdog: checking health and pinging every %s", interval)
	t := time.NewTicker(interval)
	defer t.Stop()
	unhealthy := false
	for {
		hctx, cancel := context.WithTimeout(ctx, interval)
		err := healthy(hctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			// Said once per episode, not at every tick.
			if !unhealthy {
				log.G(ctx).WithError(err).Error("health check failed; not pinging the systemd watchdog")
				n.Status("unhealthy: %v", err)
			}
			unhealthy = true
		default:
			if unhealthy {
				log.G(ctx).Info("health check passes again; pinging the systemd watchdog")
				n.Status("%s", n.status)
				unhealthy = false
			}
			n.send(sddaemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// unfinishedRuns counts the process-image runs Resume will start again,
// for the start-up status line. An error counts as none: Resume reports
// it.
func unfinishedRuns(store *metadata.Store) int {
	n := 0
	_ = store.View(func(tx *metadata.Tx) error {
		runs, err := tx.Runs()
		for _, r := range runs {
			if !r.State.Finished() {
				n++
			}
		}
		return err
	})
	return n
}
