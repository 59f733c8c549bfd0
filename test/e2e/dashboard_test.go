package e2e

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/cmd/flyio-image-manager/dashboard"
	"github.com/superfly/flyio-image-manager/internal/dmtest"
	"github.com/superfly/flyio-image-manager/service"
)

// TestDashboardImport drives the real dashboard model over the real
// daemon and versitygw in a virtual terminal: the Monitor view shows the
// pool, the Images view lists an uploaded tarball as not imported, Enter
// imports it and the row turns ready; the image then runs.
func TestDashboardImport(t *testing.T) {
	dmtest.Require(t)
	s := startS3Env(t)
	s.gw.SetEnv(t) // the dashboard lists S3 itself, with the default chain
	const key, hello = "images/busybox.tar", "hello from the dashboard\n"
	s.putBusybox(key, hello)

	src := dashboard.NewDaemonSource(admin.NewClient(s.Cfg.AdminAddress), service.S3Config(s.Cfg), "images/")
	m := dashboard.New(src, dashboard.Options{Prefix: "images/", StatusTimeout: 30 * time.Second, ListTimeout: time.Minute})
	d := &dashScreen{t: t, tm: teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 36))}

	d.waitFor(time.Minute, "[Pool "+s.Cfg.Pool.Name+"]", "mode rw", "accepting new work")
	d.press(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("2")})
	d.waitFor(time.Minute, "> "+key, "not imported")
	d.press(tea.KeyMsg{Type: tea.KeyEnter})
	d.waitFor(cmdTimeout, "import of "+key+" accepted", "("+key+"): done, ", " ready ")

	if got := s.Ctr("run", "--rm", "--snapshotter", "flyio", "images.flyio.local/busybox:latest", "dash1", "/bin/sh", "-c", "cat /etc/hello"); got != hello {
		t.Errorf("container printed %q, want %q", got, hello)
	}
	// Enter again: already imported, nothing requested.
	d.press(tea.KeyMsg{Type: tea.KeyEnter})
	d.waitFor(time.Minute, key+": already imported (ready as images.flyio.local/busybox:latest)")

	d.press(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	d.tm.WaitFinished(t, teatest.WithFinalTimeout(30*time.Second))
}

// dashScreen reads what a teatest program draws. bubbletea redraws only
// changed lines, so a wait looks at everything drawn since the last key.
type dashScreen struct {
	t    *testing.T
	tm   *teatest.TestModel
	all  bytes.Buffer
	mark int
}

func (d *dashScreen) drain() {
	if _, err := io.Copy(&d.all, d.tm.Output()); err != nil {
		d.t.Fatal(err)
	}
}

func (d *dashScreen) press(k tea.KeyMsg) {
	d.drain()
	d.mark = d.all.Len()
	d.tm.Send(k)
}

func (d *dashScreen) waitFor(timeout time.Duration, texts ...string) {
	d.t.Helper()
	deadline := time.Now().Add(timeout)
	var plain string
	for time.Now().Before(deadline) {
		d.drain()
		plain = ansi.Strip(d.all.String()[d.mark:])
		missing := false
		for _, s := range texts {
			if !strings.Contains(plain, s) {
				missing = true
				break
			}
		}
		if !missing {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	d.t.Fatalf("dashboard never showed %q; drawn since the last key:\n%s", texts, tail(plain, 60))
}
