// Package logring keeps the daemon's most recent log lines in memory, so
// a diagnostics bundle has the log that led up to a problem even on hosts
// where stderr goes nowhere a bug reporter can reach (no journald, a
// container's discarded output).
package logring

import (
	"strings"
	"sync"

	"github.com/sirupsen/logrus"
)

// DefaultSize is how many lines the daemon keeps: about the last few
// minutes of a busy daemon at info level, a few hundred KiB.
const DefaultSize = 2000

// Ring is a fixed-size buffer of formatted log lines and a logrus hook
// that fills it.
type Ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
	// formatter is ours, not the logger's: the ring always holds plain
	// text with full timestamps whatever log_format the daemon writes.
	formatter logrus.Formatter
}

// New returns an empty ring of size lines (DefaultSize when size <= 0).
func New(size int) *Ring {
	if size <= 0 {
		size = DefaultSize
	}
	return &Ring{
		lines:     make([]string, size),
		formatter: &logrus.TextFormatter{DisableColors: true, FullTimestamp: true, TimestampFormat: "2006-01-02T15:04:05.000Z07:00"},
	}
}

// Levels implements logrus.Hook: every level the logger lets through.
func (r *Ring) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook.
func (r *Ring) Fire(e *logrus.Entry) error {
	b, err := r.formatter.Format(e)
	if err != nil {
		return err
	}
	r.Add(strings.TrimRight(string(b), "\n"))
	return nil
}

// Add appends one line, dropping the oldest when full.
func (r *Ring) Add(line string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = line
	r.next++
	if r.next == len(r.lines) {
		r.next, r.full = 0, true
	}
}

// Lines returns the kept lines, oldest first.
func (r *Ring) Lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.full {
		return append([]string(nil), r.lines[:r.next]...)
	}
	out := make([]string, 0, len(r.lines))
	out = append(out, r.lines[r.next:]...)
	return append(out, r.lines[:r.next]...)
}

var (
	installMu sync.Mutex
	installed *Ring
)

// Install adds a ring of DefaultSize lines to logger (containerd/log's
// log.L.Logger in the daemon) once per process and returns it; later
// calls return the same ring.
func Install(logger *logrus.Logger) *Ring {
	installMu.Lock()
	defer installMu.Unlock()
	if installed == nil {
		installed = New(DefaultSize)
		logger.AddHook(installed)
	}
	return installed
}

// Installed returns the ring Install added, or nil when none was.
func Installed() *Ring {
	installMu.Lock()
	defer installMu.Unlock()
	return installed
}
