package dashboard

import (
	"context"
	"errors"
	"fmt"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/superfly/flyio-image-manager/admin"
)

// pendingCancel is a cancel waiting for the operator's y/n. It holds the
// run picked when `c` was pressed, not a cursor position: a refresh
// between `c` and `y` can reorder the runs panel, and `y` must cancel the
// run the prompt named.
type pendingCancel struct {
	id, key string
}

func (p pendingCancel) prompt() string {
	return fmt.Sprintf("cancel run %s (%s)? y/n", p.id, p.key)
}

type cancelMsg struct {
	id, key string
	run     admin.Run
	err     error
}

// startCancel is `c`: it picks the run to cancel (the run selected in the
// focused Runs panel of the Monitor view, or the run of the importing
// image selected in the Images view) and asks for confirmation. With
// nothing cancellable selected it logs why instead.
func (m *Model) startCancel() {
	if m.statusErr != nil {
		m.logf("cannot cancel: the daemon does not answer (%v)", m.statusErr)
		return
	}
	var p pendingCancel
	switch m.view {
	case MonitorView:
		if m.focused() != panelRuns {
			m.logf("c cancels the run selected in the Runs panel: press Tab to focus it")
			return
		}
		active := m.activeRuns()
		if len(active) == 0 {
			m.logf("no runs in progress to cancel")
			return
		}
		r := active[clamp(m.runCursor, len(active))]
		p = pendingCancel{id: r.ID, key: r.Key}
	case ImagesView:
		rows := m.rows()
		if len(rows) == 0 {
			m.logf("no image selected to cancel")
			return
		}
		row := rows[clamp(m.imageCursor, len(rows))]
		switch row.state {
		case stateImporting:
			p = pendingCancel{id: row.run.ID, key: row.obj.Key}
		case stateRequested:
			m.logf("%s: import requested, the daemon has not answered yet; press c again once it shows as importing", row.obj.Key)
			return
		default:
			m.logf("%s: %s, not importing; nothing to cancel", row.obj.Key, row.label())
			return
		}
	}
	m.confirm = &p
	m.logf("%s", p.prompt())
}

// answerCancel takes the key pressed while a cancel waits for
// confirmation: `y` sends it, anything else keeps the run.
func (m *Model) answerCancel(k tea.KeyMsg) tea.Cmd {
	p := *m.confirm
	m.confirm = nil
	if k.String() != "y" {
		m.logf("not cancelling run %s (%s)", p.id, p.key)
		return nil
	}
	m.logf("cancelling run %s (%s)...", p.id, p.key)
	src, timeout := m.src, m.opts.CancelTimeout
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		run, err := src.Cancel(ctx, p.id)
		if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
			// The daemon stops the run before it waits for the cleanup,
			// so a slow answer does not mean the cancel was lost.
			err = fmt.Errorf("no answer from the daemon within %s (the run may still be stopping; the runs panel shows when it has): %w", timeout, err)
		}
		return cancelMsg{id: p.id, key: p.key, run: run, err: err}
	}
}

// applyCancel logs the daemon's answer: the run's final state, or its
// refusal (e.g. a run already committing is too late to cancel).
func (m *Model) applyCancel(msg cancelMsg) tea.Cmd {
	if msg.err != nil {
		m.logf("cannot cancel run %s (%s): %v", msg.id, msg.key, msg.err)
		return m.loadStatus()
	}
	state := msg.run.State
	if state == "" {
		state = admin.RunCancelled
	}
	m.logf("run %s (%s): %s by the operator", msg.id, msg.key, state)
	// Recorded here so the next refresh does not log the same change again.
	m.runStates[msg.id] = state
	return m.loadStatus()
}
