package dashboard

import (
	"fmt"
	"time"
)

// activity is the bounded activity log: run state changes, errors,
// refreshes and what keys did, newest last. Old entries fall off the front
// so a dashboard left open for days keeps a fixed footprint.
type activity struct {
	max     int
	entries []logEntry
}

type logEntry struct {
	at   time.Time
	text string
}

func (a *activity) add(at time.Time, format string, args ...any) {
	a.entries = append(a.entries, logEntry{at: at, text: fmt.Sprintf(format, args...)})
	if over := len(a.entries) - a.max; over > 0 {
		// Copy down rather than reslice so the backing array does not grow
		// without bound.
		n := copy(a.entries, a.entries[over:])
		a.entries = a.entries[:n]
	}
}

// lines returns the entries formatted, oldest first.
func (a *activity) lines() []string {
	out := make([]string, len(a.entries))
	for i, e := range a.entries {
		out[i] = e.at.Format("15:04:05") + "  " + e.text
	}
	return out
}
