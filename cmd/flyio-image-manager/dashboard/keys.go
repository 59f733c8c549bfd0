package dashboard

import (
	tea "github.com/charmbracelet/bubbletea"

	"github.com/superfly/flyio-image-manager/admin"
	"github.com/superfly/flyio-image-manager/internal/imagename"
)

// handleKey implements the keyboard reference: 1/2 views, j/k and arrows,
// g/G, r, Tab, Enter, c (then y/n), q and Ctrl+C.
func (m *Model) handleKey(k tea.KeyMsg) tea.Cmd {
	// A pending cancel takes the next key, whatever it is, so a stray key
	// never both dismisses the question and acts; Ctrl+C still quits.
	if m.confirm != nil && k.String() != "ctrl+c" {
		return m.answerCancel(k)
	}
	switch k.String() {
	case "q", "ctrl+c":
		m.quitting = true
		return tea.Quit
	case "1":
		m.switchView(MonitorView)
	case "2":
		m.switchView(ImagesView)
	case "tab":
		m.focus[m.view] = (m.focus[m.view] + 1) % len(viewPanels[m.view])
	case "shift+tab":
		n := len(viewPanels[m.view])
		m.focus[m.view] = (m.focus[m.view] + n - 1) % n
	case "j", "down":
		m.move(1)
	case "k", "up":
		m.move(-1)
	case "g", "home":
		m.move(-1 << 30)
	case "G", "end":
		m.move(1 << 30)
	case "r":
		m.logf("refreshing daemon status and the S3 listing")
		return tea.Batch(m.loadStatus(), m.loadList())
	case "enter":
		return m.enter()
	case "c":
		m.startCancel()
	}
	return nil
}

func (m *Model) switchView(v View) {
	if m.view == v {
		return
	}
	m.view = v
	m.logf("switched to the %s view", v)
}

func (m *Model) focused() panel { return viewPanels[m.view][m.focus[m.view]] }

// move moves the focused panel's cursor by d rows (the log scrolls; the
// pool panel has nothing to move).
func (m *Model) move(d int) {
	switch m.focused() {
	case panelImages:
		m.imageCursor = clamp(m.imageCursor+d, len(m.objects))
	case panelRuns:
		m.runCursor = clamp(m.runCursor+d, len(m.activeRuns()))
	case panelLog:
		// Offset counts lines up from the newest: k/up goes back in time.
		m.logOffset = clamp(m.logOffset-d, len(m.log.entries))
	}
}

// enter imports the selected image in the Images view. An image already
// importing or imported is not requested again (the daemon would join the
// same run anyway), and the log says why nothing happened.
func (m *Model) enter() tea.Cmd {
	if m.view != ImagesView {
		m.logf("Enter imports an image in the Images view: press 2 for the Images view")
		return nil
	}
	rows := m.rows()
	if len(rows) == 0 {
		if m.listErr != nil {
			m.logf("no images to import: listing S3 failed; press r to retry")
		} else {
			m.logf("no images to import under the prefix; press r to refresh")
		}
		return nil
	}
	row := rows[clamp(m.imageCursor, len(rows))]
	key := row.obj.Key
	switch row.state {
	case stateDeleted:
		m.logf("%s: its image was deleted; asking the daemon to import it again", key)
	case stateRequested:
		m.logf("%s: import already requested, waiting for the daemon", key)
		return nil
	case stateImporting:
		m.logf("%s: already importing (run %s, %s)", key, row.run.ID, row.label())
		return nil
	case stateReady:
		m.logf("%s: already imported (ready as %s)", key, row.run.Ref)
		return nil
	}
	if m.statusErr != nil && m.daemonDown {
		m.logf("cannot import %s: the daemon is not running", key)
		return nil
	}
	id := imagename.DeriveImageID(key)
	m.requested[key] = true
	m.logf("importing %s as image %s", key, id)
	return m.processImage(key, id)
}

// importRequest is what process-image sends for key with default flags:
// the image id derived from the key and the default ref.
func importRequest(key, imageID string) admin.ProcessImageRequest {
	return admin.ProcessImageRequest{Key: key, ImageID: imageID}
}
