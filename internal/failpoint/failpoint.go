// Package failpoint kills the process at named points so that tests can
// prove crash safety: a daemon started with FLYIO_FAILPOINT=<name> dies the
// moment it reaches that point, as if it had been sent SIGKILL. No deferred
// function runs, no file is closed, no transaction is finished: exactly what
// a power cut or an OOM kill leaves behind.
//
// FLYIO_FAILPOINT holds one name or a comma-separated list. It is read once
// at start-up; when it is unset, Hit is a nil-map lookup and nothing else.
// The names are listed, with what each point leaves behind, in points.go.
package failpoint

import (
	"fmt"
	"os"
	"strings"
	"syscall"
)

// EnvVar names the environment variable that arms failpoints.
const EnvVar = "FLYIO_FAILPOINT"

// armed holds the names from EnvVar; nil when none are armed.
var armed = parse(os.Getenv(EnvVar))

func parse(v string) map[string]bool {
	var m map[string]bool
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if m == nil {
			m = map[string]bool{}
		}
		m[name] = true
		if !Known(name) {
			// Not fatal: an old test against a newer binary should still
			// run, but a typo must not pass silently.
			fmt.Fprintf(os.Stderr, "%s: unknown failpoint %q (known: see internal/failpoint/points.go)\n", EnvVar, name)
		}
	}
	return m
}

// Hit kills the process with SIGKILL when name is armed.
func Hit(name string) {
	if armed == nil || !armed[name] {
		return
	}
	fire(name)
}

// fire writes one line naming the point (tests look for it in the log) and
// kills the process. stderr is unbuffered, so the line is out before the
// signal.
func fire(name string) {
	fmt.Fprintf(os.Stderr, "failpoint %s hit: killing process %d with SIGKILL\n", name, os.Getpid())
	syscall.Kill(os.Getpid(), syscall.SIGKILL)
	// SIGKILL cannot be caught; should delivery ever lag, never run on.
	os.Exit(137)
}
