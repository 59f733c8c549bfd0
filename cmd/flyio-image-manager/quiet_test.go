package main

import (
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clog "github.com/containerd/log"
	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// TestQuietTerminal: while the dashboard runs, log lines of every logger
// and raw writes to fd 2 go to --log-file, none to the terminal; after it
// they reach stderr again.
func TestQuietTerminal(t *testing.T) {
	// Stand a pipe in for the terminal on fd 2.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	orig, err := unix.Dup(2)
	if err != nil {
		t.Fatal(err)
	}
	unix.Dup2(int(w.Fd()), 2)
	log.SetOutput(os.Stderr)
	logrus.SetOutput(os.Stderr)
	defer func() {
		unix.Dup2(orig, 2)
		unix.Close(orig)
		log.SetOutput(os.Stderr)
		logrus.SetOutput(os.Stderr)
	}()

	logFile := filepath.Join(t.TempDir(), "dashboard.log")
	restore, err := quietTerminal(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log.Print("std log line")
	slog.Info("slog line")
	logrus.Info("logrus line")
	clog.L.Info("containerd log line")
	fmt.Fprintln(os.Stderr, "raw stderr line")
	restore()
	fmt.Fprintln(os.Stderr, "after")
	unix.Dup2(orig, 2) // the pipe's last writers go, so ReadAll ends
	w.Close()
	term, _ := io.ReadAll(r)
	if string(term) != "after\n" {
		t.Errorf("the terminal got %q, want only what came after", term)
	}
	logged, _ := os.ReadFile(logFile)
	for _, want := range []string{"std log line", "slog line", "logrus line", "containerd log line", "raw stderr line"} {
		if !strings.Contains(string(logged), want) {
			t.Errorf("--log-file lacks %q:\n%s", want, logged)
		}
	}
}
