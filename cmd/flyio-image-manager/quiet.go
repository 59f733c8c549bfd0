package main

import (
	"io"
	"log"
	"log/slog"
	"os"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// quietTerminal keeps everything but a full-screen program off the
// terminal: Go's log, slog, logrus (which containerd's log.L writes through) and anything written
// to file descriptor 2 go to logPath, or nowhere when it is empty. The
// returned function puts them back; call it before printing an error.
func quietTerminal(logPath string) (restore func(), err error) {
	sink, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if logPath != "" {
		sink, err = os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	}
	if err != nil {
		return nil, err
	}
	saved, err := unix.Dup(2)
	if err != nil {
		sink.Close()
		return nil, err
	}
	if err := unix.Dup2(int(sink.Fd()), 2); err != nil {
		unix.Close(saved)
		sink.Close()
		return nil, err
	}
	stdLog, slogDefault, logrusOut := log.Writer(), slog.Default(), logrus.StandardLogger().Out
	var w io.Writer = sink
	log.SetOutput(w)
	slog.SetDefault(slog.New(slog.NewTextHandler(w, nil)))
	logrus.SetOutput(w)
	return func() {
		unix.Dup2(saved, 2)
		unix.Close(saved)
		log.SetOutput(stdLog)
		slog.SetDefault(slogDefault)
		logrus.SetOutput(logrusOut)
		sink.Close()
	}, nil
}
