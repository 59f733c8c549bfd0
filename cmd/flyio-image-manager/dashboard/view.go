package dashboard

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/units"
)

var (
	focusedBorder   = lipgloss.NewStyle().Border(lipgloss.ThickBorder()).BorderForeground(lipgloss.Color("12"))
	unfocusedBorder = lipgloss.NewStyle().Border(lipgloss.NormalBorder()).BorderForeground(lipgloss.Color("8"))
	titleStyle      = lipgloss.NewStyle().Bold(true)
	headStyle       = lipgloss.NewStyle().Faint(true)
	selStyle        = lipgloss.NewStyle().Bold(true)
	errStyle        = lipgloss.NewStyle().Foreground(lipgloss.Color("9"))
	warnStyle       = lipgloss.NewStyle().Foreground(lipgloss.Color("11")).Bold(true)
)

// View renders the current view to fit the terminal.
func (m *Model) View() string {
	if m.quitting {
		return ""
	}
	w, h := max(m.width, 40), max(m.height, 12)
	var body []string
	rest := h - 2 // header and footer
	if m.view == MonitorView {
		// The pool panel keeps its 8 lines unless the terminal is too
		// short for the runs and log to show a line each.
		poolH := min(8, max(3, rest-8))
		runsH := max(4, (rest-poolH)*2/5)
		logH := max(3, rest-poolH-runsH)
		body = []string{
			m.box(panelPool, m.poolTitle(), m.poolLines(w-4), w, poolH),
			m.box(panelRuns, "Runs in progress", m.runLines(w-4, runsH-3), w, runsH),
			m.box(panelLog, "Activity log", m.logLines(w-4, logH-3), w, logH),
		}
	} else {
		imgH := max(5, rest*3/5)
		logH := max(3, rest-imgH)
		body = []string{
			m.box(panelImages, m.imagesTitle(), m.imageLines(w-4, imgH-3), w, imgH),
			m.box(panelLog, "Activity log", m.logLines(w-4, logH-3), w, logH),
		}
	}
	// Exactly h lines: a terminal too small for the minimum panel sizes
	// loses the bottom of the last panel, never the header or footer.
	lines := strings.Split(lipgloss.JoinVertical(lipgloss.Left, body...), "\n")
	if len(lines) > rest {
		lines = lines[:rest]
	}
	for len(lines) < rest {
		lines = append(lines, "")
	}
	return strings.Join(append(append([]string{m.header(w)}, lines...), m.footer(w)), "\n")
}

func (m *Model) header(w int) string {
	tab := func(v View, key string) string {
		s := key + " " + v.String()
		if m.view == v {
			return titleStyle.Render("[" + s + "]")
		}
		return " " + s + " "
	}
	daemon := "daemon: ok"
	if d := m.status.Daemon; d.Version != "" {
		daemon = fmt.Sprintf("daemon %s, pid %d, up %s", d.Version, d.PID, units.Duration(time.Duration(d.UptimeSeconds*float64(time.Second))))
	}
	switch {
	case !m.statusLoaded:
		daemon = "daemon: connecting"
	case m.daemonDown:
		daemon = errStyle.Render("daemon: not running")
	case m.statusErr != nil:
		daemon = errStyle.Render("daemon: error")
	}
	left := "flyio-image-manager  " + tab(MonitorView, "1") + " " + tab(ImagesView, "2")
	gap := w - lipgloss.Width(left) - lipgloss.Width(daemon)
	if gap < 1 {
		return ansi.Truncate(left+" "+daemon, w, "...")
	}
	return left + strings.Repeat(" ", gap) + daemon
}

// footer is the help line, or the question while a cancel waits for y/n.
func (m *Model) footer(w int) string {
	if m.confirm != nil {
		return warnStyle.Render(fit(m.confirm.prompt()+"  (any other key keeps it)", w))
	}
	s := "j/k move  g/G first/last  Tab panel  1/2 view  Enter import  c cancel run  r refresh  q quit"
	return headStyle.Render(fit(s, w))
}

// box draws a panel of outer size w x h (content w-4 wide): the title (bracketed when the
// panel has focus, with a heavier border) and then lines, cut or padded to
// fit.
func (m *Model) box(p panel, title string, lines []string, w, h int) string {
	style := unfocusedBorder
	if m.focused() == p {
		style = focusedBorder
		title = "[" + title + "]"
	} else {
		title = " " + title + " "
	}
	inner := w - 4 // border and a space of padding each side
	out := make([]string, 0, h-2)
	out = append(out, titleStyle.Render(fit(title, inner)))
	for _, l := range lines {
		if len(out) == h-2 {
			break
		}
		out = append(out, l)
	}
	for len(out) < h-2 {
		out = append(out, strings.Repeat(" ", inner))
	}
	return style.Padding(0, 1).Width(w - 2).Render(strings.Join(out, "\n"))
}

func (m *Model) poolTitle() string {
	if m.status.Pool == "" {
		return "Pool"
	}
	return "Pool " + m.status.Pool
}

// daemonProblem is the panel text for a daemon that does not answer.
func (m *Model) daemonProblem(w int) []string {
	if m.daemonDown {
		lines := wrap("daemon is not running: "+m.statusErr.Error(), w, 2)
		return append(lines, fit(fmt.Sprintf("retrying every %s; press r to retry now", m.opts.StatusInterval), w))
	}
	lines := wrap("daemon error: "+m.statusErr.Error(), w, 2)
	return append(lines, fit("press r to retry", w))
}

func (m *Model) poolLines(w int) []string {
	if !m.statusLoaded {
		return []string{fit("loading daemon status...", w)}
	}
	if m.statusErr != nil {
		var out []string
		for _, l := range m.daemonProblem(w) {
			out = append(out, errStyle.Render(l))
		}
		return out
	}
	ps := m.status.PoolState
	bs := ps.DataBlockSize
	gauge := func(label string, used, total uint64) string {
		figures := fmt.Sprintf("%6s  %s / %s", units.Percent(used, total), units.Bytes(used), units.Bytes(total))
		barW := min(40, max(10, w-12-2-28))
		return fit(fmt.Sprintf("%-10s  %s  %s", label, bar(int64(used), int64(total), barW), figures), w)
	}
	lines := []string{
		gauge("data", ps.UsedDataBlocks*bs, ps.TotalDataBlocks*bs),
		gauge("metadata", ps.UsedMetaBytes(), ps.TotalMetaBytes()),
	}
	mode := fmt.Sprintf("mode %s   full threshold %d%%", poolMode(m.status), m.status.FullThreshold)
	if m.status.Refusing != "" {
		lines = append(lines, warnStyle.Render(fit(mode+"   REFUSING NEW WORK: "+m.status.Refusing, w)))
	} else {
		lines = append(lines, fit(mode+"   accepting new work", w))
	}
	lines = append(lines, fit("queues    "+queueList(m.status.Queues), w))
	counts := fmt.Sprintf("images %d   snapshots %s   devices %s", m.status.Images, countList(m.status.Snapshots), countList(m.status.Devices))
	return append(lines, fit(counts, w))
}

// poolMode is the pool's mode as dm reports it: rw, ro, failed,
// out_of_data_space, with needs_check added when set.
func poolMode(st admin.Status) string {
	ps := st.PoolState
	switch {
	case ps.Fail:
		return "failed"
	case ps.NeedsCheck:
		return "needs_check"
	case ps.ReadOnly:
		return "ro"
	case ps.OutOfDataSpace:
		return "out_of_data_space"
	}
	return "rw"
}

func queueList(qs []admin.QueueInfo) string {
	if len(qs) == 0 {
		return "-"
	}
	parts := make([]string, len(qs))
	for i, q := range qs {
		parts[i] = fmt.Sprintf("%s %d/%d active, %d waiting", q.Name, q.Active, q.Capacity, q.Waiting)
	}
	return strings.Join(parts, "   ")
}

func countList(c map[string]int) string {
	if len(c) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, c[k])
	}
	return strings.Join(parts, " ")
}

// Runs table column widths; KEY takes what is left.
const (
	runIDW    = 12
	runStateW = 11
	runBarW   = 14
	runPctW   = 4
	runBytesW = 21
	runEntW   = 9
)

func (m *Model) runLines(w, h int) []string {
	if m.statusErr != nil {
		return []string{fit("runs unavailable: the daemon does not answer", w)}
	}
	if !m.statusLoaded {
		return []string{fit("loading runs...", w)}
	}
	active := m.activeRuns()
	if len(active) == 0 {
		return []string{fit(fmt.Sprintf("no runs in progress (%d finished runs; the Images view shows their images)", len(m.runs)), w)}
	}
	keyW := max(10, w-2-runIDW-runStateW-runBarW-runPctW-runBytesW-runEntW-6)
	row := func(cur, id, key, state, bar, pct, bytes, ent string) string {
		return fit(cur+fit(id, runIDW)+" "+fit(key, keyW)+" "+fit(state, runStateW)+" "+
			fit(bar, runBarW)+" "+fitRight(pct, runPctW)+" "+fit(bytes, runBytesW)+" "+fitRight(ent, runEntW), w)
	}
	out := []string{headStyle.Render(row("  ", "RUN", "KEY", "STATE", "PROGRESS", "", "READ", "ENTRIES"))}
	start, end := window(len(active), m.runCursor, h-1)
	// The cursor shows only while the panel has focus: that is when `c`
	// acts on the selected run.
	focused := m.focused() == panelRuns
	for i := start; i < end; i++ {
		r := active[i]
		sel := focused && i == m.runCursor
		l := row(cursor(sel), r.ID, r.Key, string(r.State), bar(r.CompressedBytes, r.Size, runBarW),
			fmt.Sprintf("%d%%", percent(r.CompressedBytes, r.Size)),
			units.Bytes(r.CompressedBytes)+" / "+units.Bytes(r.Size), fmt.Sprint(r.Entries))
		if sel {
			l = selStyle.Render(l)
		}
		out = append(out, l)
	}
	return out
}

func (m *Model) imagesTitle() string {
	t := "S3 images"
	if m.opts.Prefix != "" {
		t += " under " + m.opts.Prefix
	}
	if m.listLoaded && m.listErr == nil {
		t += fmt.Sprintf(" (%d)", len(m.objects))
	}
	return t
}

// Images table column widths; KEY takes what is left.
const (
	imgSizeW  = 10
	imgModW   = 16
	imgStateW = 14 // "importing 100%"
)

func (m *Model) imageLines(w, h int) []string {
	var out []string
	if m.listErr != nil {
		for _, l := range wrap("S3 error: "+m.listErr.Error(), w, 3) {
			out = append(out, errStyle.Render(l))
		}
		out = append(out, errStyle.Render(fit("press r to retry", w)))
	} else if !m.listLoaded {
		return []string{fit(fmt.Sprintf("loading images from S3... (gives up after %s)", m.opts.ListTimeout), w)}
	} else if len(m.objects) == 0 {
		return []string{fit("no images under the prefix; press r to refresh", w)}
	}
	if len(m.objects) == 0 {
		return out
	}
	keyW := max(10, w-2-imgSizeW-imgModW-imgStateW-3)
	row := func(cur, key, size, mod, state string) string {
		return fit(cur+fit(key, keyW)+" "+fitRight(size, imgSizeW)+" "+fit(mod, imgModW)+" "+fit(state, imgStateW), w)
	}
	out = append(out, headStyle.Render(row("  ", "KEY", "SIZE", "MODIFIED", "STATE")))
	rows := m.rows()
	start, end := window(len(rows), m.imageCursor, h-len(out))
	for i := start; i < end; i++ {
		r := rows[i]
		l := row(cursor(i == m.imageCursor), r.obj.Key, units.Bytes(r.obj.Size), r.obj.LastModified.Local().Format("2006-01-02 15:04"), r.label())
		if i == m.imageCursor {
			l = selStyle.Render(l)
		}
		out = append(out, l)
	}
	return out
}

// logLines is the newest h lines of the log (less logOffset entries).
// An entry wider than the panel wraps onto a second line under its text,
// so a daemon's refusal keeps its advice (e.g. "use 'delete-image ...'")
// instead of losing it to the right edge.
func (m *Model) logLines(w, h int) []string {
	all := m.log.lines()
	end := len(all) - clamp(m.logOffset, len(all))
	var out []string
	for i := end - 1; i >= 0 && len(out) < h; i-- {
		out = append(logEntryLines(all[i], w), out...)
	}
	if len(out) > h {
		out = out[len(out)-h:]
	}
	return out
}

// logIndent lines continuation lines up under the text after "15:04:05  ".
const logIndent = 10

func logEntryLines(l string, w int) []string {
	if ansi.StringWidth(l) <= w || w <= logIndent+10 {
		return []string{fit(l, w)}
	}
	first := ansi.Truncate(l, w, "")
	// Break at the last space of the first line when there is one late
	// enough, so words are not split.
	if i := strings.LastIndexByte(first, ' '); i > w/2 {
		first = first[:i]
	}
	rest := strings.TrimLeft(l[len(first):], " ")
	return []string{fit(first, w), fit(strings.Repeat(" ", logIndent)+rest, w)}
}
