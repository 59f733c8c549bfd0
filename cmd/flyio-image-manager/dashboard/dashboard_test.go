package dashboard

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/x/ansi"
	"github.com/charmbracelet/x/exp/teatest"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// screen drives a dashboard in teatest's virtual terminal (120x36) and
// reads what it draws. bubbletea only redraws lines that changed, so a
// wait looks at everything drawn since the last key press: wait for text
// that the key press (or what follows from it) changes.
type screen struct {
	t    *testing.T
	tm   *teatest.TestModel
	all  bytes.Buffer
	mark int
}

func start(t *testing.T, f *fakeSource) *screen {
	t.Helper()
	m := New(f, Options{
		Prefix:         "images/",
		StatusInterval: 50 * time.Millisecond,
		ListInterval:   time.Hour, // only on start and on r
		StatusTimeout:  time.Second,
		ListTimeout:    time.Second,
	})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(120, 36))
	t.Cleanup(func() { tm.Quit() })
	return &screen{t: t, tm: tm}
}

// waitFor waits until all of texts have been drawn (ANSI stripped) since
// the last key press.
func (s *screen) waitFor(texts ...string) {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var plain string
	for time.Now().Before(deadline) {
		s.drain()
		plain = ansi.Strip(string(s.all.Bytes()[s.mark:]))
		ok := true
		for _, t := range texts {
			if !strings.Contains(plain, t) {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.t.Fatalf("screen never showed %q; drawn since the last key:\n%s", texts, plain)
}

func (s *screen) drain() {
	if _, err := io.Copy(&s.all, s.tm.Output()); err != nil {
		s.t.Fatal(err)
	}
}

func (s *screen) press(keys ...string) {
	s.drain()
	s.mark = s.all.Len()
	for _, k := range keys {
		switch k {
		case "enter":
			s.tm.Send(tea.KeyMsg{Type: tea.KeyEnter})
		case "tab":
			s.tm.Send(tea.KeyMsg{Type: tea.KeyTab})
		case "down":
			s.tm.Send(tea.KeyMsg{Type: tea.KeyDown})
		default:
			s.tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)})
		}
	}
}

func TestMonitorShowsPool(t *testing.T) {
	s := start(t, newFake())
	s.waitFor("[1 Monitor]", "[Pool flyio-pool]",
		"25.0%  2.5 GiB / 10 GiB", "12.5%  2 MiB / 16 MiB",
		"mode rw   full threshold 90%   accepting new work",
		"r-busybox", "extracting", "1 MiB / 2 MiB")
}

func TestMonitorRefusingAndMode(t *testing.T) {
	f := newFake()
	f.status.PoolState.NeedsCheck = true
	f.status.Refusing = "pool flyio-pool is 92% full (threshold 90%)"
	s := start(t, f)
	s.waitFor("mode needs_check", "REFUSING NEW WORK: pool flyio-pool is 92% full")
}

func TestImagesViewStates(t *testing.T) {
	s := start(t, newFake())
	s.waitFor("[Pool flyio-pool]")
	s.press("2")
	s.waitFor("[2 Images]", "[S3 images under images/ (3)]",
		"images/alpine.tar", "ready",
		"images/busybox.tar.gz", "importing 50%",
		"images/debian.tar.zst", "not imported")
}

func TestCursorMoves(t *testing.T) {
	s := start(t, newFake())
	s.press("2")
	s.waitFor("> images/alpine.tar")
	s.press("j")
	s.waitFor("> images/busybox.tar.gz", "  images/alpine.tar")
	s.press("down")
	s.waitFor("> images/debian.tar.zst")
	s.press("g")
	s.waitFor("> images/alpine.tar")
	s.press("G")
	s.waitFor("> images/debian.tar.zst")
	s.press("k")
	s.waitFor("> images/busybox.tar.gz")
}

func TestEnterImports(t *testing.T) {
	f := newFake()
	s := start(t, f)
	s.press("2")
	s.waitFor("images/debian.tar.zst")
	s.press("G", "enter")
	s.waitFor("importing images/debian.tar.zst as image debian",
		"import of images/debian.tar.zst accepted: run run-1")
	got := f.imports()
	want := []admin.ProcessImageRequest{{Key: "images/debian.tar.zst", ImageID: "debian"}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ProcessImage calls = %+v, want %+v", got, want)
	}
	s.waitFor("importing 25%")

	// Enter on an image importing or imported says so and asks nothing.
	s.press("enter")
	s.waitFor("images/debian.tar.zst: already importing (run run-1")
	s.press("g", "enter")
	s.waitFor("images/alpine.tar: already imported (ready as images.flyio.local/alpine:latest)")
	if n := len(f.imports()); n != 1 {
		t.Fatalf("%d ProcessImage calls, want 1", n)
	}
}

func TestEnterInMonitorHints(t *testing.T) {
	f := newFake()
	s := start(t, f)
	s.waitFor("[Pool flyio-pool]")
	s.press("enter")
	s.waitFor("press 2 for the Images view")
	if n := len(f.imports()); n != 0 {
		t.Fatalf("%d ProcessImage calls from the Monitor view", n)
	}
}

func TestS3ErrorAndRetry(t *testing.T) {
	f := newFake()
	f.listErr = errors.New("ListObjectsV2 on bucket 'b': AccessDenied")
	s := start(t, f)
	s.press("2")
	s.waitFor("S3 error: ListObjectsV2 on bucket 'b': AccessDenied", "press r to retry")
	f.set(func(f *fakeSource) { f.listErr = nil })
	s.press("r")
	s.waitFor("images/alpine.tar", "not imported", "listed 3 images in S3")
}

func TestS3Timeout(t *testing.T) {
	f := newFake()
	f.listDelay = 3 * time.Second
	s := start(t, f)
	s.press("2")
	// ListTimeout is 1s: the panel gives up instead of loading forever.
	s.waitFor("S3 error: no answer from S3 within 1s", "press r to retry")
}

func TestDaemonDown(t *testing.T) {
	f := newFake()
	f.statusErr = fmt.Errorf("%w (no answer on /run/x/admin.sock)", admin.ErrDaemonNotRunning)
	s := start(t, f)
	s.waitFor("daemon: not running", "daemon is not running: flyio-image-manager daemon is not running",
		"retrying every 50ms")
	f.set(func(f *fakeSource) { f.statusErr = nil })
	s.waitFor("daemon is answering again", "2.5 GiB / 10 GiB")
}

func TestTabCyclesFocus(t *testing.T) {
	s := start(t, newFake())
	s.waitFor("[Pool flyio-pool]")
	s.press("tab")
	s.waitFor("[Runs in progress]", " Pool flyio-pool ")
	s.press("tab")
	s.waitFor("[Activity log]")
	s.press("tab")
	s.waitFor("[Pool flyio-pool]")
	s.press("2")
	s.waitFor("[S3 images under images/ (3)]")
	s.press("tab")
	s.waitFor("[Activity log]")
}

func TestQuit(t *testing.T) {
	s := start(t, newFake())
	s.waitFor("[Pool flyio-pool]")
	s.press("q")
	fm := s.tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second))
	m, ok := fm.(*Model)
	if !ok || !m.Quitting() {
		t.Fatalf("final model %T, quitting=%v", fm, ok && m.Quitting())
	}
}

func TestCtrlCQuits(t *testing.T) {
	s := start(t, newFake())
	s.waitFor("[Pool flyio-pool]")
	s.tm.Send(tea.KeyMsg{Type: tea.KeyCtrlC})
	s.tm.WaitFinished(t, teatest.WithFinalTimeout(5*time.Second))
}

// TestStableColumns checks that the Images columns start at the same
// place on every row, selected or not, before and after a refresh that
// brings a key longer than the column (shown cut with "...").
func TestStableColumns(t *testing.T) {
	f := newFake()
	m := New(f, Options{})
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 30})
	m.Update(m.loadStatus()())
	m.Update(m.loadList()())
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("2")})
	col := func() map[int]bool {
		at := map[int]bool{}
		for _, l := range strings.Split(ansi.Strip(m.View()), "\n") {
			if i := strings.Index(l, "2026-11-"); i >= 0 {
				at[i] = true
			}
		}
		return at
	}
	before := col()
	if len(before) != 1 {
		t.Fatalf("MODIFIED column at %v, want one position", before)
	}
	m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("j")})
	long := "images/" + strings.Repeat("very-long-name-", 10) + ".tar"
	f.set(func(f *fakeSource) {
		f.objs = append(f.objs, s3fetch.ObjectInfo{Key: long, Size: 1, ETag: "x", LastModified: f.objs[0].LastModified})
	})
	m.Update(m.loadList()())
	after := col()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("MODIFIED column moved: %v -> %v", before, after)
	}
	if v := ansi.Strip(m.View()); !strings.Contains(v, "images/very-long-name-very-long") || !strings.Contains(v, "...") {
		t.Fatalf("long key not truncated with ...:\n%s", v)
	}
}

func TestActivityLogBounded(t *testing.T) {
	a := activity{max: 3}
	for i := range 10 {
		a.add(time.Unix(0, 0), "line %d", i)
	}
	got := a.lines()
	if len(got) != 3 || !strings.HasSuffix(got[2], "line 9") || !strings.HasSuffix(got[0], "line 7") {
		t.Fatalf("log = %q", got)
	}
}

func TestMonitorDaemonAndQueues(t *testing.T) {
	f := newFake()
	f.status.Daemon = admin.DaemonInfo{Version: "v1.2.3", PID: 42, UptimeSeconds: 192}
	f.status.Queues = []admin.QueueInfo{
		{Name: "downloads", Capacity: 4, Active: 1, Waiting: 2},
		{Name: "unpacks", Capacity: 2, Active: 1},
	}
	s := start(t, f)
	s.waitFor("daemon v1.2.3, pid 42, up 3m12s",
		"queues    downloads 1/4 active, 2 waiting   unpacks 1/2 active, 0 waiting")
}

// TestRunStateChangesLogged checks the activity log follows runs and the
// Images view follows states: busybox finishes, debian is cancelled, and
// alpine's image is deleted (its run still says done).
func TestRunStateChangesLogged(t *testing.T) {
	f := newFake()
	f.runs = append(f.runs, admin.Run{ID: "r-debian", Key: "images/debian.tar.zst", ETag: `"e-debian"`, State: admin.RunDownloading, Size: 40 << 20})
	s := start(t, f)
	s.press("2")
	s.waitFor("images/debian.tar.zst", "importing 0%")
	s.press() // mark: what follows comes from the source changing
	f.set(func(f *fakeSource) {
		f.runs[1].State, f.runs[1].Entries, f.runs[1].Ref = admin.RunDone, 120, "images.flyio.local/busybox:latest"
		f.runs[2].State, f.runs[2].Error = admin.RunCancelled, "cancelled by operator"
		f.deleted = map[string]bool{"images/alpine.tar": true}
	})
	s.waitFor("run r-busybox (images/busybox.tar.gz): done, 120 entries -> images.flyio.local/busybox:latest",
		"run r-debian (images/debian.tar.zst): cancelled: cancelled by operator",
		"deleted", "cancelled      ")

	// Enter on a cancelled image imports it again.
	s.press("G", "enter")
	s.waitFor("importing images/debian.tar.zst as image debian")
}

// TestFitsTerminal checks that both views fill the terminal exactly, at
// any size, so a resize never leaves stray or wrapped lines.
func TestFitsTerminal(t *testing.T) {
	f := newFake()
	f.status.Refusing = strings.Repeat("a very long refusal message ", 10)
	m := New(f, Options{})
	m.Update(m.loadStatus()())
	m.Update(m.loadList()())
	m.logf("%s", strings.Repeat("a log entry wider than any panel ", 12))
	for _, size := range [][2]int{{120, 36}, {80, 24}, {60, 16}, {40, 12}, {200, 60}} {
		m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
		for _, key := range []string{"1", "2"} {
			m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(key)})
			lines := strings.Split(m.View(), "\n")
			if len(lines) != size[1] {
				t.Errorf("%dx%d view %s: %d lines", size[0], size[1], key, len(lines))
			}
			for i, l := range lines {
				if w := ansi.StringWidth(l); w > size[0] {
					t.Errorf("%dx%d view %s line %d is %d wide: %q", size[0], size[1], key, i, w, ansi.Strip(l))
				}
			}
		}
	}
}

// newFakeTwoRuns is newFake with a second run in progress (debian,
// downloading), so selecting a run means moving the cursor.
func newFakeTwoRuns() *fakeSource {
	f := newFake()
	f.runs = append(f.runs, admin.Run{ID: "r-debian", Key: "images/debian.tar.zst", ETag: `"e-debian"`,
		State: admin.RunDownloading, Size: 40 << 20, CompressedBytes: 4 << 20})
	return f
}

func TestCancelRunConfirmed(t *testing.T) {
	f := newFakeTwoRuns()
	s := start(t, f)
	s.waitFor("r-busybox", "r-debian")
	// The runs panel shows a cursor only once it has focus.
	s.press("tab")
	s.waitFor("[Runs in progress]", "> r-busybox", "  r-debian")
	s.press("j")
	s.waitFor("> r-debian")
	s.press("c")
	s.waitFor("cancel run r-debian (images/debian.tar.zst)? y/n")
	if n := len(f.cancelled()); n != 0 {
		t.Fatalf("Cancel called before y: %v", f.cancelled())
	}
	s.press("y")
	s.waitFor("run r-debian (images/debian.tar.zst): cancelled by the operator")
	if got := f.cancelled(); fmt.Sprint(got) != "[r-debian]" {
		t.Fatalf("Cancel calls = %v, want [r-debian]", got)
	}
	// The help line is back and the cancelled run has left the panel.
	s.waitFor("c cancel run", "> r-busybox")
}

func TestCancelRunAborted(t *testing.T) {
	f := newFakeTwoRuns()
	s := start(t, f)
	s.waitFor("r-busybox")
	s.press("tab", "c")
	s.waitFor("cancel run r-busybox (images/busybox.tar.gz)? y/n")
	s.press("n")
	s.waitFor("not cancelling run r-busybox (images/busybox.tar.gz)")
	// Any other key aborts too, and is not acted on: j does not move.
	s.press("c")
	s.waitFor("cancel run r-busybox (images/busybox.tar.gz)? y/n")
	s.press("j")
	s.waitFor("not cancelling run r-busybox")
	s.press("c")
	s.waitFor("cancel run r-busybox (images/busybox.tar.gz)? y/n")
	s.press("q")
	s.waitFor("not cancelling run r-busybox")
	if got := f.cancelled(); len(got) != 0 {
		t.Fatalf("Cancel calls = %v, want none", got)
	}
}

func TestCancelRefused(t *testing.T) {
	f := newFake()
	f.cancelErr = errors.New("process-image run r-busybox is committing; too late to cancel, use 'delete-image busybox' once it is done: failed precondition")
	s := start(t, f)
	s.waitFor("r-busybox")
	s.press("tab", "c")
	s.waitFor("cancel run r-busybox (images/busybox.tar.gz)? y/n")
	s.press("y")
	// The refusal is wider than the log panel: it wraps, keeping the advice.
	s.waitFor("cannot cancel run r-busybox (images/busybox.tar.gz): process-image run r-busybox is committing; too late",
		"           to cancel, use 'delete-image busybox' once it is done")
	if got := f.cancelled(); fmt.Sprint(got) != "[r-busybox]" {
		t.Fatalf("Cancel calls = %v, want [r-busybox]", got)
	}
}

func TestCancelNothingSelected(t *testing.T) {
	f := newFake()
	s := start(t, f)
	s.waitFor("[Pool flyio-pool]")
	s.press("c")
	s.waitFor("c cancels the run selected in the Runs panel: press Tab to focus it")
	s.press("2")
	s.waitFor("> images/alpine.tar")
	s.press("c")
	s.waitFor("images/alpine.tar: ready, not importing; nothing to cancel")
	f.set(func(f *fakeSource) { f.runs = f.runs[:1] })
	s.press("1", "tab")
	s.waitFor("no runs in progress")
	s.press("c")
	s.waitFor("no runs in progress to cancel")
	if got := f.cancelled(); len(got) != 0 {
		t.Fatalf("Cancel calls = %v, want none", got)
	}
}

func TestImagesViewCancelsImport(t *testing.T) {
	f := newFake()
	s := start(t, f)
	s.press("2")
	s.waitFor("images/busybox.tar.gz", "importing 50%")
	s.press("j", "c")
	s.waitFor("cancel run r-busybox (images/busybox.tar.gz)? y/n")
	s.press("y")
	s.waitFor("run r-busybox (images/busybox.tar.gz): cancelled by the operator", "cancelled      ")
	if got := f.cancelled(); fmt.Sprint(got) != "[r-busybox]" {
		t.Fatalf("Cancel calls = %v, want [r-busybox]", got)
	}
}
