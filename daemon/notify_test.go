package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket plays systemd: a unixgram socket set as NOTIFY_SOCKET,
// returning each datagram the code under test sends.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 100)
	go func() {
		defer close(msgs)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no sd_notify message within 5s")
		return ""
	}
}

func TestNotifierMessagesInOrder(t *testing.T) {
	msgs := notifySocket(t)
	n := newNotifier(context.Background())
	n.Status("opening pool %s", "p")
	n.Status("resuming %d process-image runs", 2)
	n.Ready("serving snapshots API on /a, admin API on /b")
	n.Stopping()
	for _, want := range []string{
		"STATUS=opening pool p",
		"STATUS=resuming 2 process-image runs",
		"READY=1\nSTATUS=serving snapshots API on /a, admin API on /b",
		"STOPPING=1\nSTATUS=shutting down",
	} {
		if got := next(t, msgs); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

// Without NOTIFY_SOCKET (not under systemd) nothing is sent and nothing
// fails.
func TestNotifierNoSocket(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	os.Unsetenv("NOTIFY_SOCKET")
	n := newNotifier(context.Background())
	n.Status("x")
	n.Ready("y")
	n.Stopping()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { n.Watchdog(ctx, func(context.Context) error { return nil }); close(done) }()
	select {
	case <-done: // no WATCHDOG_USEC: returns at once
	case <-time.After(500 * time.Millisecond):
		t.Fatal("Watchdog without WATCHDOG_USEC did not return")
	}
}

func setWatchdog(t *testing.T, d time.Duration) {
	t.Setenv("WATCHDOG_USEC", strconv.FormatInt(d.Microseconds(), 10))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
}

// The watchdog pings at half of WATCHDOG_USEC while healthy, stops
// pinging (and says why in STATUS) while not, and resumes with the ready
// status when health returns.
func TestNotifierWatchdog(t *testing.T) {
	msgs := notifySocket(t)
	setWatchdog(t, 200*time.Millisecond)
	n := newNotifier(context.Background())
	n.Ready("serving")
	if got := next(t, msgs); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("got %q", got)
	}

	var sick atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		n.Watchdog(ctx, func(context.Context) error {
			if sick.Load() {
				return errors.New("pool p: status: no such device")
			}
			return nil
		})
		close(done)
	}()

	for i := 0; i < 3; i++ {
		if got := next(t, msgs); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q", i, got)
		}
	}
	// Three pings, the first at once, then every 100ms.
	if el := time.Since(start); el < 150*time.Millisecond || el > 2*time.Second {
		t.Errorf("3 pings took %s, want about 200ms at a 100ms interval", el)
	}

	sick.Store(true)
	for {
		got := next(t, msgs)
		if got == "WATCHDOG=1" {
			continue // a tick that ran before sick was set
		}
		if got != "STATUS=unhealthy: pool p: status: no such device" {
			t.Fatalf("got %q, want the unhealthy status", got)
		}
		break
	}
	// No ping (and no repeated status) while unhealthy.
	select {
	case m := <-msgs:
		t.Fatalf("sent %q while unhealthy", m)
	case <-time.After(350 * time.Millisecond):
	}

	sick.Store(false)
	if got := next(t, msgs); got != "STATUS=serving" {
		t.Fatalf("got %q, want the ready status back", got)
	}
	if got := next(t, msgs); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want pings again", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Watchdog did not return after its context ended")
	}
}

// A health check that hangs past the ping interval means no ping: a
// wedged daemon (a stuck dm ioctl) gets restarted by systemd.
func TestNotifierWatchdogHungCheck(t *testing.T) {
	msgs := notifySocket(t)
	setWatchdog(t, 100*time.Millisecond)
	n := newNotifier(context.Background())
	// Deferred in this order so the check returns only after ctx ended.
	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go n.Watchdog(ctx, func(context.Context) error { <-release; return nil })
	select {
	case m := <-msgs:
		t.Fatalf("sent %q while the health check hangs", m)
	case <-time.After(300 * time.Millisecond):
	}
}
