// Package dashboard is the `flyio-image-manager dashboard` terminal UI: a
// Monitor view (pool gauges, runs in progress, activity log) and an Images
// view (the S3 tarballs under the prefix and whether they are imported,
// with Enter to import one); `c` cancels a run after a y/n confirmation. It is a bubbletea program over a Source, so
// tests drive it with a fake and the command with the daemon's admin
// socket and S3.
package dashboard

import (
	"context"
	"errors"
	"fmt"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/s3fetch"
)

// Options tunes refreshes and limits; zero fields take the defaults.
type Options struct {
	// StatusInterval is how often status and runs are reloaded (1s).
	StatusInterval time.Duration
	// ListInterval is how often the S3 listing is reloaded (30s); `r`
	// reloads it at once.
	ListInterval time.Duration
	// StatusTimeout and ListTimeout bound one load (5s and 20s), so a
	// panel never says "loading" for longer.
	StatusTimeout time.Duration
	ListTimeout   time.Duration
	// CancelTimeout bounds a cancel (30s): the daemon answers only once
	// the run has cleaned up, which takes longer than a status load.
	CancelTimeout time.Duration
	// LogSize is how many activity log entries are kept (200).
	LogSize int
	// Prefix is the S3 prefix listed, shown in the Images panel title.
	Prefix string
	// Now is the clock (time.Now).
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.StatusInterval <= 0 {
		o.StatusInterval = time.Second
	}
	if o.ListInterval <= 0 {
		o.ListInterval = 30 * time.Second
	}
	if o.StatusTimeout <= 0 {
		o.StatusTimeout = 5 * time.Second
	}
	if o.ListTimeout <= 0 {
		o.ListTimeout = 20 * time.Second
	}
	if o.CancelTimeout <= 0 {
		o.CancelTimeout = 30 * time.Second
	}
	if o.LogSize <= 0 {
		o.LogSize = 200
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// View is one of the dashboard's screens.
type View int

const (
	// MonitorView (key 1) shows the pool, the runs in progress and the
	// activity log.
	MonitorView View = iota
	// ImagesView (key 2) shows the S3 images and the activity log.
	ImagesView
)

func (v View) String() string {
	if v == ImagesView {
		return "Images"
	}
	return "Monitor"
}

// panel identifies a focusable panel; Tab cycles through the current
// view's panels.
type panel int

const (
	panelPool panel = iota
	panelRuns
	panelImages
	panelLog
)

var viewPanels = map[View][]panel{
	MonitorView: {panelPool, panelRuns, panelLog},
	ImagesView:  {panelImages, panelLog},
}

// Model is the dashboard's bubbletea model. Create it with New.
type Model struct {
	src  Source
	opts Options

	width, height int
	view          View
	focus         map[View]int // index into viewPanels[view]

	// Daemon side, reloaded every StatusInterval.
	status        admin.Status
	runs          []admin.Run
	statusErr     error
	statusLoaded  bool // a status load finished (well or not)
	statusLoading bool
	runStates     map[string]admin.RunState // for logging state changes
	imported      map[string]bool           // key+ETag of imported images; nil if unknown
	daemonDown    bool

	// S3 side, reloaded every ListInterval and on `r`.
	objects     []s3fetch.ObjectInfo
	listErr     error
	listLoaded  bool
	listLoading bool
	requested   map[string]bool // keys whose import request is in flight

	imageCursor int
	runCursor   int
	logOffset   int // lines scrolled up from the newest

	confirm *pendingCancel // a cancel waiting for y/n, or nil

	log      activity
	quitting bool
}

// New returns a dashboard over src.
func New(src Source, opts Options) *Model {
	opts = opts.withDefaults()
	return &Model{
		src:       src,
		opts:      opts,
		width:     100,
		height:    30,
		focus:     map[View]int{},
		runStates: map[string]admin.RunState{},
		requested: map[string]bool{},
		log:       activity{max: opts.LogSize},
	}
}

// CurrentView is the view on screen.
func (m *Model) CurrentView() View { return m.view }

// Quitting reports whether the user asked to quit.
func (m *Model) Quitting() bool { return m.quitting }

// Messages the commands send back.
type (
	statusMsg struct {
		status    admin.Status
		runs      []admin.Run
		imported  map[string]bool // nil when the images list failed
		statusErr error
		runsErr   error
	}
	listMsg struct {
		objs []s3fetch.ObjectInfo
		err  error
	}
	processMsg struct {
		key string
		run admin.Run
		err error
	}
	statusTickMsg struct{}
	listTickMsg   struct{}
)

// Init starts the first loads and the refresh tickers.
func (m *Model) Init() tea.Cmd {
	m.logf("dashboard started; press 2 for the Images view, q to quit")
	return tea.Batch(m.loadStatus(), m.loadList(), m.statusTick(), m.listTick())
}

func (m *Model) statusTick() tea.Cmd {
	return tea.Tick(m.opts.StatusInterval, func(time.Time) tea.Msg { return statusTickMsg{} })
}

func (m *Model) listTick() tea.Cmd {
	return tea.Tick(m.opts.ListInterval, func(time.Time) tea.Msg { return listTickMsg{} })
}

// loadStatus fetches status and runs unless a load is in flight, so a slow
// daemon never has loads piling up behind it.
func (m *Model) loadStatus() tea.Cmd {
	if m.statusLoading {
		return nil
	}
	m.statusLoading = true
	src, timeout := m.src, m.opts.StatusTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		var msg statusMsg
		msg.status, msg.statusErr = src.Status(ctx)
		if msg.statusErr == nil {
			msg.runs, msg.runsErr = src.Runs(ctx)
		}
		if msg.statusErr == nil && msg.runsErr == nil {
			// Only refines "ready"; a daemon without the images endpoint
			// still gets a working dashboard.
			if imgs, err := src.Images(ctx); err == nil {
				msg.imported = make(map[string]bool, len(imgs))
				for _, im := range imgs {
					msg.imported[im.Key+"\x00"+im.ETag] = true
				}
			}
		}
		if ctx.Err() != nil {
			if msg.statusErr != nil {
				msg.statusErr = fmt.Errorf("no answer from the daemon within %s: %w", timeout, msg.statusErr)
			}
			if msg.runsErr != nil {
				msg.runsErr = fmt.Errorf("no answer from the daemon within %s: %w", timeout, msg.runsErr)
			}
		}
		return msg
	}
}

func (m *Model) loadList() tea.Cmd {
	if m.listLoading {
		return nil
	}
	m.listLoading = true
	src, timeout := m.src, m.opts.ListTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		objs, err := src.ListImages(ctx)
		if err != nil && ctx.Err() != nil {
			err = fmt.Errorf("no answer from S3 within %s: %w", timeout, err)
		}
		return listMsg{objs: objs, err: err}
	}
}

func (m *Model) processImage(key, imageID string) tea.Cmd {
	src, timeout := m.src, m.opts.StatusTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		run, err := src.ProcessImage(ctx, importRequest(key, imageID))
		return processMsg{key: key, run: run, err: err}
	}
}

// Update handles keys, window sizes, ticks and load results.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, nil
	case tea.KeyMsg:
		return m, m.handleKey(msg)
	case statusTickMsg:
		return m, tea.Batch(m.loadStatus(), m.statusTick())
	case listTickMsg:
		return m, tea.Batch(m.loadList(), m.listTick())
	case statusMsg:
		m.statusLoading = false
		m.applyStatus(msg)
		return m, nil
	case listMsg:
		m.listLoading = false
		m.applyList(msg)
		return m, nil
	case processMsg:
		delete(m.requested, msg.key)
		if msg.err != nil {
			m.logf("import of %s failed: %v", msg.key, msg.err)
			return m, nil
		}
		m.logf("import of %s accepted: run %s -> %s (%s)", msg.key, msg.run.ID, msg.run.Ref, msg.run.State)
		m.noteRun(msg.run)
		return m, m.loadStatus()
	case cancelMsg:
		return m, m.applyCancel(msg)
	}
	return m, nil
}

func (m *Model) applyStatus(msg statusMsg) {
	m.statusLoaded = true
	err := msg.statusErr
	if err == nil {
		err = msg.runsErr
	}
	if err != nil {
		// Log transitions only: a stopped daemon would otherwise fill the
		// log with one line a second.
		down := errors.Is(err, admin.ErrDaemonNotRunning)
		if m.statusErr == nil || down != m.daemonDown {
			if down {
				m.logf("daemon is not running; retrying every %s", m.opts.StatusInterval)
			} else {
				m.logf("daemon status failed: %v", err)
			}
		}
		m.statusErr, m.daemonDown = err, down
		return
	}
	if m.statusErr != nil {
		m.logf("daemon is answering again")
	}
	m.statusErr, m.daemonDown = nil, false
	m.status = msg.status
	m.imported = msg.imported
	first := m.runs == nil && len(m.runStates) == 0
	m.runs = msg.runs
	if m.runs == nil {
		m.runs = []admin.Run{}
	}
	for _, r := range m.runs {
		if first {
			// Past runs are history, not activity.
			m.runStates[r.ID] = r.State
			continue
		}
		m.noteRun(r)
	}
	m.clampCursors()
}

// noteRun logs a run's state when it is new or changed.
func (m *Model) noteRun(r admin.Run) {
	prev, seen := m.runStates[r.ID]
	m.runStates[r.ID] = r.State
	switch {
	case seen && prev == r.State:
	case r.State == admin.RunFailed || r.State == admin.RunCancelled:
		m.logf("run %s (%s): %s: %s", r.ID, r.Key, r.State, r.Error)
	case r.State == admin.RunDone:
		m.logf("run %s (%s): done, %d entries -> %s", r.ID, r.Key, r.Entries, r.Ref)
	default:
		m.logf("run %s (%s): %s", r.ID, r.Key, r.State)
	}
}

func (m *Model) applyList(msg listMsg) {
	m.listLoaded = true
	if msg.err != nil {
		m.listErr = msg.err
		m.logf("listing S3 failed: %v", msg.err)
		return
	}
	m.listErr = nil
	m.objects = msg.objs
	m.logf("listed %d images in S3", len(msg.objs))
	m.clampCursors()
}

// activeRuns are the runs not finished yet, oldest first.
func (m *Model) activeRuns() []admin.Run {
	var out []admin.Run
	for _, r := range m.runs {
		if !r.State.Finished() {
			out = append(out, r)
		}
	}
	return out
}

func (m *Model) rows() []imageRow { return imageRows(m.objects, m.runs, m.imported, m.requested) }

func (m *Model) clampCursors() {
	m.imageCursor = clamp(m.imageCursor, len(m.objects))
	m.runCursor = clamp(m.runCursor, len(m.activeRuns()))
}

func clamp(i, n int) int {
	if i >= n {
		i = n - 1
	}
	if i < 0 {
		i = 0
	}
	return i
}

func (m *Model) logf(format string, args ...any) {
	m.log.add(m.opts.Now(), format, args...)
	// Keep a scrolled-back log where it is; new lines land below.
	if m.logOffset > 0 {
		m.logOffset++
	}
}
